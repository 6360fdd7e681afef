"""Per-process resources a worker (or the API) reuses: storage client, loaded bundles, the lookahead.

A bundle is loaded once per process (hashing its files and building an ONNX session costs far more
than one shard of a small job), on CUDA when the machine has one. Bundle names are checked before
they touch the file system, so a spec cannot point outside `bundles_dir`. The engine's `Lookahead`
outlives a task, so one shard task can begin the next task's work — the next shard's first batch, or
the card its job's finalize writes (see `models.engine.Lookahead`).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from worker.settings import Settings
from worker.storage import LocalStorage, S3Storage, Storage

log = logging.getLogger(__name__)

BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

_lock = threading.Lock()
_bundles: dict[tuple[str, str, str, int | None], Any] = {}
_storages: dict[tuple[object, ...], Storage] = {}
_lookahead: Any = None


class UnknownBundleError(ValueError):
    """The named bundle does not exist (field `bundle`)."""

    field = "bundle"


def resolve_device(setting: str) -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu'; anything else as given."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bundle_path(settings: Settings, name: str) -> Path:
    """The folder of bundle `name`; raises `UnknownBundleError` if the name is unsafe or absent."""
    if not BUNDLE_NAME.match(name) or ".." in name:
        raise UnknownBundleError(f"bundle: {name!r} is not a valid bundle name")
    path = settings.bundles_dir / name
    if not (path / "manifest.json").is_file():
        raise UnknownBundleError(f"bundle: no bundle named {name!r} in {settings.bundles_dir}")
    return path


def get_bundle(settings: Settings, name: str, threads: int | None = None) -> Any:
    """The loaded `models.runtime.Bundle` for `name`, loaded once per process, device and thread cap.

    `threads` caps ONNX Runtime's intra-op threads (None: all cores, what a worker wants; the API's
    predictor asks for fewer so HTTP keeps a core).
    """
    from models.runtime import Bundle

    path = bundle_path(settings, name)
    device = resolve_device(settings.device)
    key = (str(path.resolve()), settings.bundle_engine, device, threads)
    with _lock:
        if key not in _bundles:
            _bundles[key] = Bundle.load(path, engine=settings.bundle_engine, device=device, threads=threads)
        return _bundles[key]


def warm_bundles(settings: Settings) -> None:
    """Import the engine and load every bundle under `bundles_dir` now, so the first shard a fresh
    worker process runs does not pay for them (importing ONNX Runtime and the engine, hashing and
    loading a bundle: seconds on a small machine, counted in that job's time otherwise).

    Meant for a background thread at process start; a task that needs a bundle meanwhile waits on the
    same lock and gets the loaded one. A bundle that fails to load is logged and left to the task,
    which reports the error against its job.
    """
    import models.engine  # noqa: F401  (the import itself is the warm-up)

    names = sorted(p.name for p in settings.bundles_dir.iterdir()) if settings.bundles_dir.is_dir() else []
    for name in names:
        try:
            get_bundle(settings, name)
        except UnknownBundleError:
            continue  # not a bundle folder
        except Exception:
            log.warning("could not preload bundle %s", name, exc_info=True)


def get_storage(settings: Settings) -> Storage:
    """Local storage under data_dir/storage, or the S3 bucket when `s3_endpoint` is set."""
    key: tuple[object, ...] = (settings.s3_endpoint, settings.s3_bucket, str(settings.storage_root))
    with _lock:
        if key not in _storages:
            if settings.s3_endpoint:
                _storages[key] = S3Storage(
                    settings.s3_bucket,
                    endpoint=settings.s3_endpoint,
                    access_key=settings.s3_access_key or None,
                    secret_key=settings.s3_secret_key.get_secret_value() or None,
                    secure=settings.s3_secure,
                    region=settings.s3_region,
                )
            else:
                _storages[key] = LocalStorage(settings.storage_root)
        return _storages[key]


def get_lookahead() -> Any:
    """This process's `models.engine.Lookahead` (one per process: it holds one piece of work at most)."""
    global _lookahead
    from models.engine import Lookahead

    with _lock:
        if _lookahead is None:
            _lookahead = Lookahead()
        return _lookahead
