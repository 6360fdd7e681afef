"""Labeling engine: real images in, WebDataset shards of image + predicted labels out.

Inputs are either a tar/zip upload already in storage or a list of storage keys. Uploads are checked
*before* a job exists (`inspect_archive`): not an archive, unsafe member names (`..`, absolute paths,
NUL, backslashes), links/devices, zip bombs, non-images, truncated images or too many pixels all raise
`LabelingInputError` naming the member, so the API answers 4xx and writes nothing.

A shard covers images [shard · shard_size, (shard + 1) · shard_size) of the job's ordered image list.
Each sample is keyed `{index:09d}` and holds the original bytes (`.jpg`/`.png`/…), `.labels.npy`
(float32 standardized vector) and `.json` (named fields in human units + index, source name, bundle
sha). Shards are written to a temp file with a fixed tar mtime (identical bytes on a retry) and put
atomically, so a partial shard is never visible.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from webdataset import TarWriter

IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".bmp": "bmp", ".tif": "tiff",
                    ".tiff": "tiff", ".gif": "gif"}
IGNORED_PREFIXES = ("__MACOSX/",)  # metadata folders macOS adds to zips
TAR_MTIME = 0.0  # fixed member mtime: a re-run writes identical bytes
PREDICT_BATCH = 64  # images per predictor call
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # job names become file names


class LabelingInputError(ValueError):
    """An upload or image the labeling engine refuses; `field` names the member (or "upload")."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class BlobStorage(Protocol):
    """The part of `worker.storage.Storage` this module needs."""

    def get_bytes(self, key: str) -> bytes: ...
    def put_file(self, key: str, path: Path, content_type: str = ...) -> None: ...


@dataclass(frozen=True)
class LabelingShard:
    """What a stored labeling shard is: its key, sample count and content hash."""

    shard: int
    key: str
    samples: int
    sha256: str
    size_bytes: int


# --- archive inspection (runs in the API before a job exists) ---


def check_member_name(name: str) -> None:
    """Refuse names that could escape the archive or hide: `..`, absolute, NUL, backslash, drive letters."""
    if not name or "\x00" in name:
        raise LabelingInputError(repr(name), "empty name or NUL byte in member name")
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise LabelingInputError(name, "absolute path or backslash in member name")
    if ".." in PurePosixPath(name).parts:
        raise LabelingInputError(name, "path traversal ('..') in member name")


def _image_ext(name: str) -> str | None:
    return IMAGE_EXTENSIONS.get(PurePosixPath(name).suffix.lower())


def archive_format(data: bytes) -> str:
    """'zip' or 'tar' (plain or compressed); anything else is refused."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        return "zip"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            tf.next()
        return "tar"
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LabelingInputError("upload", "not a tar or zip archive") from exc


def _list_members(data: bytes, max_expanded: int) -> list[str]:
    """Names of regular-file members, in archive order, after the safety checks."""
    names: list[str] = []
    expanded = 0
    fmt = archive_format(data)
    with _archive_errors("upload"):
        if fmt == "zip":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    check_member_name(info.filename)
                    if info.is_dir() or info.filename.startswith(IGNORED_PREFIXES):
                        continue
                    if info.flag_bits & 0x1:
                        raise LabelingInputError(info.filename, "encrypted members are not supported")
                    expanded += info.file_size
                    names.append(info.filename)
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                for member in tf:
                    check_member_name(member.name)
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise LabelingInputError(member.name, "links and special files are not allowed")
                    expanded += member.size
                    names.append(member.name)
    if expanded > max_expanded:
        raise LabelingInputError("upload", f"expands to {expanded} bytes, more than the {max_expanded} allowed")
    return names


@contextmanager
def _archive_errors(field: str) -> Iterator[None]:
    """A corrupt archive (bad CRC, truncated stream, sizes that lie, unknown compression) is the
    uploader's error: turn what zipfile/tarfile/zlib raise into `LabelingInputError` naming `field`."""
    try:
        yield
    except LabelingInputError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, OSError,
            NotImplementedError, RuntimeError, ValueError) as exc:
        raise LabelingInputError(field, f"corrupt archive data ({exc})") from exc


def read_member(data: bytes, name: str, max_bytes: int) -> bytes:
    """Bytes of one archive member, reading at most `max_bytes` (a lying zip header cannot inflate more)."""
    with _archive_errors(name):
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as zf, zf.open(name) as fh:
                raw = fh.read(max_bytes + 1)
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                member = tf.extractfile(name)
                if member is None:
                    raise LabelingInputError(name, "not a regular file")
                raw = member.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise LabelingInputError(name, f"larger than {max_bytes} bytes")
    return raw


def open_image(raw: bytes, name: str, max_pixels: int) -> Image.Image:
    """Decode fully (so truncation shows now), refusing more than `max_pixels` before decoding."""
    try:
        img = Image.open(io.BytesIO(raw))
        if img.width * img.height > max_pixels:
            raise LabelingInputError(name, f"{img.width}x{img.height} is more than {max_pixels} pixels")
        img.load()
    except LabelingInputError:
        raise
    except UnidentifiedImageError as exc:  # its message is the repr of our BytesIO: say what it means
        raise LabelingInputError(name, "not a readable image (unknown or unsupported format)") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise LabelingInputError(name, f"not a readable image ({exc})") from exc
    return img


