"""A poison shard on the distributed stack, and an API crash in the middle of running jobs.

Poison: two workers on Redis, every start of shard 1 kills its pool process. The shard is started at
most three times across the fleet, then the job fails and the API names the shard; afterwards nothing
is redelivered (the queue and Redis' unacked set stay empty). tests/worker covers the same on the
embedded broker with one worker.

API restart: the API process is SIGKILLed while jobs run and started again on the same port; the
workers go on meanwhile, and the restarted API reports the right status, counts and shards.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from tests.reliability.reliability_helpers import (
    RedisServer,
    Stack,
    dataset_body,
    start_stack,
    wait_status,
)
from tests.reliability.report import record
from worker.db import Job, ShardTask, get_sessionmaker

pytestmark = pytest.mark.reliability


def test_poison_shard_tried_three_times_then_job_fails(tmp_path: Path, tiny_bundle_dir: Path, pg_url: str,
                                                       redis_server: RedisServer) -> None:
    stack = start_stack(tmp_path, tiny_bundle_dir.parent, broker=redis_server.url(), database_url=pg_url,
                        crash_shard="1")
    try:
        with stack.client() as http:
            started = time.monotonic()
            created = http.post("/datasets", json=dataset_body(tiny_bundle_dir.name, 4 * 256, 256))
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            job = wait_status(http, job_id, stack, timeout_s=90)
            failed_after_s = time.monotonic() - started
            assert job["status"] == "failed"
            assert "shard 1" in job["error"] and "3 times" in job["error"], job["error"]
            assert job["progress"]["shards"]["failed"] == 1
            time.sleep(3)  # long enough for several reconciler passes and broker redeliveries, were any left
            again = http.get(f"/datasets/{job_id}").json()
        with get_sessionmaker(pg_url)() as session:
            poison = session.get(ShardTask, (job_id, 1))
            deliveries = poison.deliveries
        starts = sum(w.log().count(f"shard started [job {job_id} shard 1 ") for w in stack.fleet.workers)
        broker = redis.Redis.from_url(redis_server.url())
        queued, unacked = broker.llen("gpu"), broker.hlen("unacked")
    finally:
        stack.stop()
    assert deliveries == 3 and starts == 3, (deliveries, starts)
    assert again["status"] == "failed" and again["progress"]["redeliveries"] == job["progress"]["redeliveries"]
    assert queued == 0, queued  # nothing waiting to run it again
    record("poison_shard", "a shard that kills its pool process on every start, on Redis with two workers: "
           "started 3 times across the fleet, then the job fails naming the shard; 3 s later nothing was "
           "redelivered and the queue and unacked set are empty", poison_starts=starts,
           retries=deliveries - 1, seconds_to_fail=round(failed_after_s, 2), error=job["error"],
           queued_after=queued, unacked_after=unacked)


def _done_samples(database_url: str, job_ids: list[str]) -> int:
    with get_sessionmaker(database_url)() as session:
        return sum(session.get(Job, j).done_samples for j in job_ids)


def test_api_crash_mid_job_jobs_go_on(tmp_path: Path, tiny_bundle_dir: Path, pg_url: str,
                                      redis_server: RedisServer) -> None:
    stack: Stack = start_stack(tmp_path, tiny_bundle_dir.parent, broker=redis_server.url(), database_url=pg_url)
    count, shard = 8 * 512, 512
    try:
        with stack.client() as http:
            ids = []
            for i in range(3):
                created = http.post("/datasets", json=dataset_body(tiny_bundle_dir.name, count, shard, name=f"r{i}"))
                assert created.status_code == 202, created.text
                ids.append(created.json()["id"])
            wait_status(http, ids[0], stack, until=lambda j: j["progress"]["shards"]["done"] >= 1)
        before = _done_samples(pg_url, ids)
        stack.crash_api()
        crashed = time.monotonic()
        time.sleep(3)
        during = _done_samples(pg_url, ids)
        stack.restart_api()
        down_s = time.monotonic() - crashed
        with stack.client() as http:
            first = [http.get(f"/datasets/{j}").json() for j in ids]
            with get_sessionmaker(pg_url)() as session:  # what the restarted API said vs the job records
                for job in first:
                    record_ = session.get(Job, job["id"])
                    assert job["status"] in (record_.status, "succeeded")
            final = [wait_status(http, j, stack, timeout_s=120) for j in ids]
            shards = [http.get(f"/datasets/{j}/shards").json() for j in ids]
            manifests = [http.get(f"/datasets/{j}/manifest").json() for j in ids]
    finally:
        stack.stop()
    assert during > before, "workers stopped while the API was down"
    assert [j["status"] for j in final] == ["succeeded"] * 3, final
    assert all(j["progress"]["samples"] == {"done": count, "total": count} for j in final)
    assert all(s["count"] == len(s["items"]) == count // shard for s in shards), shards
    assert all(m["count"] == count for m in manifests)
    record("api_restart", "API SIGKILLed while 3 dataset jobs ran, restarted on the same port: the workers "
           "went on meanwhile and the restarted API reports every job succeeded with the right counts, "
           "shards and manifest", jobs=3, samples_expected=3 * count,
           samples_found=sum(j["progress"]["samples"]["done"] for j in final), api_down_s=round(down_s, 2),
           samples_done_while_api_down=during - before)
