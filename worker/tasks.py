"""Celery tasks: small, idempotent, and carrying only ids.

Every task reloads its state from the job records and decides there whether to run:
- job deleted, cancelled or finished, or shard already stored → acknowledge and do nothing;
- message id is not the shard's current `task_id` → stale (the reconciler re-sent it) → nothing;
- another live process is running the shard → nothing (a broker redelivery of a busy shard);
- otherwise bump `deliveries`; past `max_deliveries` crashing starts the shard is poison → fail the job.
Then the engine writes the shard (to a temp file, put atomically: identical bytes on any re-run), the
row becomes `stored`, and the last shard sends `finalize_job`, which writes the manifest last. While a
shard's last samples are encoded and stored, the process begins its likely next work — the next queued
shard's first batch, or after the job's last shard its card (`next_step`, `models.engine.Lookahead`);
only generator output is made ahead, so none of the above changes.

Only `TransientStorageError` is retried (exponential backoff with ±50 % jitter); any other error fails
the job with a message naming the shard. Bundles are loaded once per process, on CUDA when present.

Test hooks (environment, read per shard): `LABELFORGE_FAULT_CRASH_SHARD=N` makes the process exit
hard when it starts shard N (a poison shard); `LABELFORGE_FAULT_SLEEP_S=x` sleeps x seconds per shard
after claiming it (a window to kill a worker mid-shard).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Task
from celery.signals import worker_process_init
from sqlalchemy import func, select

from worker import labeling
from worker.celery_app import app
from worker.db import (
    JOB_ACTIVE,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    KIND_DATASET,
    SHARD_FAILED,
    SHARD_PENDING,
    SHARD_RUNNING,
    SHARD_STORED,
    Job,
    ShardTask,
    get_sessionmaker,
    utcnow,
)
from worker.jobs import send_finalize
from worker.reconciler import fail_job, poison_reason, reconcile_once, shard_deadline_s
from worker.resources import get_bundle, get_lookahead, get_storage, warm_bundles
from worker.settings import Settings, get_settings
from worker.storage import KeepAliveStorage, TransientStorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """What a task needs from the job record once it has claimed a shard."""

    job_id: str
    shard: int
    kind: str
    spec: dict[str, Any]
    bundle: str
    prefix: str


@dataclass(frozen=True)
class StoredShard:
    """The engine's answer for one shard, whichever engine wrote it."""

    key: str
    samples: int
    sha256: str
    size_bytes: int


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Is the process named "host:pid" alive? Unknown for other hosts → assume alive (heartbeat decides)."""
    if not owner or owner == _owner():
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _session(settings: Settings):  # type: ignore[no-untyped-def]
    return get_sessionmaker(settings.database_url)()


def claim_shard(settings: Settings, job_id: str, shard: int, task_id: str | None) -> Claim | None:
    """Decide whether this delivery runs the shard; mark it running if so (see module docstring)."""
    log_extra = {"job_id": job_id, "shard": shard, "task_id": task_id}
    with _session(settings) as session, session.begin():
        row = session.get(ShardTask, (job_id, shard), with_for_update=True)
        job = session.get(Job, job_id)
        if row is None or job is None or job.status not in JOB_ACTIVE or row.status in (SHARD_STORED, SHARD_FAILED):
            log.info("nothing to do [job %s shard %s task %s]", job_id, shard, task_id, extra=log_extra)
            return None
        if task_id is not None and row.task_id != task_id:
            log.info("stale message dropped [job %s shard %s task %s]", job_id, shard, task_id, extra=log_extra)
            return None
        now = utcnow()
        # Busy elsewhere: running, its owner alive and beating within the deadline (a query over the
        # job's shard times, so asked last: most claims are of pending shards).
        if row.status == SHARD_RUNNING and _owner_alive(row.owner) and row.heartbeat_at is not None and (
                now - row.heartbeat_at).total_seconds() < shard_deadline_s(session, job_id, settings):
            log.info("shard busy elsewhere; redelivery dropped [job %s shard %s task %s]", job_id, shard, task_id, extra={**log_extra, "owner": row.owner})
            return None
        crashes = row.deliveries - row.attempts  # starts that ended neither stored, failed nor retried
        if crashes >= settings.max_deliveries:
            reason = poison_reason(shard, crashes)
            row.status, row.error, row.finished_at = SHARD_FAILED, reason, now
            fail_job(session, job, reason)
            log.error("poison shard [job %s shard %s task %s]", job_id, shard, task_id, extra=log_extra)
            return None
        row.deliveries += 1
        row.status, row.owner, row.started_at, row.heartbeat_at, row.samples = SHARD_RUNNING, _owner(), now, now, 0
        if job.status == JOB_QUEUED:
            job.status, job.started_at = JOB_RUNNING, now
        return Claim(job_id, shard, job.kind, dict(job.spec), job.bundle, job.prefix)


class Monitor:
    """Progress and cancellation callbacks for the engine, writing to the DB at most every interval."""

    def __init__(self, settings: Settings, job_id: str, shard: int):
        self.settings, self.job_id, self.shard = settings, job_id, shard
        self.samples = 0
        self._last_beat = time.monotonic()
        self._last_check = 0.0
        self._cancelled = False

    def progress(self, n: int) -> None:
        self.samples += n
        if time.monotonic() - self._last_beat >= self.settings.heartbeat_interval_s:
            self.beat()

    def beat(self) -> None:
        """Record progress and liveness now; also called by KeepAliveStorage while an upload waits."""
        self._last_beat = time.monotonic()
        with _session(self.settings) as session, session.begin():
            row = session.get(ShardTask, (self.job_id, self.shard))
            if row is not None and row.status == SHARD_RUNNING and row.owner == _owner():
                row.heartbeat_at, row.samples = utcnow(), self.samples

    def cancelled(self) -> bool:
        if not self._cancelled and time.monotonic() - self._last_check >= self.settings.heartbeat_interval_s / 2:
            self._last_check = time.monotonic()
            with _session(self.settings) as session:
                status = session.scalar(select(Job.status).where(Job.id == self.job_id))
            self._cancelled = status not in JOB_ACTIVE
        return self._cancelled


def _fault_hook(shard: int) -> None:
    """Test-only faults (see module docstring); no-ops unless the env vars are set."""
    if os.environ.get("LABELFORGE_FAULT_CRASH_SHARD") == str(shard):
        os._exit(137)
    sleep_s = float(os.environ.get("LABELFORGE_FAULT_SLEEP_S", "0") or 0)
    if sleep_s > 0:
        time.sleep(sleep_s)


def _keepalive_storage(settings: Settings, monitor: Monitor) -> KeepAliveStorage:
    """Storage that keeps the shard's heartbeat going while an upload waits (see KeepAliveStorage)."""
    return KeepAliveStorage(get_storage(settings), monitor.beat, settings.heartbeat_interval_s)


