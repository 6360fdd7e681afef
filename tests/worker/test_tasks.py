"""Dataset jobs through real `labelforge worker` subprocesses: on Redis and on the embedded folder broker
they complete with the right shards and the manifest last; shards are idempotent; a poison shard is
tried three times; a worker killed mid-shard is replaced through the reconciler long before the
broker's visibility timeout; cancel stops work and delete leaves nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import webdataset as wds
from sqlalchemy import func, select

from models.engine import generate_shards
from models.spec import DatasetSpec
from tests.worker.worker_helpers import REDIS_URL, make_env, make_tenant, wait_for_job
from worker.db import (
    JOB_CANCELLED,
    JOB_FAILED,
    JOB_SUCCEEDED,
    SHARD_PENDING,
    SHARD_RUNNING,
    SHARD_STORED,
    Job,
    ShardTask,
    get_sessionmaker,
)
from worker.jobs import cancel_job, create_dataset_job, delete_job, enqueue, get_job
from worker.settings import Settings
from worker.storage import LocalStorage
from worker.tasks import generate_shard


def make_spec(bundle: str, count: int = 12, shard_size: int = 4, name: str = "tiny") -> DatasetSpec:
    return DatasetSpec.model_validate({"name": name, "bundle": bundle, "count": count, "seed": 5,
                                       "shard_size": shard_size, "image": {"format": "png"}})


def submit(settings: Settings, spec: DatasetSpec) -> str:
    tenant = make_tenant(settings.database_url)
    with get_sessionmaker(settings.database_url)() as session:
        job = create_dataset_job(session, tenant, spec)
        enqueue(session, job)
        return job.id


def check_dataset(settings: Settings, job: Job, spec: DatasetSpec) -> dict:
    """Every shard stored, the manifest written after all of them, each sample present exactly once."""
    storage = LocalStorage(settings.storage_root)
    keys = storage.list(job.prefix)
    shard_keys = [k for k in keys if k.endswith(".tar")]
    assert len(shard_keys) == spec.num_shards
    manifest_key = f"{job.prefix}manifest.json"
    assert manifest_key in keys
    manifest_mtime = storage.local_path(manifest_key).stat().st_mtime_ns
    assert all(storage.local_path(k).stat().st_mtime_ns <= manifest_mtime for k in keys)
    manifest = json.loads(storage.get_bytes(manifest_key))
    assert manifest["count"] == spec.count and len(manifest["shards"]) == spec.num_shards
    samples = list(wds.WebDataset([str(storage.local_path(k)) for k in shard_keys], shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(spec.count)]
    assert job.done_samples == spec.count and job.done_shards == spec.num_shards
    return manifest


def test_dataset_job_on_redis_worker_with_postgres(tmp_path: Path, tiny_bundle_dir: Path, pg_schema_url: str,
                                                   redis_broker: str, use_env, start_worker) -> None:
    env = make_env(tmp_path, tiny_bundle_dir.parent, broker=redis_broker, database_url=pg_schema_url)
    settings = use_env(env)
    worker = start_worker(env)
    spec = make_spec(tiny_bundle_dir.name)
    job = wait_for_job(settings.database_url, submit(settings, spec), timeout_s=60, workers=[worker])
    assert job.status == JOB_SUCCEEDED, job.error
    check_dataset(settings, job, spec)


def test_dataset_job_on_embedded_broker_with_sqlite(tmp_path: Path, tiny_bundle_dir: Path, use_env,
                                                    start_worker) -> None:
    env = make_env(tmp_path, tiny_bundle_dir.parent, broker="filesystem://")
    settings = use_env(env)
    worker = start_worker(env)
    spec = make_spec(tiny_bundle_dir.name)
    job = wait_for_job(settings.database_url, submit(settings, spec), timeout_s=60, workers=[worker])
    assert job.status == JOB_SUCCEEDED, job.error
    assert all(s.deliveries == 1 for s in job.shards)
    check_dataset(settings, job, spec)


def test_generate_shard_twice_writes_identical_bytes(tmp_path: Path, tiny_bundle_dir: Path, use_env) -> None:
    """Running a shard again (a redelivery after a crash past the upload) rewrites the same bytes in place."""
    settings = use_env(make_env(tmp_path, tiny_bundle_dir.parent, broker="filesystem://"))
    job_id = submit(settings, make_spec(tiny_bundle_dir.name, count=8, shard_size=4))
    storage = LocalStorage(settings.storage_root)
    maker = get_sessionmaker(settings.database_url)

    def run_shard_0() -> ShardTask:
        with maker() as session:
            task_id = session.get(ShardTask, (job_id, 0)).task_id
        generate_shard.apply(args=[job_id, 0], task_id=task_id)
        with maker() as session:
            return session.get(ShardTask, (job_id, 0))

    first = run_shard_0()
    assert first.status == SHARD_STORED and first.samples == 4
    key = first.key
    data = storage.get_bytes(key)
    with maker() as session, session.begin():  # as if the worker died after the upload, before recording it
        session.get(ShardTask, (job_id, 0)).status = SHARD_PENDING
    second = run_shard_0()
    assert second.status == SHARD_STORED and second.sha256 == first.sha256
    assert storage.get_bytes(key) == data
    third = run_shard_0()  # already stored: a no-op
    assert third.deliveries == second.deliveries == 2
    with maker() as session:
        job = session.get(Job, job_id)
        assert [k for k in storage.list(job.prefix) if k.endswith(".tar")] == [key]
        assert job.done_shards == 1 and job.done_samples == 4


def test_poison_shard_is_tried_three_times_then_fails_job(tmp_path: Path, tiny_bundle_dir: Path, use_env,
                                                          start_worker, record_property) -> None:
    env = make_env(tmp_path, tiny_bundle_dir.parent, broker="filesystem://")
    settings = use_env(env)
    worker = start_worker(env, crash_shard="1")  # shard 1 kills its pool process every time
    started = time.monotonic()
    job = wait_for_job(settings.database_url, submit(settings, make_spec(tiny_bundle_dir.name)), timeout_s=60,
                       workers=[worker])
    record_property("poison_fail_s", round(time.monotonic() - started, 2))
    assert job.status == JOB_FAILED
    assert "shard 1" in job.error and "3 times" in job.error and "giving up" in job.error
    poison = next(s for s in job.shards if s.shard == 1)
    assert poison.deliveries == 3
    time.sleep(2)  # nothing keeps looping after the failure
    with get_sessionmaker(settings.database_url)() as session:
        assert session.get(ShardTask, (job.id, 1)).deliveries == 3
    assert worker.log().count(f"shard started [job {job.id} shard 1 ") == 3  # ran 3 times, refused the 4th


def test_reconciler_replaces_a_killed_worker(tmp_path: Path, tiny_bundle_dir: Path, redis_broker: str, use_env,
                                             start_worker, record_property) -> None:
    """SIGKILL a whole worker mid-shard: its Redis message stays unacked for the hour-long visibility
    timeout, but the reconciler re-sends the shard after ~3 s and a second worker finishes the job."""
    env = make_env(tmp_path, tiny_bundle_dir.parent, broker=REDIS_URL, visibility_timeout_s="3600")
    settings = use_env(env)
    spec = make_spec(tiny_bundle_dir.name)
    first = start_worker(env, sleep_s="1.5")
    job_id = submit(settings, spec)
    wait_for_job(settings.database_url, job_id, timeout_s=40, workers=[first],
                 until=lambda j: any(s.status == SHARD_RUNNING for s in j.shards))
    first.kill()
    killed_at = time.monotonic()
    with get_sessionmaker(settings.database_url)() as session:  # what the dead worker left half done
        victims = session.scalars(select(ShardTask.shard).where(ShardTask.job_id == job_id,
                                                                ShardTask.status == SHARD_RUNNING)).all()
    assert len(victims) == 1
    second = start_worker(env, sleep_s="0.2")
    job = wait_for_job(settings.database_url, job_id, timeout_s=60, workers=[first, second])
    recovery_s = time.monotonic() - killed_at
    record_property("recovery_s", round(recovery_s, 2))
    assert job.status == JOB_SUCCEEDED, job.error
    assert recovery_s < 30  # 3 s deadline + a worker start, far below the 3600 s visibility timeout
    assert next(s for s in job.shards if s.shard == victims[0]).deliveries == 2
    manifest = check_dataset(settings, job, spec)
    # Byte-identical to an undisturbed in-process run of the same spec.
    from worker.resources import get_bundle

    reference = generate_shards(spec, get_bundle(settings, spec.bundle), LocalStorage(tmp_path / "ref"), "ref/",
                                range(spec.num_shards))
    assert [s["sha256"] for s in manifest["shards"]] == [r.sha256 for r in reference]


def test_cancel_stops_work_and_delete_leaves_nothing(tmp_path: Path, tiny_bundle_dir: Path, use_env,
                                                     start_worker) -> None:
    env = make_env(tmp_path, tiny_bundle_dir.parent, broker="filesystem://")
    settings = use_env(env)
    worker = start_worker(env, sleep_s="1")
    job_id = submit(settings, make_spec(tiny_bundle_dir.name, count=24, shard_size=3))
    wait_for_job(settings.database_url, job_id, timeout_s=40, workers=[worker],
                 until=lambda j: any(s.status == SHARD_STORED for s in j.shards))
    maker = get_sessionmaker(settings.database_url)
    with maker() as session:
        job = session.get(Job, job_id)
        cancel_job(session, job)
    time.sleep(2.5)  # long enough for more shards, had the work not stopped
    storage = LocalStorage(settings.storage_root)
    with maker() as session:
        job = session.get(Job, job_id)
        assert job.status == JOB_CANCELLED
        stored = [s for s in job.shards if s.status == SHARD_STORED]
        assert len(stored) <= 3  # the one(s) done at the cancel, at most one more in flight
        assert any(s.deliveries == 0 for s in job.shards)  # later shards never started
        assert not storage.exists(f"{job.prefix}manifest.json")
        tenant = job.tenant_id
        objects = storage.list(job.prefix)
        assert objects  # the stored shards are there until the delete
        assert delete_job(session, job) == len(objects)
        assert get_job(session, tenant, job_id) is None
        assert session.scalar(select(func.count()).select_from(ShardTask).where(ShardTask.job_id == job_id)) == 0
    time.sleep(1.5)  # a task still finishing must not leave anything behind
    assert storage.list(f"tenants/{tenant}/") == []


def test_reconciler_resends_shards_the_broker_lost(tmp_path: Path, tiny_bundle_dir: Path, redis_broker: str,
                                                   use_env, start_worker) -> None:
    """Redis restarted without its data: the queued messages are gone, the job records are not."""
    import redis

    env = make_env(tmp_path, tiny_bundle_dir.parent, broker=redis_broker)
    settings = use_env(env)
    spec = make_spec(tiny_bundle_dir.name)
    job_id = submit(settings, spec)
    assert redis.Redis.from_url(redis_broker).llen("gpu") == spec.num_shards
    redis.Redis.from_url(redis_broker).flushdb()
    worker = start_worker(env)
    job = wait_for_job(settings.database_url, job_id, timeout_s=40, workers=[worker])
    assert job.status == JOB_SUCCEEDED, job.error
    assert all(s.deliveries == 1 for s in job.shards)  # each shard ran once, from the reconciler's message
    check_dataset(settings, job, spec)
