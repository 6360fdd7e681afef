"""The shipped bundles as the API sees them, and an in-process predictor that micro-batches.

Why micro-batching: a /predict call usually carries one image, and ONNX Runtime spends about as long
on a batch of 32 tiny images as on one. Concurrent calls therefore wait up to `window_s` (≈ 2 ms) in
an asyncio queue and run as one batch on a single inference thread, which raises throughput under
load without adding more than the window to an idle request's latency.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, status

from service.api.metrics import PREDICT_BATCH
from worker.resources import get_bundle
from worker.settings import Settings

log = logging.getLogger(__name__)

BatchFn = Callable[[np.ndarray], np.ndarray]  # [B, C, S, S] float32 → [B, K] float32


@dataclass
class _Pending:
    images: np.ndarray  # [n, C, S, S]
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    """Collects concurrent `submit` calls for `window_s`, runs them as one batch, splits the result."""

    def __init__(self, fn: BatchFn, *, max_batch: int = 64, window_s: float = 0.002) -> None:
        self.fn = fn
        self.max_batch = max_batch  # images per inference call (a larger single request runs alone)
        self.window_s = window_s  # seconds the first request of a batch waits for company
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """[n, C, S, S] → [n, K], batched with whatever else arrives within the window."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue))
        assert self._queue is not None
        pending = _Pending(images, loop.create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            size = len(batch[0].images)
            deadline = loop.time() + self.window_s
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    break
                batch.append(item)
                size += len(item.images)
            await self._execute(loop, batch)

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        images = np.concatenate([p.images for p in batch])  # [B, C, S, S]
        PREDICT_BATCH.observe(len(images))
        try:
            out = await loop.run_in_executor(self._executor, self.fn, images)  # [B, K]
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        start = 0
        for p in batch:
            if not p.future.done():  # the client may have gone away
                p.future.set_result(out[start:start + len(p.images)])
            start += len(p.images)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run other bundle work (e.g. the simulator render) on the same inference thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class BundleInfo:
    """What `GET /models` shows about one bundle, read from its manifest without loading networks."""

    name: str
    path: Path
    sha: str  # sha256 of manifest.json: the bundle's identity
    manifest: dict[str, Any] = field(repr=False)


class BundleCatalog:
    """The bundles under `bundles_dir`: listed from manifests, loaded once on first use, one batcher each."""

    def __init__(self, settings: Settings, *, window_s: float = 0.002, max_batch: int = 64) -> None:
        self.settings = settings
        self.bundles_dir = settings.bundles_dir
        self.window_s = window_s  # seconds a request waits for others to share its batch
        self.max_batch = max_batch  # images per inference call
        self._batchers: dict[str, MicroBatcher] = {}

    def list(self) -> list[BundleInfo]:
        """Every folder with a readable manifest.json, sorted by name (rescanned on each call)."""
        out: list[BundleInfo] = []
        if not self.bundles_dir.is_dir():
            return out
        for path in sorted(self.bundles_dir.iterdir()):
            manifest = path / "manifest.json"
            if not manifest.is_file():
                continue
            raw = manifest.read_bytes()
            try:
                out.append(BundleInfo(path.name, path, hashlib.sha256(raw).hexdigest(), json.loads(raw)))
            except json.JSONDecodeError:
                log.warning("skipping bundle %s: manifest.json is not JSON", path.name)
        return out

    def info(self, name: str, field: str = "bundle") -> BundleInfo:
        """The bundle called `name`, or a 422 naming `field` and the bundles that exist."""
        known = {b.name: b for b in self.list()}
        if name not in known:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"{field}: unknown bundle {name!r}; available: {', '.join(known) or 'none'}")
        return known[name]

    def default_name(self, layout: str = "faces") -> str:
        """The first bundle with label layout `layout` (else the first of all): /predict's default."""
        bundles = self.list()
        for b in bundles:
            if b.manifest.get("layout", {}).get("name") == layout:
                return b.name
        if not bundles:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "bundle: no bundles are installed")
        return bundles[0].name

    def load(self, name: str) -> Any:
        """The loaded `models.runtime.Bundle`, shared with the worker code's per-process cache."""
        return get_bundle(self.settings, self.info(name).name)

    def batcher(self, name: str) -> MicroBatcher:
        if name not in self._batchers:
            bundle = self.load(name)

            def predict_labels(images: np.ndarray) -> np.ndarray:
                import torch

                _, labels = bundle.predict(torch.from_numpy(images))
                return labels.detach().cpu().numpy().astype(np.float32)  # [B, dim]

            self._batchers[name] = MicroBatcher(predict_labels, max_batch=self.max_batch, window_s=self.window_s)
        return self._batchers[name]

    def close(self) -> None:
        for b in self._batchers.values():
            b.close()
