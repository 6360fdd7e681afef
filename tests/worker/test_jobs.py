"""Job records and lifecycle on both databases: creation checks input before writing anything, jobs are
scoped to their tenant, a broker outage at enqueue is healed by the reconciler, progress adds up."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.spec import DatasetSpec
from tests.worker.worker_helpers import make_env, make_tenant
from worker.celery_app import make_celery
from worker.db import JOB_QUEUED, SHARD_PENDING, SHARD_STORED, Job, ShardTask, get_sessionmaker, utcnow
from worker.jobs import (
    JobInputError,
    create_dataset_job,
    enqueue,
    get_job,
    job_prefix,
    job_progress,
    list_jobs,
)
from worker.reconciler import reconcile_once
from worker.settings import Settings


def spec(bundle: str, over: dict | None = None) -> DatasetSpec:
    return DatasetSpec.model_validate({"name": "tiny", "bundle": bundle, "count": 10, "seed": 3, "shard_size": 4,
                                       **(over or {})})


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, tiny_bundle_dir: Path, use_env) -> Settings:
    db = request.getfixturevalue("pg_schema_url") if request.param == "postgresql" else None
    return use_env(make_env(tmp_path, tiny_bundle_dir.parent, broker="filesystem://", database_url=db))


def test_create_dataset_job_records_shards(settings: Settings, tiny_bundle_dir: Path, tiny_bundle) -> None:
    tenant = make_tenant(settings.database_url)
    with get_sessionmaker(settings.database_url)() as session:
        job = create_dataset_job(session, tenant, spec(tiny_bundle_dir.name))
    with get_sessionmaker(settings.database_url)() as session:
        stored = session.get(Job, job.id)
        assert stored is not None
        assert (stored.kind, stored.status, stored.total_samples, stored.total_shards) == ("dataset", JOB_QUEUED, 10, 3)
        assert stored.prefix == job_prefix(tenant, job.id) == f"tenants/{tenant}/jobs/{job.id}/"
        assert stored.bundle_sha == tiny_bundle.sha
        assert DatasetSpec.model_validate(stored.spec) == spec(tiny_bundle_dir.name)
        assert [(s.shard, s.expected_samples, s.status) for s in stored.shards] == [
            (0, 4, SHARD_PENDING), (1, 4, SHARD_PENDING), (2, 2, SHARD_PENDING)]
        assert stored.created_at.tzinfo is not None


def test_jobs_are_scoped_to_their_tenant(settings: Settings, tiny_bundle_dir: Path) -> None:
    alice, bob = make_tenant(settings.database_url), make_tenant(settings.database_url)
    with get_sessionmaker(settings.database_url)() as session:
        job = create_dataset_job(session, alice, spec(tiny_bundle_dir.name))
        assert get_job(session, alice, job.id) is not None
        assert get_job(session, alice, job.id, kind="labeling") is None
        assert get_job(session, bob, job.id) is None
        assert [j.id for j in list_jobs(session, alice)] == [job.id]
        assert list_jobs(session, bob) == []


@pytest.mark.parametrize(
    ("over", "field"),
    [({"bundle": "no-such-bundle"}, "bundle"), ({"count": 2_000_000, "shard_size": 1000}, "count"),
     ({"labels": {"no_such_field": {"fixed": 1.0}}}, "labels.no_such_field")],
)
def test_invalid_jobs_write_nothing(settings: Settings, tiny_bundle_dir: Path, over: dict, field: str) -> None:
    tenant = make_tenant(settings.database_url)
    with get_sessionmaker(settings.database_url)() as session:
        with pytest.raises(JobInputError) as info:
            create_dataset_job(session, tenant, spec(tiny_bundle_dir.name, over))
        assert info.value.field == field
        assert session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant)) == 0
        assert session.scalar(select(func.count()).select_from(ShardTask).join(Job).where(Job.tenant_id == tenant)) == 0


def test_broker_outage_at_enqueue_is_healed_by_reconciler(settings: Settings, tiny_bundle_dir: Path) -> None:
    """The job record outlives a dead broker: shards stay unsent, then the reconciler sends them."""
    tenant = make_tenant(settings.database_url)
    dead = make_celery(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    with get_sessionmaker(settings.database_url)() as session:
        job = create_dataset_job(session, tenant, spec(tiny_bundle_dir.name))
        assert enqueue(session, job, celery=dead) == 0
        assert all(s.enqueued_at is None for s in session.scalars(select(ShardTask).where(ShardTask.job_id == job.id)))
    report = reconcile_once(settings, celery=make_celery(settings))
    assert report.sent_unsent >= 3
    queued = [p for p in (settings.broker_dir / "queue").iterdir() if job.id in p.read_text()]
    assert len(queued) == 3  # this job's three messages, now in the embedded broker's folder
    with get_sessionmaker(settings.database_url)() as session:
        rows = session.scalars(select(ShardTask).where(ShardTask.job_id == job.id)).all()
        assert all(r.task_id and r.enqueued_at for r in rows)
    assert reconcile_once(settings, celery=make_celery(settings)).sent_unsent == 0  # nothing sent twice


def test_job_progress_counts_and_eta(settings: Settings, tiny_bundle_dir: Path) -> None:
    tenant = make_tenant(settings.database_url)
    with get_sessionmaker(settings.database_url)() as session:
        job = create_dataset_job(session, tenant, spec(tiny_bundle_dir.name))
        job.status, job.started_at = "running", utcnow()
        first = job.shards[0]
        first.status, first.samples, first.deliveries = SHARD_STORED, 4, 2
        job.shards[2].error = "boom"
        session.commit()
        progress = job_progress(job)
    assert progress["samples"] == {"done": 4, "total": 10}
    assert progress["shards"]["done"] == 1 and progress["shards"]["total"] == 3
    assert progress["fraction"] == 0.4
    assert progress["eta_s"] is not None and progress["eta_s"] >= 0
    assert progress["errors"] == ["shard 2: boom"]
    assert progress["redeliveries"] == 1