def _run_dataset(settings: Settings, claim: Claim, monitor: Monitor) -> StoredShard | None:
    from models.engine import generate_shards
    from models.spec import DatasetSpec

    spec = DatasetSpec.model_validate(claim.spec)
    bundle = get_bundle(settings, claim.bundle)
    infos = generate_shards(spec, bundle, _keepalive_storage(settings, monitor), claim.prefix, [claim.shard],
                            progress=monitor.progress, cancelled=monitor.cancelled,
                            lookahead=get_lookahead(), next_step=lambda: next_step(settings, claim))
    if not infos:  # cancelled before the shard was complete: nothing was stored
        return None
    info = infos[0]
    return StoredShard(key=claim.prefix + info.file, samples=info.count, sha256=info.sha256, size_bytes=info.bytes)


def next_step(settings: Settings, claim: Claim) -> int | str | None:
    """This process's most likely next work for the claimed dataset job, asked as its shard ends (see
    `models.engine.Lookahead`): the earliest-sent shard still waiting in the queue (messages are taken
    in the order sent); else, when every other shard is stored, the job's card (its finalize follows
    this shard); else None."""
    from models.engine import CARD_NEXT

    with _session(settings) as session:
        if session.scalar(select(Job.status).where(Job.id == claim.job_id)) not in JOB_ACTIVE:
            return None
        others = (ShardTask.job_id == claim.job_id) & (ShardTask.shard != claim.shard)
        waiting = session.scalar(
            select(ShardTask.shard).where(others, ShardTask.status == SHARD_PENDING, ShardTask.enqueued_at.is_not(None),
                                          ShardTask.enqueued_at <= utcnow())
            .order_by(ShardTask.enqueued_at, ShardTask.shard).limit(1))
        if waiting is not None:
            return int(waiting)
        unstored = session.scalar(select(func.count()).select_from(ShardTask).where(others, ShardTask.status != SHARD_STORED))
        return CARD_NEXT if unstored == 0 else None


def _run_labeling(settings: Settings, claim: Claim, monitor: Monitor) -> StoredShard | None:
    bundle = get_bundle(settings, claim.bundle)
    done = labeling.label_shard(claim.spec, bundle, _keepalive_storage(settings, monitor), claim.prefix, claim.shard,
                                max_pixels=settings.max_image_pixels, max_bytes=settings.max_upload_bytes * settings.max_archive_expand_ratio,
                                progress=monitor.progress, cancelled=monitor.cancelled)
    if done is None:
        return None
    return StoredShard(key=done.key, samples=done.samples, sha256=done.sha256, size_bytes=done.size_bytes)