def inspect_archive(data: bytes, *, max_images: int, max_pixels: int, max_expanded_bytes: int) -> list[str]:
    """Image member names of an upload, in archive order; raises `LabelingInputError` on anything unsafe.

    Every image is decoded once here so that a truncated or non-image member is a 4xx for the
    uploader, not a failed job later.
    """
    names = _list_members(data, max_expanded_bytes)
    if not names:
        raise LabelingInputError("upload", "archive holds no files")
    if len(names) > max_images:
        raise LabelingInputError("upload", f"{len(names)} images, more than the {max_images} allowed")
    for name in names:
        if _image_ext(name) is None:
            raise LabelingInputError(name, "not an image (expected png, jpg, webp, bmp, tiff or gif)")
        open_image(read_member(data, name, max_expanded_bytes), name, max_pixels)
    return names


# --- the per-shard engine (runs in the worker) ---


def to_tensor(img: Image.Image, channels: int, size: int) -> torch.Tensor:
    """PIL image → [C, S, S] float in [0, 1] at the bundle's size and channel count."""
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.float32) / 255.0  # [S, S] or [S, S, C]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # [C, S, S]


def shard_range(n_images: int, shard_size: int, shard: int) -> range:
    return range(shard * shard_size, min(n_images, (shard + 1) * shard_size))


def shard_key(prefix: str, name: str, shard: int) -> str:
    return f"{prefix}{name}-{shard:06d}.tar"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_inputs(spec: dict[str, Any], storage: BlobStorage, indices: Sequence[int], max_bytes: int) -> list[bytes]:
    """Raw bytes of images `indices` of a labeling spec, from its archive or its storage keys."""
    members: list[str] = spec["members"]
    if spec["source"] == "upload":
        archive = storage.get_bytes(spec["upload_key"])
        return [read_member(archive, members[i], max_bytes) for i in indices]
    return [storage.get_bytes(members[i]) for i in indices]


def label_shard(
    spec: dict[str, Any],
    bundle: Any,
    storage: BlobStorage,
    prefix: str,
    shard: int,
    *,
    max_pixels: int,
    max_bytes: int,
    progress: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> LabelingShard | None:
    """Label one shard's images with `bundle.predict` and store the shard; None if cancelled midway."""
    members: list[str] = spec["members"]
    indices = list(shard_range(len(members), int(spec["shard_size"]), shard))
    raws = load_inputs(spec, storage, indices, max_bytes)
    layout = bundle.layout
    key = shard_key(prefix, spec["name"], shard)
    with tempfile.TemporaryDirectory(prefix="labelforge-") as tmp:
        path = Path(tmp) / "shard.tar"
        with path.open("wb") as fh, TarWriter(fh, mtime=TAR_MTIME, encoder=False) as writer:
            for start in range(0, len(indices), PREDICT_BATCH):
                if cancelled is not None and cancelled():
                    return None
                batch_idx = indices[start : start + PREDICT_BATCH]
                batch_raw = raws[start : start + PREDICT_BATCH]
                images = torch.stack(
                    [to_tensor(open_image(r, members[i], max_pixels), bundle.channels, bundle.image_size)
                     for i, r in zip(batch_idx, batch_raw, strict=True)]
                )  # [B, C, S, S]
                with torch.inference_mode():
                    _z, labels = bundle.predict(images)
                labels_np = labels.detach().cpu().numpy().astype(np.float32)  # [B, dim]
                named = layout.to_named(labels_np)
                for i, raw, vec, fields in zip(batch_idx, batch_raw, labels_np, named, strict=True):
                    npy = io.BytesIO()
                    np.save(npy, vec)
                    meta = {**fields, "index": i, "source": os.path.basename(members[i]),
                            "bundle": bundle.name, "bundle_sha": bundle.sha}
                    writer.write({
                        "__key__": f"{i:09d}",
                        _image_ext(members[i]) or "bin": raw,
                        "labels.npy": npy.getvalue(),
                        "json": json.dumps(meta, sort_keys=True).encode(),
                    })
                if progress is not None:
                    progress(len(batch_idx))
        if cancelled is not None and cancelled():
            return None
        digest, size = _sha256(path), path.stat().st_size
        storage.put_file(key, path, content_type="application/x-tar")
    return LabelingShard(shard=shard, key=key, samples=len(indices), sha256=digest, size_bytes=size)


def write_manifest(storage: Any, prefix: str, spec: dict[str, Any], bundle_sha: str,
                   shards: Sequence[LabelingShard]) -> dict[str, Any]:
    """The labeling job's manifest.json, written last: its presence means the job is complete."""
    manifest = {
        "kind": "labeling",
        "name": spec["name"],
        "bundle": spec["bundle"],
        "bundle_sha": bundle_sha,
        "count": sum(s.samples for s in shards),
        "source": {"upload": spec.get("upload_key")} if spec["source"] == "upload" else {"keys": len(spec["members"])},
        "shards": [{"shard": s.shard, "file": PurePosixPath(s.key).name, "samples": s.samples,
                    "sha256": s.sha256, "bytes": s.size_bytes} for s in shards],
    }
    storage.put_bytes(f"{prefix}manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode(),
                      content_type="application/json")
    return manifest
