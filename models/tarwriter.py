"""Tar members as plain bytes: the same archive `webdataset.TarWriter` writes, without its per-member cost.

Why: `tarfile` builds a `TarInfo`, a header and a `BytesIO` per member (~25 µs), and it must run on
one thread in member order. A shard of 32×32 samples is mostly such small members, so that was a
large share of the engine's per-sample CPU time. Here a member's header depends only on its name and
size, so the encode threads build whole samples (`sample_bytes`) in parallel and the writer thread
only writes and hashes them; `archive_end` closes the archive.

The header is `tarfile`'s own (PAX format, as `tarfile.open(mode="w|")` writes for short ASCII
names): a template made once by `TarInfo.tobuf` with fixed mode, owner and mtime, in which only the
name, size and checksum fields are patched. Tests check the bytes equal `webdataset.TarWriter`'s.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: archives are padded to whole records, like tar -b20
_NAME = slice(0, 100)
_SIZE = slice(124, 136)
_CHKSUM = slice(148, 156)


class MemberHeaders:
    """Header blocks for regular-file members with a fixed mode, owner and mtime."""

    def __init__(self, *, mtime: int, user: str, group: str, mode: int = 0o444) -> None:
        info = tarfile.TarInfo("")
        info.size, info.mtime, info.mode, info.uname, info.gname = 0, mtime, mode, user, group
        template = bytearray(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        assert len(template) == BLOCK, "a short name must not need a PAX extended header"
        template[_NAME] = bytes(100)
        template[_SIZE] = bytes(12)
        template[_CHKSUM] = b" " * 8
        self._head = bytes(template[:_SIZE.start])  # name (zeroed) + mode, uid, gid
        self._mid = bytes(template[_SIZE.stop:_CHKSUM.start])  # mtime
        self._tail = bytes(template[_CHKSUM.stop:])  # type, magic, owner names, …
        self._base_sum = sum(template)  # checksum of the template with name and size all NUL

    def header(self, name: bytes, size: int) -> bytes:
        """The 512-byte header of member `name` (ASCII, ≤ 100 bytes) holding `size` bytes."""
        if len(name) > 100 or not name.isascii():
            raise ValueError(f"tar member name {name!r} must be ASCII and at most 100 bytes")
        size_field = b"%011o\0" % size
        chksum = self._base_sum + sum(name) + sum(size_field)
        return b"".join((name, bytes(100 - len(name)), self._head[100:], size_field, self._mid,
                         b"%06o\0 " % chksum, self._tail))

    def sample_bytes(self, key: str, members: Iterable[tuple[str, bytes]]) -> bytes:
        """One sample's members (`key.ext`), in the given order, each header + data + NUL padding."""
        parts: list[bytes] = []
        prefix = key.encode("ascii") + b"."
        for ext, data in members:
            parts.append(self.header(prefix + ext.encode("ascii"), len(data)))
            parts.append(data)
            pad = -len(data) % BLOCK
            if pad:
                parts.append(bytes(pad))
        return b"".join(parts)


def archive_end(written: int) -> bytes:
    """The end of an archive of `written` bytes: two zero blocks, then zeros up to a whole record."""
    end = 2 * BLOCK
    return bytes(end + (-(written + end) % RECORD))