def record_stored(settings: Settings, claim: Claim, stored: StoredShard) -> bool:
    """Mark the shard stored; returns True when it was the job's last one. A job deleted or cancelled
    meanwhile gets its just-written object removed again, so nothing outlives a delete."""
    with _session(settings) as session, session.begin():
        job = session.get(Job, claim.job_id, with_for_update=True)
        row = session.get(ShardTask, (claim.job_id, claim.shard))
        if job is None or row is None or job.status not in JOB_ACTIVE:
            get_storage(settings).delete_prefix(stored.key)
            return False
        now = utcnow()
        row.status, row.key, row.samples, row.sha256, row.size_bytes = (
            SHARD_STORED, stored.key, stored.samples, stored.sha256, stored.size_bytes)
        row.finished_at, row.heartbeat_at, row.error = now, now, None
        session.flush()
        done_shards, done_samples = session.execute(
            select(func.count(), func.coalesce(func.sum(ShardTask.samples), 0)).where(
                ShardTask.job_id == claim.job_id, ShardTask.status == SHARD_STORED)
        ).one()
        job.done_shards, job.done_samples = int(done_shards), int(done_samples)
        return job.done_shards == job.total_shards


def _backoff_s(settings: Settings, retries: int) -> float:
    base = min(settings.storage_retry_backoff_s * 2**retries, settings.storage_retry_backoff_max_s)
    return base * random.uniform(0.5, 1.5)


def _fail(settings: Settings, job_id: str, shard: int | None, reason: str) -> None:
    with _session(settings) as session, session.begin():
        job = session.get(Job, job_id)
        if job is None:
            return
        if shard is not None:
            row = session.get(ShardTask, (job_id, shard))
            if row is not None:
                row.status, row.error, row.finished_at = SHARD_FAILED, reason, utcnow()
        fail_job(session, job, reason)


def _release_for_retry(settings: Settings, job_id: str, shard: int, reason: str, countdown_s: float) -> None:
    """Mark the shard pending again, "sent" as of when its retry is due: the reconciler measures a lost
    message from `enqueued_at`, so it must not re-send (and so skip the backoff of) a shard whose retry
    is merely waiting out its countdown during a storage outage."""
    with _session(settings) as session, session.begin():
        row = session.get(ShardTask, (job_id, shard))
        if row is not None and row.status == SHARD_RUNNING:
            row.status, row.attempts, row.error, row.samples = SHARD_PENDING, row.attempts + 1, reason, 0
            row.enqueued_at = utcnow() + timedelta(seconds=countdown_s)


def run_shard(task: Task, job_id: str, shard: int) -> None:
    """The body shared by `generate_shard` and `label_shard`."""
    settings = get_settings()
    t0 = time.perf_counter()
    claim = claim_shard(settings, job_id, shard, task.request.id)
    if claim is None:
        return
    t_claim = time.perf_counter()
    extra = {"job_id": job_id, "shard": shard, "task_id": task.request.id}
    log.info("shard started [job %s shard %s task %s]", job_id, shard, task.request.id, extra=extra)
    monitor = Monitor(settings, job_id, shard)
    try:
        _fault_hook(shard)
        run = _run_dataset if claim.kind == KIND_DATASET else _run_labeling
        stored = run(settings, claim, monitor)
    except TransientStorageError as exc:
        retries = task.request.retries or 0
        if retries >= settings.storage_retries:
            _fail(settings, job_id, shard, f"shard {shard}: storage kept failing after {retries} retries: {exc}")
            return
        log.warning("transient storage error; retrying [job %s shard %s task %s]", job_id, shard, task.request.id, extra={**extra, "retries": retries})
        countdown = _backoff_s(settings, retries)
        _release_for_retry(settings, job_id, shard, f"retrying after: {exc}", countdown)
        raise task.retry(exc=exc, countdown=countdown, max_retries=None) from exc
    except Exception as exc:
        log.exception("shard failed [job %s shard %s task %s]", job_id, shard, task.request.id, extra=extra)
        _fail(settings, job_id, shard, f"shard {shard}: {type(exc).__name__}: {exc}")
        return
    if stored is None:
        log.info("shard stopped: job cancelled [job %s shard %s task %s]", job_id, shard, task.request.id, extra=extra)
        return
    t_run = time.perf_counter()
    if record_stored(settings, claim, stored):
        with _session(settings) as session:
            send_finalize(session, job_id)
    t_end = time.perf_counter()
    # Where a shard's time goes (the job records only say when it started and ended), and how often this
    # process's lookahead guessed its next work right.
    phases = {"claim_s": round(t_claim - t0, 3), "run_s": round(t_run - t_claim, 3), "record_s": round(t_end - t_run, 3)}
    ahead = get_lookahead()
    log.info("shard stored [job %s shard %s task %s] claim %.3fs run %.3fs record %.3fs; lookahead used %d of %d",
             job_id, shard, task.request.id, *phases.values(), ahead.taken, ahead.started,
             extra={**extra, "samples": stored.samples, **phases})


