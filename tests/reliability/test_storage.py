"""Storage failures mid-job.

Outage: the S3 endpoint (moto's server behind a TCP proxy) goes off the network for 10 s while a job
runs. Shard tasks hit connection errors, retry with backoff, and the job completes with every sample
once and byte-identical shards; a watcher listing the bucket directly throughout sees no partial
object; and no shard start is taken for a crash (each start ends stored or released for a retry). (moto keeps objects only in memory, so the proxy is what stops: stopping moto itself would
also erase the bucket, which no real S3 outage does.)

Full disk: local storage on a 3 MiB tmpfs that holds one shard but not two. The job fails at once with
"storage full" in its error (the real ENOSPC path of the kernel, not a quota emulation), the API says
so, and storage holds only complete shards: no partial shard, no manifest, no leftover temp bytes.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.engine import generate_shards
from models.runtime import Bundle
from models.spec import DatasetSpec
from tests.reliability.reliability_helpers import (
    RedisServer,
    StorageWatcher,
    TcpProxy,
    check_dataset,
    dataset_body,
    start_stack,
    wait_status,
)
from tests.reliability.report import record
from tests.service.service_helpers import BIN, Proc, free_port, wait_http
from worker.db import Job, get_sessionmaker
from worker.storage import LocalStorage, S3Storage

pytestmark = pytest.mark.reliability

BUCKET, ACCESS, SECRET = "rel-outage", "rel-access-key", "rel-secret-key-0123456789"


def reference_sha(bundle_dir: Path, body: dict, tmp: Path) -> dict[str, str]:
    """Shard hashes of an undisturbed in-process run of the same spec."""
    spec = DatasetSpec.model_validate(body)
    infos = generate_shards(spec, Bundle.load(bundle_dir, engine="onnx", device="cpu"), LocalStorage(tmp), "ref/",
                            range(spec.num_shards))
    return {i.file: i.sha256 for i in infos}


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    proc = Proc([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], {}, tmp_path / "moto.log")
    wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, timeout_s=30)
    S3Storage(BUCKET, endpoint=f"127.0.0.1:{port}", access_key=ACCESS, secret_key=SECRET, secure=False,
              region="us-east-1").client.make_bucket(BUCKET)
    yield port
    proc.stop()


def test_s3_outage_of_10s_mid_job(tmp_path: Path, tiny_bundle_dir: Path, pg_url: str, redis_server: RedisServer,
                                  moto: int) -> None:
    proxy = TcpProxy(moto)
    s3_env = {"LABELFORGE_S3_ENDPOINT": f"127.0.0.1:{proxy.port}", "LABELFORGE_S3_ACCESS_KEY": ACCESS,
              "LABELFORGE_S3_SECRET_KEY": SECRET, "LABELFORGE_S3_BUCKET": BUCKET, "LABELFORGE_S3_SECURE": "false"}
    body = dataset_body(tiny_bundle_dir.name, 8 * 512, 512, name="outage")
    expected = reference_sha(tiny_bundle_dir, body, tmp_path / "ref")
    direct = S3Storage(BUCKET, endpoint=f"127.0.0.1:{moto}", access_key=ACCESS, secret_key=SECRET, secure=False,
                       region="us-east-1")
    stack = start_stack(tmp_path, tiny_bundle_dir.parent, broker=redis_server.url(), database_url=pg_url,
                        extra_env=s3_env)
    watcher = StorageWatcher(direct, "tenants/", expected, interval_s=0.05)
    watcher.start()
    try:
        with stack.client() as http:
            created = http.post("/datasets", json=body)
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            wait_status(http, job_id, stack, until=lambda j: j["progress"]["shards"]["done"] >= 1)
            proxy.down()
            time.sleep(10)
            proxy.up()
            back_at = time.monotonic()
            job = wait_status(http, job_id, stack, timeout_s=180)
            recover_s = time.monotonic() - back_at
        report = watcher.stop()
    finally:
        stack.stop()
        proxy.down()
    assert job["status"] == "succeeded", job
    with get_sessionmaker(pg_url)() as session:
        rows = session.get(Job, job_id).shards
        retries = sum(s.attempts for s in rows)
        starts = sum(s.deliveries for s in rows)
    retry_logs = sum(w.log().count("transient storage error; retrying") for w in stack.fleet.workers)
    check = check_dataset(direct, pg_url, job_id, 8 * 512, reference_sha=expected, scratch=tmp_path)
    assert retries >= 1 and retry_logs >= 1, "no shard met the outage"
    # Every start ended stored or released for a retry: none was taken for a crash (a shard blocked in
    # the S3 client keeps heartbeating, so the reconciler never starts a second copy of it).
    assert starts == len(rows) + retries, (starts, len(rows), retries)
    assert report.partial == [] and report.unexpected == [], report
    record("storage_outage", "the S3 endpoint refused connections for 10 s mid-job: shard tasks retried with "
           "backoff and the job succeeded with every sample once, shards byte-identical to an undisturbed run; "
           "the bucket, listed directly throughout, never showed a partial object",
           outage_s=10, retries=retries, retry_log_lines=retry_logs, shard_starts=starts, shards=len(rows),
           starts_counted_as_crashes=starts - len(rows) - retries,
           samples_expected=check.expected, samples_found=check.found, samples_duplicated=check.duplicated,
           seconds_to_finish_after_outage=round(recover_s, 2), storage_listings=report.listings,
           partial_objects_seen=len(report.partial))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (real ENOSPC from the kernel); skipped where mounting is not permitted."""
    mount = tmp_path / "data" / "storage"
    mount.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_job_clearly(tmp_path: Path, tiny_bundle_dir: Path, pg_url: str, redis_server: RedisServer,
                                     small_fs: Path) -> None:
    body = dataset_body(tiny_bundle_dir.name, 4 * 512, 512, name="full")  # ~2.1 MB per shard: one fits
    expected = reference_sha(tiny_bundle_dir, body, tmp_path / "ref")
    stack = start_stack(tmp_path, tiny_bundle_dir.parent, broker=redis_server.url(), database_url=pg_url,
                        workers=1)
    storage = LocalStorage(small_fs)
    try:
        with stack.client() as http:
            started = time.monotonic()
            created = http.post("/datasets", json=body)
            assert created.status_code == 202, created.text
            job = wait_status(http, created.json()["id"], stack, timeout_s=60)
            failed_after_s = time.monotonic() - started
            time.sleep(1)  # a shard still in flight must not leave anything either
            listed = http.get(f"/datasets/{job['id']}/shards").json()
    finally:
        stack.stop()
    assert job["status"] == "failed", job
    assert "storage full" in job["error"] and "No space left on device" in job["error"], job["error"]
    keys = storage.list("")
    tars = [k for k in keys if k.endswith(".tar")]
    assert not any(k.endswith("manifest.json") for k in keys)
    for key in tars:  # whatever is visible is a complete shard, identical to the undisturbed run's
        assert hashlib.sha256(storage.get_bytes(key)).hexdigest() == expected[key.rsplit("/", 1)[-1]]
    assert list((small_fs / ".labelforge-tmp").iterdir()) == []  # no half-written bytes left eating the disk
    assert listed["count"] == len(tars)
    record("full_disk", "local storage on a 3 MiB tmpfs (kernel ENOSPC) that fits one 2.1 MB shard of four: the "
           "job fails at once, its API status says 'storage full ... No space left on device', storage holds "
           "only complete shards (byte-identical to an undisturbed run), no manifest and no temp leftovers",
           seconds_to_fail=round(failed_after_s, 2), error=job["error"], complete_shards_left=len(tars),
           partial_objects_seen=0, filesystem="tmpfs size=3m (mounted by the test as root)")
