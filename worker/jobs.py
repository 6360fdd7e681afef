"""Job lifecycle the API calls: create, enqueue, cancel, delete, report progress.

Contract (H7 calls these; all take a SQLAlchemy `Session` from `worker.db`):
    create_dataset_job(session, tenant_id, spec, *, settings=None) -> Job            # commits
    create_labeling_job(session, tenant_id, *, bundle, upload=None, source_keys=None, name=None,
                        settings=None) -> Job                                          # commits
    enqueue(session, job, *, celery=None) -> int        # sends the job's unsent shards; never raises on broker loss
    get_job(session, tenant_id, job_id, kind=None) -> Job | None   # tenant-scoped: another tenant's id → None
    list_jobs(session, tenant_id, kind=None, limit=100) -> list[Job]
    cancel_job(session, job) -> Job                     # commits; running shards stop at their next check
    delete_job(session, job, *, settings=None) -> int   # cancels, deletes every object under the prefix and the rows
    job_progress(job) -> dict                           # samples, shards, fraction, eta_s, errors, redeliveries
    job_prefix(tenant_id, job_id) -> "tenants/{tenant}/jobs/{job}/"
Invalid input raises `JobInputError` (a ValueError with `.field` and `.reason`) before anything is
written, so the API can answer 4xx naming the field and leave no rows or objects behind.

A job is durable once created: if the broker is down at `enqueue`, its shards stay unsent
(`enqueued_at` NULL) and the reconciler sends them later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from celery import Celery
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from worker import labeling
from worker.db import (
    JOB_ACTIVE,
    JOB_CANCELLED,
    KIND_DATASET,
    KIND_LABELING,
    SHARD_FAILED,
    SHARD_PENDING,
    SHARD_RUNNING,
    SHARD_STORED,
    Job,
    ShardTask,
    new_id,
    utcnow,
)
from worker.resources import UnknownBundleError, bundle_path, get_bundle, get_storage
from worker.settings import Settings, get_settings
from worker.storage import StorageError, validate_key

if TYPE_CHECKING:
    from models.spec import DatasetSpec

log = logging.getLogger(__name__)

SHARD_TASK = {KIND_DATASET: "worker.tasks.generate_shard", KIND_LABELING: "worker.tasks.label_shard"}


class JobInputError(ValueError):
    """Input the job cannot accept; `field` names it (e.g. `bundle`, `count`, `upload`, `source_keys[3]`)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def job_prefix(tenant_id: str, job_id: str) -> str:
    """Storage folder of a job: every object of the job, and nothing of any other tenant, lives below it."""
    return f"tenants/{tenant_id}/jobs/{job_id}/"


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


# --- creation ---


def create_dataset_job(session: Session, tenant_id: str, spec: DatasetSpec, *,
                       settings: Settings | None = None) -> Job:
    """Check `spec` against its bundle and limits, store the job and its shards."""
    from models.engine import plan_shards
    from models.spec import SpecError

    settings = _settings(settings)
    if spec.count > settings.max_count:
        raise JobInputError("count", f"{spec.count} is more than the {settings.max_count} allowed per job")
    bundle = _load_bundle(settings, spec.bundle)
    try:
        spec.resolve(bundle.layout)  # layout-dependent checks: unknown fields, class ranges, slot counts
    except SpecError as exc:
        raise JobInputError(exc.field, exc.reason) from exc
    job_id = new_id()
    job = Job(id=job_id, tenant_id=tenant_id, kind=KIND_DATASET, name=spec.name, spec=spec.model_dump(mode="json"),
              bundle=spec.bundle, bundle_sha=bundle.sha, prefix=job_prefix(tenant_id, job_id),
              total_samples=spec.count)
    plans = plan_shards(spec)
    job.shards = [ShardTask(shard=p.shard, expected_samples=p.stop - p.start) for p in plans]
    job.total_shards = len(plans)
    session.add(job)
    session.commit()
    return job


def _load_bundle(settings: Settings, name: str) -> Any:
    try:
        bundle_path(settings, name)
        return get_bundle(settings, name)
    except UnknownBundleError as exc:
        raise JobInputError("bundle", str(exc).removeprefix("bundle: ")) from exc


