"""A disk cache for generated tensors (e.g. the faces-m real pools), so they are rendered once per machine.

Entries are plain `torch.save` files of a dict of tensors, loaded with `weights_only=True` (no code is
ever executed to load data) and written atomically (temporary file, then rename) so a crash or two
processes racing never leave a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CACHE_ENV = "LABELFORGE_CACHE_DIR"


def cache_dir() -> Path:
    """`$LABELFORGE_CACHE_DIR`, or `~/.cache/labelforge` on a laptop."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "labelforge")


def cache_key(**parts: object) -> str:
    """A short stable hash of JSON-able key parts (sizes, seeds, counts, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def file_fingerprint(*paths: str | Path) -> str:
    """sha256 over the bytes of source files: a renderer 'version' that changes whenever its code does."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def load_or_build(
    kind: str, key: str, build: Callable[[], dict[str, torch.Tensor]], root: Path | None = None
) -> dict[str, torch.Tensor]:
    """The cached tensors for (`kind`, `key`), building and saving them on a miss."""
    path = (root or cache_dir()) / kind / f"{key}.pt"
    if path.exists():
        log.info("cache hit %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(tensors, tmp)
    tmp.replace(path)
    log.info("cached %s", path)
    return tensors
