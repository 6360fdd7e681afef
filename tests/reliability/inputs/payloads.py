"""Hostile request bodies built in memory: broken and oversized images, archive bombs, unsafe member names.

Each builder makes the smallest file that still carries the attack (a PNG header that claims billions of
pixels, a zip whose one member inflates 1000×), so the catalogue stays fast.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib

import numpy as np
from PIL import Image


def png(side: int = 32, seed: int = 0, mode: str = "RGB") -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(side: int = 64, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def truncated(data: bytes) -> bytes:
    """The first half of a file: headers intact, pixel data cut off."""
    return data[: len(data) // 2]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header claims width×height 8-bit gray pixels (10 gigapixels by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def png_100_megapixels() -> bytes:
    """A real, fully decodable 10000×10000 black-and-white PNG (~15 kB on the wire)."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG")
    return buf.getvalue()


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], *, symlink: str | None = None, mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return buf.getvalue()


def zip_bomb() -> bytes:
    """One 64 MiB member of zeros, deflated to ~64 kB: ~1000× expansion."""
    return make_zip({"ok.png": png(), "bomb.png": b"\0" * (64 << 20)})


def tar_gz_bomb() -> bytes:
    """The same bomb as a gzipped tar (its member sizes are only known while inflating)."""
    return make_tar({"ok.png": png(), "bomb.png": b"\0" * (64 << 20)}, mode="w:gz")


def zip_lying_sizes() -> bytes:
    """A zip whose directory claims a 10-byte member that really inflates to 64 MiB."""
    return _patch_zip(make_zip({"liar.png": b"\0" * (64 << 20)}), 22, 24, struct.pack("<I", 10))


def _patch_zip(data: bytes, local_offset: int, central_offset: int, value: bytes) -> bytes:
    """Overwrite one field of the first member in both its local header and its central directory entry."""
    out = bytearray(data)
    out[local_offset : local_offset + len(value)] = value
    central = out.rfind(b"PK\x01\x02")
    out[central + central_offset : central + central_offset + len(value)] = value
    return bytes(out)


def zip_encrypted_flag() -> bytes:
    """A zip whose member says it is encrypted (general-purpose flag bit 0)."""
    return _patch_zip(make_zip({"secret.png": png()}), 6, 8, struct.pack("<H", 0x1))


def zip_unknown_compression() -> bytes:
    """A zip whose member claims compression method 99 (AES), which nothing here can inflate."""
    return _patch_zip(make_zip({"aes.png": png()}), 8, 10, struct.pack("<H", 99))


def tar_gz_truncated() -> bytes:
    """A gzipped tar cut in half: the first members read, then the stream ends."""
    members = {f"img{i}.png": png(seed=i) for i in range(8)}
    return truncated(make_tar(members, mode="w:gz"))