def create_labeling_job(
    session: Session,
    tenant_id: str,
    *,
    bundle: str,
    upload: bytes | None = None,
    source_keys: Sequence[str] | None = None,
    name: str | None = None,
    shard_size: int | None = None,
    settings: Settings | None = None,
) -> Job:
    """A labeling job over an uploaded tar/zip (`upload`) or objects the tenant already stored (`source_keys`).

    Uploads are fully checked (names, sizes, every image decoded) before anything is written;
    storage keys must lie under the tenant's own `tenants/{tenant}/` folder and exist.
    """
    settings = _settings(settings)
    if (upload is None) == (source_keys is None):
        raise JobInputError("upload", "give exactly one of an uploaded archive or source_keys")
    loaded = _load_bundle(settings, bundle)
    name = name or "labels"
    if not labeling.SAFE_NAME.match(name):
        raise JobInputError("name", "must match ^[a-z0-9][a-z0-9-]{0,62}$")
    shard_size = shard_size or settings.labeling_shard_size
    storage = get_storage(settings)
    job_id = new_id()
    prefix = job_prefix(tenant_id, job_id)
    spec: dict[str, Any] = {"name": name, "bundle": bundle, "shard_size": shard_size}
    if upload is not None:
        if len(upload) > settings.max_upload_bytes:
            raise JobInputError("upload", f"{len(upload)} bytes is more than the {settings.max_upload_bytes} allowed")
        try:
            members = labeling.inspect_archive(
                upload, max_images=settings.max_labeling_images, max_pixels=settings.max_image_pixels,
                max_expanded_bytes=settings.max_archive_expand_ratio * max(len(upload), 1))
        except labeling.LabelingInputError as exc:
            raise JobInputError(exc.field, exc.reason) from exc
        ext = labeling.archive_format(upload)
        spec.update(source="upload", upload_key=f"{prefix}input/upload.{ext}", members=members)
    else:
        members = _check_source_keys(storage, tenant_id, list(source_keys or []), settings)
        spec.update(source="keys", upload_key=None, members=members)
    n = len(members)
    job = Job(id=job_id, tenant_id=tenant_id, kind=KIND_LABELING, name=name, spec=spec, bundle=bundle,
              bundle_sha=loaded.sha, prefix=prefix, total_samples=n)
    shards = [labeling.shard_range(n, shard_size, s) for s in range((n + shard_size - 1) // shard_size)]
    job.shards = [ShardTask(shard=s, expected_samples=len(r)) for s, r in enumerate(shards)]
    job.total_shards = len(shards)
    try:
        if upload is not None:
            storage.put_bytes(spec["upload_key"], upload, content_type="application/octet-stream")
        session.add(job)
        session.commit()
    except BaseException:
        session.rollback()
        storage.delete_prefix(prefix)
        raise
    return job


def _check_source_keys(storage: Any, tenant_id: str, keys: list[str], settings: Settings) -> list[str]:
    """Keys must be the tenant's own objects, images by name, and exist; a foreign key reads as missing."""
    if not keys:
        raise JobInputError("source_keys", "list is empty")
    if len(keys) > settings.max_labeling_images:
        raise JobInputError("source_keys", f"{len(keys)} keys, more than the {settings.max_labeling_images} allowed")
    own = f"tenants/{tenant_id}/"
    for i, key in enumerate(keys):
        try:
            validate_key(key)
        except ValueError as exc:
            raise JobInputError(f"source_keys[{i}]", str(exc)) from exc
        if not key.startswith(own) or not storage.exists(key):
            raise JobInputError(f"source_keys[{i}]", f"no object {key!r}")
        if PurePosixPath(key).suffix.lower() not in labeling.IMAGE_EXTENSIONS:
            raise JobInputError(f"source_keys[{i}]", "not an image name (png, jpg, webp, bmp, tiff, gif)")
    return keys


# --- queueing ---


def enqueue(session: Session, job: Job, *, celery: Celery | None = None, settings: Settings | None = None) -> int:
    """Send a task for each shard of `job` that was never sent; returns how many were sent.

    Messages go to `celery`, else to the broker of `settings` (default: the environment's).

    The task id is committed *before* the message is sent, so a fast worker always finds it; if the
    broker refuses, the shard is marked unsent again and the reconciler retries later.
    """
    shards = session.scalars(
        select(ShardTask).where(ShardTask.job_id == job.id, ShardTask.status == SHARD_PENDING,
                                ShardTask.enqueued_at.is_(None))
    ).all()
    celery = celery or _celery(None, settings)
    return sum(send_shard(session, job.kind, s, celery=celery) for s in shards)


def send_shard(session: Session, kind: str, shard: ShardTask, *, celery: Celery | None = None,
               expect_task_id: str | None = None) -> bool:
    """Give `shard` a fresh task id and send it. Compare-and-set on the old id, so two reconcilers
    racing on one shard send it once. Returns whether a message went out."""
    task_id = new_id()
    old = expect_task_id if expect_task_id is not None else shard.task_id
    cond = ShardTask.task_id.is_(None) if old is None else ShardTask.task_id == old
    claimed = _rowcount(session.execute(
        update(ShardTask).where(ShardTask.job_id == shard.job_id, ShardTask.shard == shard.shard, cond)
        .values(task_id=task_id, enqueued_at=utcnow())
    ))
    session.commit()
    if not claimed:
        return False
    try:
        _celery(celery).send_task(SHARD_TASK[kind], args=[shard.job_id, shard.shard], task_id=task_id)
    except Exception:  # broker unreachable: the job record keeps the work, the reconciler resends
        log.warning("broker refused shard", extra={"job_id": shard.job_id, "shard": shard.shard}, exc_info=True)
        session.execute(update(ShardTask).where(ShardTask.job_id == shard.job_id, ShardTask.shard == shard.shard,
                                                ShardTask.task_id == task_id).values(enqueued_at=None))
        session.commit()
        return False
    return True


def send_finalize(session: Session, job_id: str, *, celery: Celery | None = None,
                  older_than: datetime | None = None) -> bool:
    """Send `finalize_job` once (or again when the last send is older than `older_than`)."""
    cond: ColumnElement[bool] = Job.finalize_enqueued_at.is_(None)
    if older_than is not None:
        cond = or_(cond, Job.finalize_enqueued_at < older_than)
    claimed = _rowcount(session.execute(update(Job).where(Job.id == job_id, cond).values(finalize_enqueued_at=utcnow())))
    session.commit()
    if not claimed:
        return False
    try:
        _celery(celery).send_task("worker.tasks.finalize_job", args=[job_id])
    except Exception:
        log.warning("broker refused finalize", extra={"job_id": job_id}, exc_info=True)
        session.execute(update(Job).where(Job.id == job_id).values(finalize_enqueued_at=None))
        session.commit()
        return False
    return True


def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE (a `CursorResult`; typed loosely by SQLAlchemy's stubs)."""
    return int(result.rowcount)


def _celery(celery: Celery | None, settings: Settings | None = None) -> Celery:
    if celery is not None:
        return celery
    from worker.celery_app import producer

    return producer(settings)


# --- reading ---


def get_job(session: Session, tenant_id: str, job_id: str, kind: str | None = None) -> Job | None:
    """The job if it belongs to `tenant_id` (and is of `kind`); None otherwise, so foreign ids look absent."""
    query = select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return session.scalars(query).first()


def list_jobs(session: Session, tenant_id: str, kind: str | None = None, limit: int = 100) -> list[Job]:
    """The tenant's jobs, newest first."""
    query = select(Job).where(Job.tenant_id == tenant_id).order_by(Job.created_at.desc()).limit(limit)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return list(session.scalars(query).all())


def job_progress(job: Job) -> dict[str, Any]:
    """Progress in samples and shards, ETA from the rate so far, and every error recorded."""
    shards = job.shards
    # Running shards report partial counts through their heartbeats, so progress moves within a shard.
    done_samples = sum(s.samples for s in shards if s.status in (SHARD_STORED, SHARD_RUNNING))
    done_shards = sum(1 for s in shards if s.status == SHARD_STORED)
    fraction = done_samples / job.total_samples if job.total_samples else 1.0
    eta_s: float | None = None
    if job.status in JOB_ACTIVE and job.started_at is not None and 0 < done_samples < job.total_samples:
        elapsed = (utcnow() - job.started_at).total_seconds()
        eta_s = round(elapsed * (job.total_samples - done_samples) / done_samples, 1)
    elif job.status not in JOB_ACTIVE:
        eta_s = 0.0
    errors = [f"shard {s.shard}: {s.error}" for s in shards if s.error]
    if job.error and job.error not in errors:
        errors.insert(0, job.error)
    return {
        "status": job.status,
        "samples": {"done": done_samples, "total": job.total_samples},
        "shards": {
            "done": done_shards,
            "total": job.total_shards,
            "running": sum(1 for s in shards if s.status == SHARD_RUNNING),
            "failed": sum(1 for s in shards if s.status == SHARD_FAILED),
        },
        "fraction": round(fraction, 4),
        "eta_s": eta_s,
        "error": job.error,
        "errors": errors,
        "redeliveries": sum(max(s.deliveries - 1, 0) for s in shards),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


# --- stopping ---


def cancel_job(session: Session, job: Job) -> Job:
    """Mark an active job cancelled; its running shards stop at their next check and store nothing."""
    if job.status in JOB_ACTIVE:
        job.status = JOB_CANCELLED
        job.finished_at = utcnow()
        job.error = job.error or "cancelled"
        session.commit()
    return job


def delete_job(session: Session, job: Job, *, settings: Settings | None = None) -> int:
    """Cancel `job`, delete all its objects and its rows; returns the number of objects deleted.

    A shard task still finishing deletes what it wrote once it sees the job gone (see worker.tasks).
    """
    settings = _settings(settings)
    cancel_job(session, job)
    try:
        deleted = get_storage(settings).delete_prefix(job.prefix)
    except StorageError:
        log.exception("deleting files failed; rows kept so the delete can be retried", extra={"job_id": job.id})
        raise
    session.delete(job)
    session.commit()
    return deleted

