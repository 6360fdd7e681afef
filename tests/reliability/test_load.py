"""Load on loopback: /predict under 64 concurrent clients for 60 s (no errors; p50/p99 recorded), and 20
datasets submitted at once by 4 tenants (all complete with the right counts, each tenant sees only its
own). `LABELFORGE_REL_LOAD_S` shortens the predict run when trying things out."""

from __future__ import annotations

import asyncio
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.reliability.reliability_helpers import (
    API_KEYS,
    RedisServer,
    check_dataset,
    dataset_body,
    fleet_env,
    start_api_on,
    start_stack,
    wait_status,
)
from tests.reliability.report import record
from worker.db import init_db, make_engine
from worker.storage import LocalStorage

pytestmark = pytest.mark.reliability

CLIENTS = 64
DURATION_S = float(os.environ.get("LABELFORGE_REL_LOAD_S", "60"))


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


async def hammer(url: str, key: str, bundle: str, image: bytes) -> tuple[list[float], list[str]]:
    """`CLIENTS` clients posting /predict back to back for `DURATION_S`; latencies (ms) and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + DURATION_S

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                r = await http.post("/predict", params={"bundle": bundle},
                                    files={"files": ("x.png", image, "image/png")})
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if r.status_code != 200 or len(r.json()["predictions"]) != 1:
                errors.append(f"{r.status_code}: {r.text[:200]}")
            latencies.append((time.perf_counter() - t0) * 1000)

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return latencies, errors


def test_predict_64_clients_60s(tmp_path: Path, tiny_bundle_dir: Path, pg_url: str,
                                redis_server: RedisServer) -> None:
    env = {**fleet_env(tmp_path, tiny_bundle_dir.parent, broker=redis_server.url(), database_url=pg_url),
           "LABELFORGE_API_KEYS": ",".join(API_KEYS)}
    init_db(make_engine(pg_url))
    url, api = start_api_on(env, tmp_path / "api.log")
    try:
        started = time.monotonic()
        latencies, errors = asyncio.run(hammer(url, API_KEYS[0], tiny_bundle_dir.name, png(0)))
        elapsed = time.monotonic() - started
        alive = api.proc.poll() is None
    finally:
        api.stop()
    assert alive and errors == [], errors[:5]
    assert len(latencies) > CLIENTS
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
    record("load_predict", f"{CLIENTS} concurrent clients posting one 16x16 PNG to /predict for {DURATION_S:.0f} s "
           "through uvicorn on loopback (tiny digits bundle, CPU): no errors", clients=CLIENTS,
           duration_s=round(elapsed, 1), requests=len(latencies), errors=len(errors),
           p50_ms=round(p50, 1), p99_ms=round(p99, 1), rps=round(len(latencies) / elapsed, 1),
           load_avg=os.getloadavg()[0])


def test_20_datasets_from_4_tenants_at_once(tmp_path: Path, tiny_bundle_dir: Path, pg_url: str,
                                            redis_server: RedisServer) -> None:
    count, shard = 4 * 256, 256
    stack = start_stack(tmp_path, tiny_bundle_dir.parent, broker=redis_server.url(), database_url=pg_url)
    try:
        def submit(n: int) -> tuple[int, str]:
            tenant = n % 4
            with stack.client(tenant) as http:
                r = http.post("/datasets", json=dataset_body(tiny_bundle_dir.name, count, shard, name=f"t{tenant}-{n}",
                                                             seed=n))
                assert r.status_code == 202, r.text
                return tenant, r.json()["id"]

        started = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            jobs = list(pool.map(submit, range(20)))
        finals = []
        for tenant, job_id in jobs:
            with stack.client(tenant) as http:
                finals.append(wait_status(http, job_id, stack, timeout_s=300))
        elapsed = time.monotonic() - started
        listed, foreign = {}, []
        for tenant in range(4):
            with stack.client(tenant) as http:
                listed[tenant] = {j["id"] for j in http.get("/datasets").json()["items"]}
                foreign += [http.get(f"/datasets/{j}").status_code for t, j in jobs if t != tenant]
    finally:
        stack.stop()
    assert [f["status"] for f in finals] == ["succeeded"] * 20, [(f["status"], f["error"]) for f in finals]
    for tenant in range(4):
        assert listed[tenant] == {j for t, j in jobs if t == tenant}
    assert set(foreign) == {404}
    storage = LocalStorage(Path(stack.env["LABELFORGE_DATA_DIR"]) / "storage")
    found = duplicated = 0
    for _tenant, job_id in jobs:
        scratch = tmp_path / f"read-{job_id}"
        scratch.mkdir()
        check = check_dataset(storage, pg_url, job_id, count, scratch=scratch)
        found, duplicated = found + check.found, duplicated + check.duplicated
    record("load_20_datasets_4_tenants", "20 dataset jobs POSTed at once by 4 tenants (5 each) to the API with 2 "
           "workers: all succeeded with every sample once; each tenant lists exactly its own 5 and gets 404 "
           "for the other 15", jobs=20, tenants=4, samples_expected=20 * count, samples_found=found,
           samples_duplicated=duplicated, seconds_all_done=round(elapsed, 1), foreign_lookups_404=len(foreign))
