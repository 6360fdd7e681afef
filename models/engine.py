"""The generation engine: a `DatasetSpec` and a `Bundle` in, WebDataset tar shards in storage out.

Pipeline (stages overlapped through a bounded queue, so the generator never waits on I/O):

    main thread   labels + z (counter-based, on the device) → G (large batches) → uint8 [→ GPU JPEG]
    encode pool   per-sample members: image bytes (PIL releases the GIL), .labels.npy, .json, .cls …
    writer thread tar members in index order → temp file → sha256 → `storage.put_file` (atomic)

Sample i depends only on (seed, i) (see `models.sampling`), batches may span shards, and the tar
writer uses a fixed mtime and fixed owner, so a shard's bytes do not depend on shard size, batch size,
worker count or retries. The service runs one shard per Celery task through `generate_shards`; the
dataset's `manifest.json` is written last by `finalize_dataset`, so its presence means "complete".
Because a task's pipeline drains at its shard's end, a worker passes a `Lookahead`: the next shard's
first batch (or the dataset card) is made while this shard's tail is still encoded and stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.nn import functional as F

from models.decimals import decimal_rows
from models.layouts import LabelLayout
from models.sampling import SamplingPlan
from models.spec import DatasetSpec, SpecError
from models.tarwriter import MemberHeaders, archive_end

if TYPE_CHECKING:
    from models.runtime import Bundle

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TAR_MTIME = 0  # fixed member mtime (seconds since epoch): reproducible bytes
TAR_OWNER = "labelforge"  # member user and group names
MANIFEST_NAME = "manifest.json"
JSON_DECIMALS = 6  # decimals of human-unit values in each sample's .json
CARD_FILES = {"contact_sheet": "card.png", "histograms": "histograms.png", "card": "card.md"}
_PIL_FORMAT = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
_CONTENT_TYPE = {"tar": "application/x-tar", "json": "application/json", "png": "image/png", "md": "text/markdown"}


class StorageLike(Protocol):
    """The part of `worker.storage.Storage` the engine uses (models never imports worker)."""

    def put_file(self, key: str, path: Path, content_type: str = ...) -> None: ...

    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> None: ...


@dataclass(frozen=True)
class ShardPlan:
    shard: int  # shard number, 0-based
    start: int  # first sample index (inclusive)
    stop: int  # last sample index (exclusive)
    file: str  # `{name}-{shard:06d}.tar`

    @property
    def count(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ShardInfo:
    """A stored shard, as recorded in the dataset manifest (and in the service's job record)."""

    shard: int
    file: str  # file name, relative to the dataset prefix
    count: int  # samples
    sha256: str  # of the tar bytes
    bytes: int  # tar size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shard_file(spec: DatasetSpec, shard: int) -> str:
    return f"{spec.name}-{shard:06d}.tar"


def join_key(prefix: str, name: str) -> str:
    """Storage key of `name` under a dataset prefix ('' or 'datasets/abc' or 'datasets/abc/')."""
    if not prefix:
        return name
    return prefix + name if prefix.endswith("/") else f"{prefix}/{name}"


def plan_shards(spec: DatasetSpec) -> list[ShardPlan]:
    """Index ranges per shard: shard s holds samples [s·shard_size, min((s+1)·shard_size, count))."""
    return [
        ShardPlan(s, s * spec.shard_size, min((s + 1) * spec.shard_size, spec.count), shard_file(spec, s))
        for s in range(spec.num_shards)
    ]


def find_bundle(name: str, bundles_dir: Path | str) -> Path:
    """The directory of bundle `name` under `bundles_dir`; unknown names raise `SpecError('bundle', …)`."""
    root = Path(bundles_dir)
    known = sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []
    if name not in known:
        raise SpecError("bundle", f"unknown bundle '{name}'; known in {root}: {', '.join(known) or 'none'}")
    return root / name


def sampling_plan(spec: DatasetSpec, bundle: Bundle) -> SamplingPlan:
    """Bind the spec to the bundle's layout (raises `SpecError('labels.<field>', …)`)."""
    return SamplingPlan(spec.resolve(bundle.layout), spec.seed, bundle.nz, spec.noise.mode, spec.noise.k)


# --- stage 1: tensors ---------------------------------------------------------------------------


@dataclass
class SampleBatch:
    """One generated batch on the host, ready for per-sample serialisation."""

    index: np.ndarray  # [B] int64 sample indices
    images: np.ndarray | list[bytes]  # [B, H, W, C] uint8, or already-encoded bytes (GPU JPEG)
    labels: np.ndarray  # [B, D] float32 standardized
    z: np.ndarray | None  # [B, Nz] float32
    sim: np.ndarray | None  # [B, H, W, C] uint8
    mask: np.ndarray | None  # [B, H, W, 1] uint8 in {0, 255}


def _to_uint8(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """[B, C, S, S] float in [0, 1] → [B, size, size, C] uint8 on the same device (resized if asked)."""
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class BatchProducer:
    """Labels, noise and pixels for given sample indices; also used to draw the dataset card."""

    def __init__(self, spec: DatasetSpec, bundle: Bundle):
        self.spec, self.bundle = spec, bundle
        self.plan = sampling_plan(spec, bundle)
        self.device = torch.device(bundle.device)
        # nvJPEG through torchvision encodes RGB; grey images take the CPU encoder pool.
        self.gpu_jpeg = self.device.type == "cuda" and spec.image.format == "jpg" and bundle.channels == 3
        self._domain = None
        if "mask" in spec.extras:
            self._domain = _mask_domain(bundle)

    def produce(self, index: torch.Tensor, *, encode: bool = True) -> SampleBatch:
        spec, bundle = self.spec, self.bundle
        idx = index.to(self.device)
        labels = self.plan.labels(idx).to(self.device)  # [B, D]
        z = self.plan.noise(idx).to(self.device)  # [B, Nz]
        with torch.inference_mode():
            images = _to_uint8(bundle.generate(z, labels), spec.image.size)  # [B, H, W, C]
            sim = _to_uint8(bundle.simulate(labels), spec.image.size).cpu().numpy() if "sim" in spec.extras else None
            mask = None
            if self._domain is not None:
                _, m = self._domain.simulate(labels.to(self._domain.device))
                mask = _to_uint8(m.float(), spec.image.size).cpu().numpy()
        out_images: np.ndarray | list[bytes]
        if encode and self.gpu_jpeg:
            from torchvision.io import encode_jpeg

            chw = list(images.permute(0, 3, 1, 2).contiguous().unbind(0))
            out_images = [t.cpu().numpy().tobytes() for t in encode_jpeg(chw, quality=spec.image.quality)]
        else:
            out_images = images.cpu().numpy()
        return SampleBatch(
            index=index.cpu().numpy().astype(np.int64),
            images=out_images,
            labels=labels.float().cpu().numpy(),
            z=z.float().cpu().numpy() if "z" in spec.extras else None,
            sim=sim,
            mask=mask,
        )


def _mask_domain(bundle: Bundle):  # type: ignore[no-untyped-def]
    """The bundle's domain renderer, which knows each label's silhouette (the networks do not)."""
    from models.domains.base import get_domain

    try:
        return get_domain(bundle.domain, image_size=bundle.image_size, device=bundle.device)
    except Exception as exc:  # an unknown or unbuildable domain: a spec problem for the user
        raise SpecError("extras", f"mask needs the '{bundle.domain}' domain renderer: {exc}") from exc


# --- stage 2: per-sample members ----------------------------------------------------------------


class SampleSerializer:
    """Turns rows of a `SampleBatch` into finished tar bytes per sample (no pickle anywhere).

    Each sample is its members in name order (as `webdataset.TarWriter` writes them), every member
    a tar header, the data and padding; the writer thread only appends these. The per-sample Python
    work is kept small because it competes with the generator for the same cores: the .json's
    numbers are formatted for the whole chunk at once (`models.decimals`), and the .npy members are
    a fixed header plus the row's raw bytes.
    """

    def __init__(self, spec: DatasetSpec, bundle: Bundle):
        self.spec = spec
        self.layout: LabelLayout = bundle.layout
        self.ext = spec.image.format
        self.headers = MemberHeaders(mtime=TAR_MTIME, user=TAR_OWNER, group=TAR_OWNER)
        self.categorical = [f for f in self.layout.fields if f.kind == "categorical"]
        self._npy_header = {n: _npy_header(n) for n in {self.layout.dim, bundle.nz}}
        self._save_kw: dict[str, Any] = {"quality": spec.image.quality} if self.ext != "png" else {}
        if self.ext == "webp":
            self._save_kw["method"] = 4
        # The .json is {"index", "seed", "bundle", "bundle_sha"[, "label_index"], "labels": {…}} with
        # no spaces, as json.dumps(separators=(",", ":")) writes it; the constant parts are made once.
        head = json.dumps({"seed": spec.seed, "bundle": bundle.name, "bundle_sha": bundle.sha},
                          separators=(",", ":"))
        self._json_head = ("," + head[1:-1]).encode()
        self._json_keys = [(f, f'"{f.name}":{"[" if f.size > 1 and f.kind != "categorical" else ""}'.encode())
                           for f in self.layout.fields]

    def encode_image(self, arr: np.ndarray, fmt: str = "") -> bytes:
        from PIL import Image

        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        buf = io.BytesIO()
        if fmt == "png" or (not fmt and self.ext == "png"):
            img.save(buf, format="PNG")
        else:
            img.save(buf, format=_PIL_FORMAT[self.ext], **self._save_kw)
        return buf.getvalue()

    def _label_json(self, labels: np.ndarray) -> tuple[list[bytes], list[list[int]]]:
        """[B, D] standardized → (per-row `"labels":{…}` JSON text in human units, categorical classes).

        Human values are rounded to JSON_DECIMALS places (the exact vector is in `.labels.npy`);
        categorical fields hold the class index.
        """
        parts: list[list[bytes]] = [[b'"labels":{'] for _ in range(labels.shape[0])]
        classes: list[list[int]] = [[] for _ in range(labels.shape[0])]
        for n, (f, key) in enumerate(self._json_keys):
            part = labels[:, f.slice].astype(np.float64)
            sep = b"," if n else b""
            if f.kind == "categorical":
                cls = part.argmax(axis=1).tolist()
                for r, c in enumerate(cls):
                    parts[r] += (sep, key, b"%d" % c)
                    classes[r].append(c)
                continue
            text = decimal_rows(f.offset + f.scale * part, JSON_DECIMALS)
            close = b"]" if f.size > 1 else b""
            for r, t in enumerate(text):
                parts[r] += (sep, key, t, close)
        return [b"".join(p) + b"}}" for p in parts], classes

    def encode(self, batch: SampleBatch, lo: int, hi: int) -> list[bytes]:
        """Rows lo..hi of `batch` as tar bytes, one string per sample."""
        labels_json, classes = self._label_json(batch.labels[lo:hi])
        variants = self.spec.noise.k if self.spec.noise.mode == "variants" else 0
        label_npy = self._npy_header[self.layout.dim]
        out = []
        for r in range(lo, hi):
            i = int(batch.index[r])
            head = b'{"index":%d' % i + self._json_head + (b',"label_index":%d,' % (i // variants) if variants else b",")
            img = batch.images[r]
            members = {
                self.ext: img if isinstance(img, bytes) else self.encode_image(img),
                "labels.npy": label_npy + batch.labels[r].tobytes(),
                "json": head + labels_json[r - lo],
            }
            if self.categorical:
                members["cls"] = " ".join(str(c) for c in classes[r - lo]).encode()
            if batch.sim is not None:
                members["sim.png"] = self.encode_image(batch.sim[r], "png")
            if batch.mask is not None:
                members["mask.png"] = self.encode_image(batch.mask[r], "png")
            if batch.z is not None:
                members["z.npy"] = self._npy_header[batch.z.shape[1]] + batch.z[r].tobytes()
            out.append(self.headers.sample_bytes(f"{i:09d}", sorted(members.items())))
        return out


def _npy_header(n: int) -> bytes:
    """The .npy header of a float32 [n] array, so each row is header + raw bytes (== np.save output)."""
    buf = io.BytesIO()
    np.save(buf, np.zeros(n, dtype=np.float32))
    return buf.getvalue()[: -4 * n]


# --- stage 3: tar writer ------------------------------------------------------------------------


class _ShardSink:
    """One shard being written to a temp file and hashed as it goes; `finish` puts it atomically."""

    def __init__(self, plan: ShardPlan, tmp_dir: str):
        self.plan = plan
        fd, name = tempfile.mkstemp(suffix=".tar", dir=tmp_dir)
        self.path = Path(name)
        self.fh = os.fdopen(fd, "wb", buffering=1 << 20)
        self.digest = hashlib.sha256()
        self.size = 0
        self.written = 0

    def write(self, sample: bytes) -> None:
        self.fh.write(sample)
        self.digest.update(sample)
        self.size += len(sample)
        self.written += 1

    def finish(self, storage: StorageLike, prefix: str) -> ShardInfo:
        end = archive_end(self.size)
        self.write(end)
        self.written -= 1  # the archive end is not a sample
        self.fh.close()
        storage.put_file(join_key(prefix, self.plan.file), self.path, _CONTENT_TYPE["tar"])
        self.path.unlink(missing_ok=True)
        return ShardInfo(self.plan.shard, self.plan.file, self.written, self.digest.hexdigest(), self.size)

    def discard(self) -> None:
        try:
            self.fh.close()
        finally:
            self.path.unlink(missing_ok=True)


def _segments(plans: list[ShardPlan], batch_size: int) -> Iterator[np.ndarray]:
    """Sample indices of the requested shards, cut into batches that may span shard boundaries."""
    pending: list[np.ndarray] = []
    n = 0
    for p in plans:
        start = p.start
        while start < p.stop:
            take = min(p.stop - start, batch_size - n)
            pending.append(np.arange(start, start + take, dtype=np.int64))
            n += take
            start += take
            if n == batch_size:
                yield np.concatenate(pending)
                pending, n = [], 0
    if pending:
        yield np.concatenate(pending)


def default_batch_size(bundle: Bundle) -> int:
    return 8192 if torch.device(bundle.device).type == "cuda" else 512


CARD_NEXT = "card"  # a `next_step()` answer: this dataset's card (its finalize) is the process's next work


@dataclass(frozen=True)
class _Ahead:
    """Work begun ahead: what it is for, and its future result."""

    spec_json: str
    bundle: Bundle
    index: np.ndarray | None  # the samples of a batch; None for the dataset card
    done: Future[Any]


class Lookahead:
    """The next piece of generator work a process expects to do, begun ahead in the background.

    Why: a worker runs one shard per task, so each shard ends with the generator idle — the last
    batches are encoded, the tar is stored, the job record updated, the broker's next message fetched,
    the next shard claimed — and starts with the encoders idle while its first batch is generated. The
    engine alone overlaps these across shards. A `Lookahead` kept for the life of the process (the
    worker's) lets `generate_shards` start the next shard's first batch — or, after a dataset's last
    shard, its card — as soon as this shard's last batch is generated; the next call takes it instead
    of making it.

    Only generator output and card images are kept (no tar bytes, nothing in storage), and sample i
    depends only on (seed, i), so shards and cards made with them are byte-identical, and atomicity and
    retries are untouched. A wrong guess (another job's shard came next, another worker took the shard)
    costs one batch of generator time. One piece is pending at most; a call waits for a pending batch
    before generating, so the two never compete for the generator.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: _Ahead | None = None
        self.started = 0  # pieces begun ahead
        self.taken = 0  # of those, pieces a later call used (the rest were wrong guesses)

    def start(self, spec: DatasetSpec, bundle: Bundle, index: np.ndarray | None, make: Callable[[], Any]) -> None:
        """Run `make()` in a background thread: batch `index` of `spec` with `bundle` (None: its card)."""
        self.discard()
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(make())
            except BaseException as exc:  # reported (and dropped) when taken
                done.set_exception(exc)

        with self._lock:
            self._pending = _Ahead(spec.model_dump_json(), bundle, index, done)
            self.started += 1
        threading.Thread(target=run, name="lf-lookahead", daemon=True).start()

    def take_batch(self, spec: DatasetSpec, bundle: Bundle, index: np.ndarray) -> SampleBatch | None:
        """The batch made ahead if it is exactly `index` of `spec` with `bundle`, else None.

        Waits for a batch still being made (whichever), so that the caller's own generation never runs
        beside it; a pending card is left for its finalize.
        """
        with self._lock:
            pending = self._pending
            if pending is None or pending.index is None:
                return None
            self._pending = None
        same = pending.index.shape == index.shape and bool(np.array_equal(pending.index, index))
        return self._result(pending, same and self._same(pending, spec, bundle))

    def take_card(self, spec: DatasetSpec, bundle: Bundle) -> dict[str, bytes] | None:
        """The card files of `spec` with `bundle` if they were begun ahead, else None."""
        with self._lock:
            pending = self._pending
            if pending is None or pending.index is not None or not self._same(pending, spec, bundle):
                return None
            self._pending = None
        return self._result(pending, True)

    def discard(self) -> None:
        """Drop any pending piece (once it is done, so no generation outlives this call)."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._result(pending, False)

    @staticmethod
    def _same(pending: _Ahead, spec: DatasetSpec, bundle: Bundle) -> bool:
        return pending.bundle is bundle and pending.spec_json == spec.model_dump_json()

    def _result(self, pending: _Ahead, wanted: bool) -> Any:
        try:
            result = pending.done.result()
        except Exception:
            log.warning("work begun ahead failed; it is done again where needed", exc_info=True)
            return None
        if not wanted:
            return None
        with self._lock:
            self.taken += 1
        return result


def _look_ahead(lookahead: Lookahead, next_step: Callable[[], int | str | None], spec: DatasetSpec, bundle: Bundle,
                producer: BatchProducer, all_plans: list[ShardPlan], batch_size: int) -> None:
    """Begin the first batch of shard `next_step()`, or the card for `CARD_NEXT` (a guess: errors are logged)."""
    try:
        step = next_step()
    except Exception:
        log.warning("could not tell what comes next; nothing begun ahead", exc_info=True)
        return
    if step == CARD_NEXT:
        from models.card import render_card

        def card() -> dict[str, bytes]:
            with _torch_threads_for(bundle):
                return render_card(spec, bundle, producer)

        lookahead.start(spec, bundle, None, card)
        return
    if not isinstance(step, int) or not 0 <= step < len(all_plans):
        return
    plan = all_plans[step]
    index = np.arange(plan.start, min(plan.stop, plan.start + batch_size), dtype=np.int64)

    def batch() -> SampleBatch:
        with _torch_threads_for(bundle):
            return producer.produce(torch.from_numpy(index))

    lookahead.start(spec, bundle, index, batch)


def generate_shards(
    spec: DatasetSpec,
    bundle: Bundle,
    storage: StorageLike,
    prefix: str,
    shard_ids: Iterable[int],
    progress: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    *,
    batch_size: int | None = None,
    encode_workers: int | None = None,
    lookahead: Lookahead | None = None,
    next_step: Callable[[], int | str | None] | None = None,
) -> list[ShardInfo]:
    """Write the given shards (each put atomically under `prefix`) and return their infos in shard order.

    `progress(n)` is called (in this thread) with the number of samples newly written. When
    `cancelled()` turns true the engine stops between batches, drops queued work and returns the
    shards stored so far; a shard in flight is discarded, never stored partially.

    With a `lookahead`, the first batch is taken from it when it holds exactly that batch, and once the
    last batch is generated, `next_step()` is asked what this process will do next — a shard number
    (its first batch is begun), `CARD_NEXT` (the card is begun, for `finalize_dataset`) or None — while
    this call's tail is encoded and stored.
    """
    all_plans = plan_shards(spec)
    ids = sorted(set(int(s) for s in shard_ids))
    for s in ids:
        if not 0 <= s < len(all_plans):
            raise SpecError("shards", f"shard {s} out of range; the spec has {len(all_plans)} shards (0..{len(all_plans) - 1})")
    plans = [all_plans[s] for s in ids]
    if not plans:
        return []
    producer = BatchProducer(spec, bundle)
    serializer = SampleSerializer(spec, bundle)
    batch_size = batch_size or default_batch_size(bundle)
    workers = encode_workers or max(1, min(8, os.cpu_count() or 1))
    pipeline = _Pipeline(plans, serializer, storage, prefix, workers)
    try:
        with _torch_threads_for(bundle):
            for n, index in enumerate(_segments(plans, batch_size)):
                if cancelled is not None and cancelled():
                    log.info("generation cancelled", extra={"dataset": spec.name})
                    pipeline.abort()
                    break
                ready = lookahead.take_batch(spec, bundle, index) if lookahead is not None and n == 0 else None
                pipeline.submit(ready if ready is not None else producer.produce(torch.from_numpy(index)))
                _drain(pipeline, progress)
            else:
                if lookahead is not None and next_step is not None:
                    _look_ahead(lookahead, next_step, spec, bundle, producer, all_plans, batch_size)
                pipeline.close()
    except BaseException:
        pipeline.abort()
        raise
    _drain(pipeline, progress)
    return pipeline.infos


_torch_threads_lock = threading.Lock()
_torch_threads_users = 0  # generations (calls, lookahead threads) inside `_torch_threads_for` now
_torch_threads_before = 0  # torch's thread count before the first of them


@contextlib.contextmanager
def _torch_threads_for(bundle: Bundle) -> Iterator[None]:
    """One torch thread while ONNX Runtime runs G on the CPU.

    torch only does small elementwise work here (labels, uint8); with its OpenMP pool competing
    against ONNX Runtime's threads and the encoders, each such op costs ~40× more on a busy 2-core
    machine (measured: 8 ms vs 0.2 ms for a 512×400 cast). The setting is process-wide and
    generations overlap (a lookahead thread, parallel calls), so it is counted: the first in sets it,
    the last out restores it.
    """
    global _torch_threads_users, _torch_threads_before
    if bundle.engine != "onnx" or torch.device(bundle.device).type != "cpu":
        yield
        return
    with _torch_threads_lock:
        if _torch_threads_users == 0:
            _torch_threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _torch_threads_users += 1
    try:
        yield
    finally:
        with _torch_threads_lock:
            _torch_threads_users -= 1
            if _torch_threads_users == 0:
                torch.set_num_threads(_torch_threads_before)


def _drain(pipeline: _Pipeline, progress: Callable[[int], None] | None) -> None:
    pipeline.raise_if_failed()
    n = pipeline.take_written()
    if progress is not None and n:
        progress(n)


class _Pipeline:
    """Encode pool + ordered writer thread behind a bounded queue (back-pressure on the generator)."""

    def __init__(self, plans: list[ShardPlan], serializer: SampleSerializer, storage: StorageLike, prefix: str,
                 workers: int, depth: int = 4):
        self.plans, self.serializer, self.storage, self.prefix = plans, serializer, storage, prefix
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lf-encode")
        self.workers = workers
        self.queue: queue.Queue[list[Future[list[bytes]]] | None] = queue.Queue(maxsize=depth)
        self.infos: list[ShardInfo] = []
        self.error: BaseException | None = None
        self._written = 0
        self._lock = threading.Lock()
        self._aborted = threading.Event()
        self._tmp = tempfile.TemporaryDirectory(prefix="labelforge-shards-")
        self.thread = threading.Thread(target=self._run, name="lf-writer", daemon=True)
        self.thread.start()

    def submit(self, batch: SampleBatch) -> None:
        n = len(batch.index)
        step = max(1, -(-n // (self.workers * 2)))
        futures = [self.pool.submit(self.serializer.encode, batch, lo, min(lo + step, n)) for lo in range(0, n, step)]
        while True:  # put with a timeout so a dead writer cannot block the generator forever
            self.raise_if_failed()
            try:
                self.queue.put(futures, timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        plans = iter(self.plans)
        sink: _ShardSink | None = None
        try:
            while True:
                item = self.queue.get()
                if item is None or self._aborted.is_set():
                    break
                for fut in item:
                    if self._aborted.is_set():
                        return
                    for sample in fut.result():
                        if sink is None:
                            sink = _ShardSink(next(plans), self._tmp.name)
                        sink.write(sample)
                        if sink.written == sink.plan.count:
                            self.infos.append(sink.finish(self.storage, self.prefix))
                            sink = None
                        with self._lock:
                            self._written += 1
        except BaseException as exc:  # surfaced in the generator thread
            self.error = exc
        finally:
            if sink is not None:
                sink.discard()

    def take_written(self) -> int:
        with self._lock:
            n, self._written = self._written, 0
        return n

    def raise_if_failed(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            self._shutdown()
            raise err

    def close(self) -> None:
        """All batches submitted: let the writer finish the last shard, then stop."""
        while True:
            self.raise_if_failed()
            try:
                self.queue.put(None, timeout=0.5)
                break
            except queue.Full:
                continue
        self._shutdown()

    def abort(self) -> None:
        """Stop without storing the shard in flight (the writer checks the flag between samples)."""
        self._aborted.set()
        try:
            self.queue.put_nowait(None)  # wakes a writer waiting on an empty queue
        except queue.Full:
            pass  # the writer is busy and will see the flag
        self._shutdown()

    def _shutdown(self) -> None:
        if threading.current_thread() is not self.thread:
            self.thread.join()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._tmp.cleanup()


# --- dataset level ------------------------------------------------------------------------------


def dataset_manifest(spec: DatasetSpec, bundle: Bundle, shards: list[ShardInfo]) -> dict[str, Any]:
    """The manifest: spec, bundle identity, shards with hashes — no timestamps, so it is reproducible too."""
    shards = sorted(shards, key=lambda s: s.shard)
    expected = spec.num_shards
    got = [s.shard for s in shards]
    if got != list(range(expected)):
        missing = sorted(set(range(expected)) - set(got))
        raise ValueError(f"shards: dataset '{spec.name}' needs shards 0..{expected - 1}; missing {missing[:10]}")
    members = [spec.image.format, "labels.npy", "json"]
    if any(f.kind == "categorical" for f in bundle.layout.fields):
        members.append("cls")
    members += [{"sim": "sim.png", "mask": "mask.png", "z": "z.npy"}[e] for e in spec.extras]
    return {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "spec": spec.model_dump(mode="json"),
        "bundle": {"name": bundle.name, "sha": bundle.sha, "domain": bundle.domain, "layout": bundle.layout.describe()},
        "count": spec.count,
        "num_shards": expected,
        "members": members,
        "shards": [s.to_dict() for s in shards],
        "card": CARD_FILES,
    }


def finalize_dataset(spec: DatasetSpec, bundle: Bundle, storage: StorageLike, prefix: str,
                     shards: list[ShardInfo], *, lookahead: Lookahead | None = None) -> dict[str, Any]:
    """Write the dataset card (taken from `lookahead` when it was begun there), then `manifest.json`
    LAST (its presence means the dataset is complete)."""
    from models.card import render_card

    manifest = dataset_manifest(spec, bundle, shards)
    card = lookahead.take_card(spec, bundle) if lookahead is not None else None
    if card is None:
        card = render_card(spec, bundle, BatchProducer(spec, bundle))
    for name, data in card.items():
        storage.put_bytes(join_key(prefix, name), data, _CONTENT_TYPE[name.rsplit(".", 1)[1]])
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    storage.put_bytes(join_key(prefix, MANIFEST_NAME), body, _CONTENT_TYPE["json"])
    return manifest


def generate_dataset(spec: DatasetSpec, bundle: Bundle, storage: StorageLike, prefix: str,
                     progress: Callable[[int], None] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Every shard, then the card and the manifest; returns the manifest."""
    infos = generate_shards(spec, bundle, storage, prefix, range(spec.num_shards), progress, **kwargs)
    return finalize_dataset(spec, bundle, storage, prefix, infos)
