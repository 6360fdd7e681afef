"""The shipped bundles as the API sees them, and an in-process predictor that micro-batches.

Why micro-batching: a /predict call usually carries one image, and ONNX Runtime spends about as long
on a batch of 32 tiny images as on one. Requests queue for a single inference thread; whatever
arrived while the previous batch ran becomes the next batch. An idle server so runs a lone request
at once (no waiting window), and a loaded one runs large batches — throughput rises with
concurrency instead of the event loop and the inference thread fighting over the cores.

Why few inference threads: the event loop (HTTP parsing, JSON, image decoding) needs cores too. ONNX
Runtime's default intra-op pool takes every core and spin-waits between runs, which starved the loop
(at 32 clients throughput fell below that at 8). The predictor gets half the cores (at least one).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
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
LIST_TTL_S = 2.0  # seconds a scan of the bundles folder is reused (new bundles appear within this)
PREDICT_THREADS = max(1, (os.cpu_count() or 2) // 2)  # ONNX Runtime intra-op threads of the predictor


@dataclass
class _Pending:
    images: np.ndarray  # [n, C, S, S]
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    """Runs `submit`ted images in batches on one thread: each batch is what queued during the last one.

    `window_s` > 0 additionally holds a batch's first request that long for company (useful where
    one inference costs far more than the wait, e.g. a GPU); the default 0 never waits.
    """

    def __init__(self, fn: BatchFn, *, max_batch: int = 64, window_s: float = 0.0) -> None:
        self.fn = fn
        self.max_batch = max_batch  # images per inference call (a larger single request runs alone)
        self.window_s = window_s  # seconds the first request of a batch waits for company
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """[n, C, S, S] → [n, K], batched with whatever else is waiting."""
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
                if queue.empty():
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout)
                    except TimeoutError:
                        break
                else:
                    item = queue.get_nowait()
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


def _scan(bundles_dir: Path) -> list[BundleInfo]:
    """The bundles under `bundles_dir`, read from their manifests."""
    out: list[BundleInfo] = []
    if not bundles_dir.is_dir():
        return out
    for path in sorted(bundles_dir.iterdir()):
        manifest = path / "manifest.json"
        if not manifest.is_file():
            continue
        raw = manifest.read_bytes()
        try:
            out.append(BundleInfo(path.name, path, hashlib.sha256(raw).hexdigest(), json.loads(raw)))
        except json.JSONDecodeError:
            log.warning("skipping bundle %s: manifest.json is not JSON", path.name)
    return out


class BundleCatalog:
    """The bundles under `bundles_dir`: listed from manifests, loaded once on first use, one batcher each."""

    def __init__(self, settings: Settings, *, window_s: float = 0.0, max_batch: int = 64) -> None:
        self.settings = settings
        self.bundles_dir = settings.bundles_dir
        self.window_s = window_s  # seconds a request waits for others to share its batch
        self.max_batch = max_batch  # images per inference call
        self._predictors: dict[str, tuple[Any, MicroBatcher]] = {}  # name → (bundle, batcher)
        self._listed: tuple[float, list[BundleInfo]] | None = None  # (monotonic time, scan)

    def list(self) -> list[BundleInfo]:
        """Every folder with a readable manifest.json, sorted by name (rescanned every LIST_TTL_S)."""
        listed = self._listed
        if listed is None or time.monotonic() - listed[0] >= LIST_TTL_S:
            listed = self._listed = (time.monotonic(), _scan(self.bundles_dir))
        return listed[1]

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
        """The loaded `models.runtime.Bundle`, shared with the worker code's per-process cache.

        Loaded with PREDICT_THREADS intra-op threads, so inference leaves the event loop its cores.
        """
        return get_bundle(self.settings, self.info(name).name, threads=PREDICT_THREADS)

    def loaded(self, name: str) -> tuple[Any, MicroBatcher] | None:
        """(bundle, batcher) if `name` is loaded already: a dict lookup, fine on the event loop."""
        return self._predictors.get(name)

    def predictor(self, name: str) -> tuple[Any, MicroBatcher]:
        """(bundle, batcher) for `name`, loading it on first use (blocking: call off the event loop)."""
        if name not in self._predictors:
            bundle = self.load(name)

            def predict_labels(images: np.ndarray) -> np.ndarray:
                import torch

                _, labels = bundle.predict(torch.from_numpy(images))
                return labels.detach().cpu().numpy().astype(np.float32)  # [B, dim]

            batcher = MicroBatcher(predict_labels, max_batch=self.max_batch, window_s=self.window_s)
            self._predictors[name] = (bundle, batcher)
        return self._predictors[name]

    def batcher(self, name: str) -> MicroBatcher:
        return self.predictor(name)[1]

    def close(self) -> None:
        for _, b in self._predictors.values():
            b.close()
