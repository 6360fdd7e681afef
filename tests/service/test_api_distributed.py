"""The distributed shape: uvicorn + a `labelforge worker` on Redis, moto's S3 server and PostgreSQL;
and `/readyz` following a Redis server this test owns."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import webdataset as wds
from service_helpers import FAST, Proc, Server, free_port, start_api, wait_job

from service.client import Client


def test_dataset_through_presigned_urls_on_s3_and_postgres(distributed: Server, tmp_path: Path) -> None:
    spec = {"name": "s3-demo", "bundle": "tiny-digits", "count": 20, "shard_size": 10, "seed": 5,
            "image": {"format": "jpg"}}
    with Client(distributed.url, distributed.keys[0]) as lf:
        job = lf.create_dataset(spec)
        lf.wait(job["id"], timeout_s=90, progress=False)
        shards = lf.shards(job["id"])
        assert len(shards) == 2 and all(s["presigned"] and s["expires_s"] <= 3600 for s in shards)
        assert all(s["url"].startswith("http://127.0.0.1") and "X-Amz-Signature" in s["url"] for s in shards)
        paths = lf.download_shards(job["id"], tmp_path)
    anonymous = httpx.get(shards[0]["url"])  # a presigned URL needs no API key...
    assert anonymous.status_code == 200 and anonymous.content == paths[0].read_bytes()
    with distributed.client(0) as http:  # ...and the API's own shard URL redirects to one
        redirect = http.get(f"/datasets/{job['id']}/shards/{shards[0]['file']}")
        assert redirect.status_code == 307 and "X-Amz-Signature" in redirect.headers["location"]
        assert http.get("/readyz").json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok",
                                                                          "storage": "ok"}}
    samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode("l8"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(20)]
    assert all(s["jpg"].shape == (16, 16) and s["labels.npy"].shape == (16,) for s in samples)
    with distributed.client(1) as other:  # tenant isolation holds on PostgreSQL too
        assert other.get(f"/datasets/{job['id']}/shards").status_code == 404


def test_delete_on_s3_removes_every_object(distributed: Server, moto_s3: dict[str, str]) -> None:
    from minio import Minio

    s3 = Minio(moto_s3["LABELFORGE_S3_ENDPOINT"], moto_s3["LABELFORGE_S3_ACCESS_KEY"],
               moto_s3["LABELFORGE_S3_SECRET_KEY"], secure=False, region="us-east-1")
    with distributed.client(1) as b:
        job = b.post("/datasets", json={"name": "gone", "bundle": "tiny-digits", "count": 10, "shard_size": 5}).json()
        wait_job(b, "datasets", job["id"], distributed)

        def objects() -> list[str]:
            return [o.object_name for o in s3.list_objects(moto_s3["LABELFORGE_S3_BUCKET"], recursive=True)
                    if job["id"] in o.object_name]

        stored = objects()
        assert len(stored) >= 3  # two shards + manifest (+ card)
        assert b.delete(f"/datasets/{job['id']}").json()["deleted_objects"] == len(stored)
        assert objects() == [] and b.get(f"/datasets/{job['id']}").status_code == 404


@pytest.fixture
def own_redis(tmp_path: Path) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    yield port, proc
    proc.kill()
    proc.wait()


def test_readyz_turns_unready_while_redis_is_stopped(own_redis, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, redis_proc = own_redis
    env = {**FAST, "LABELFORGE_DATA_DIR": str(tmp_path / "data"), "LABELFORGE_BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp_path}/data/db.sqlite",
           "LABELFORGE_BUNDLES_DIR": str(tmp_path / "bundles")}
    url, api = start_api(env, tmp_path / "api.log")
    try:
        def ready() -> httpx.Response:
            return httpx.get(f"{url}/readyz", timeout=10)

        assert ready().status_code == 200
        redis_proc.terminate()
        redis_proc.wait()
        down = ready()
        assert down.status_code == 503
        checks = down.json()["checks"]
        assert checks["broker"].startswith("error") and checks["database"] == checks["storage"] == "ok"
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive, just not ready
        restarted = Proc(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], {},
                         tmp_path / "redis.log")
        try:
            deadline = time.monotonic() + 10
            while ready().status_code != 200:
                assert time.monotonic() < deadline, "still unready after Redis came back"
                time.sleep(0.2)
        finally:
            restarted.stop()
    finally:
        api.stop()


def test_metrics_add_up_across_api_processes(tmp_path: Path) -> None:
    prom = tmp_path / "prom"
    prom.mkdir()
    env = {**FAST, "LABELFORGE_DATA_DIR": str(tmp_path / "data"), "PROMETHEUS_MULTIPROC_DIR": str(prom),
           "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp_path}/data/db.sqlite",
           "LABELFORGE_BUNDLES_DIR": str(tmp_path / "bundles")}
    url, api = start_api(env, tmp_path / "api.log", workers=2)
    line = 'labelforge_http_requests_total{method="GET",route="/healthz",status="200"}'

    def healthz_count() -> float:
        return float(httpx.get(f"{url}/metrics").text.split(line, 1)[1].split()[0])

    try:
        before = healthz_count()  # the startup probe's requests
        for _ in range(20):  # a fresh connection each time, so both processes take some
            httpx.get(f"{url}/healthz")
        counts = {healthz_count() for _ in range(6)}  # whichever process answers the scrape
        pids = {p.name.split("_")[-1] for p in prom.glob("counter_*.db")}
    finally:
        api.stop()
    assert len(pids) == 2  # both processes served and wrote their counters
    assert counts == {before + 20}
