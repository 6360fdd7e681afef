"""The broker goes away mid-job: a Redis server of the test's own (AOF on, fsync always) is restarted
while jobs run, and separately restarted with its data wiped. Jobs submitted while it is down are
still accepted (202: the job record is durable and the reconciler sends them later). Every accepted
job completes with each sample exactly once; after the wipe, through the reconciler's re-sends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.reliability.reliability_helpers import (
    RedisServer,
    check_dataset,
    dataset_body,
    start_stack,
    wait_status,
)
from tests.reliability.report import record
from worker.storage import LocalStorage

pytestmark = pytest.mark.reliability

COUNT, SHARD = 6 * 512, 512


@pytest.mark.parametrize("wipe", [False, True], ids=["restart", "wiped"])
def test_broker_restart_mid_job(tmp_path: Path, tiny_bundle_dir: Path, pg_url: str, redis_server: RedisServer,
                                wipe: bool) -> None:
    stack = start_stack(tmp_path, tiny_bundle_dir.parent, broker=redis_server.url(), database_url=pg_url)
    accepted: list[str] = []
    try:
        with stack.client() as http:
            def submit(i: int) -> None:
                r = http.post("/datasets", json=dataset_body(tiny_bundle_dir.name, COUNT, SHARD, name=f"b{i}", seed=i))
                assert r.status_code == 202, r.text
                accepted.append(r.json()["id"])

            for i in range(4):
                submit(i)
            wait_status(http, accepted[0], stack, until=lambda j: j["progress"]["shards"]["done"] >= 1)
            redis_server.stop()
            down_at = time.monotonic()
            if wipe:
                redis_server.wipe()
            for i in range(4, 6):  # accepted while the broker is down
                submit(i)
            time.sleep(max(0.0, 3 - (time.monotonic() - down_at)))
            redis_server.start()
            up_at = time.monotonic()
            final = [wait_status(http, j, stack, timeout_s=150) for j in accepted]
            recovered_s = time.monotonic() - up_at
            ready = http.get("/readyz").status_code
    finally:
        stack.stop()
    assert [j["status"] for j in final] == ["succeeded"] * len(accepted), [(j["status"], j["error"]) for j in final]
    storage = LocalStorage(Path(stack.env["LABELFORGE_DATA_DIR"]) / "storage")
    checks = []
    for job_id in accepted:
        scratch = tmp_path / f"read-{job_id}"
        scratch.mkdir()
        checks.append(check_dataset(storage, pg_url, job_id, COUNT, scratch=scratch))
    assert ready == 200
    name = "broker_wiped" if wipe else "broker_restart"
    what = ("restarted with its data (AOF) wiped" if wipe else "restarted gracefully (AOF on, fsync always)")
    record(name, f"the Redis broker {what} for 3 s while 4 dataset jobs ran; 2 more were accepted (202) while it "
           "was down; every accepted job succeeded with each sample exactly once"
           + (", the lost messages re-sent by the reconciler from the job records" if wipe else ""),
           jobs_accepted=len(accepted), jobs_succeeded=len(final), samples_expected=len(accepted) * COUNT,
           samples_found=sum(c.found for c in checks), samples_duplicated=sum(c.duplicated for c in checks),
           shard_starts=sum(c.deliveries for c in checks), shards=len(accepted) * (COUNT // SHARD),
           seconds_to_finish_after_broker_back=round(recovered_s, 2))