@app.task(bind=True, name="worker.tasks.generate_shard")
def generate_shard(self: Task, job_id: str, shard: int) -> None:
    """Generate shard `shard` of dataset job `job_id` (idempotent)."""
    run_shard(self, job_id, shard)


@app.task(bind=True, name="worker.tasks.label_shard")
def label_shard(self: Task, job_id: str, shard: int) -> None:
    """Label shard `shard` of labeling job `job_id` (idempotent)."""
    run_shard(self, job_id, shard)


@app.task(bind=True, name="worker.tasks.finalize_job")
def finalize_job(self: Task, job_id: str) -> None:
    """Write the job's manifest (and dataset card) last, then mark it succeeded. Idempotent."""
    settings = get_settings()
    t0 = time.perf_counter()
    with _session(settings) as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in JOB_ACTIVE:
            return
        rows = session.scalars(select(ShardTask).where(ShardTask.job_id == job_id).order_by(ShardTask.shard)).all()
        if not rows or any(r.status != SHARD_STORED for r in rows):
            return
        kind, spec, prefix, bundle_name, bundle_sha = job.kind, dict(job.spec), job.prefix, job.bundle, job.bundle_sha
        stored = [(r.shard, r.key or "", r.samples, r.sha256 or "", r.size_bytes) for r in rows]
    t_read = time.perf_counter()
    try:
        storage = get_storage(settings)
        if kind == KIND_DATASET:
            _finalize_dataset(settings, spec, bundle_name, prefix, stored)
        else:
            shards = [labeling.LabelingShard(shard=s, key=k, samples=n, sha256=h, size_bytes=b)
                      for s, k, n, h, b in stored]
            labeling.write_manifest(storage, prefix, spec, bundle_sha, shards)
    except TransientStorageError as exc:
        retries = self.request.retries or 0
        if retries >= settings.storage_retries:
            _fail(settings, job_id, None, f"finalize: storage kept failing after {retries} retries: {exc}")
            return
        raise self.retry(exc=exc, countdown=_backoff_s(settings, retries), max_retries=None) from exc
    except Exception as exc:
        log.exception("finalize of job %s failed", job_id, extra={"job_id": job_id})
        _fail(settings, job_id, None, f"finalize: {type(exc).__name__}: {exc}")
        return
    t_write = time.perf_counter()
    with _session(settings) as session, session.begin():
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status not in JOB_ACTIVE:  # deleted or cancelled while finalizing
            if job is None:
                get_storage(settings).delete_prefix(prefix)
            return
        job.status, job.finished_at = JOB_SUCCEEDED, utcnow()
    phases = {"read_s": round(t_read - t0, 3), "write_s": round(t_write - t_read, 3),
              "record_s": round(time.perf_counter() - t_write, 3)}
    log.info("job %s succeeded; finalize read %.3fs write %.3fs record %.3fs", job_id, *phases.values(),
             extra={"job_id": job_id, **phases})


def _finalize_dataset(settings: Settings, spec_json: dict[str, Any], bundle_name: str, prefix: str,
                      stored: list[tuple[int, str, int, str, int]]) -> None:
    from models.engine import ShardInfo, finalize_dataset
    from models.spec import DatasetSpec

    spec = DatasetSpec.model_validate(spec_json)
    infos = [ShardInfo(shard=s, file=k.removeprefix(prefix), count=n, sha256=h, bytes=b) for s, k, n, h, b in stored]
    finalize_dataset(spec, get_bundle(settings, bundle_name), get_storage(settings), prefix, infos,
                     lookahead=get_lookahead())


@app.task(name="worker.tasks.reconcile")
def reconcile() -> dict[str, Any]:
    """One reconciler pass (for deployments that schedule it with celery beat)."""
    return reconcile_once().__dict__


@worker_process_init.connect
def _warm_up(**_: Any) -> None:
    """Load the bundles in each new pool process, in the background (see `warm_bundles`)."""
    threading.Thread(target=warm_bundles, args=(get_settings(),), name="lf-warm-up", daemon=True).start()
