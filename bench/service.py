"""Service benchmark: /predict latency and throughput through a real `labelforge serve`, and dataset
throughput through the service versus the engine alone in the same run.

    python bench/service.py [--bundles bundles] [--count 4000] [--requests 300] [--repeats 2]

Prints one JSON object (last line) and saves it to bench/results/service-<machine>.json:
predict_p50_ms / predict_p99_ms (concurrency 1), predict_rps_c1/c8/c32 and p50/p99 per concurrency,
and service_vs_engine_ratio = engine-alone seconds / service seconds for the same spec (target ≥ 0.9).

How the dataset comparison is kept fair:
- service: a job POSTed to the running server, timed from the job record's `created_at` to
  `finished_at` — dispatch through the broker, one Celery task per shard, job records, storage,
  and the finalize task writing card and manifest are all inside; the client's status polling is
  not (it only notices the end).
- engine alone: `generate_dataset` in this process with a loaded bundle — what `labelforge
  generate` runs once it has started — writing shards, card and manifest to local storage.
- start-up is outside both: the engine's bundle is loaded before its clock starts, and the server's
  worker has run a small warm-up job (its process and bundle are up) before the timed jobs.
- same conditions: the two alternate `--repeats` times while the server is up (idle between its
  jobs), and each keeps its best run, as the machine may be shared (the 1-minute load average at the
  start and end is recorded; with load 5–8 on 2 cores single runs vary by ±40 %, hence 3 repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> str:
    import torch

    return torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else f"cpu-{os.cpu_count()}core"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(tmp: Path, bundles: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = {**os.environ, "LABELFORGE_DATA_DIR": str(tmp / "data"), "LABELFORGE_BUNDLES_DIR": str(bundles.resolve()),
           "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp}/data/labelforge.db",
           "PYTHONPATH": str(REPO)}
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "labelforge"), "serve", "--port", str(port)],
                            cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url, (tmp / "data" / "api_key").read_text().strip()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError((tmp / "serve.log").read_text())


async def predict_load(url: str, key: str, image: bytes, bundle: str, concurrency: int,
                       requests: int) -> tuple[list[float], float]:
    """`requests` /predict calls from `concurrency` clients → (latencies in ms, requests per second)."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for _ in remaining:
            t0 = time.perf_counter()
            r = await http.post("/predict", params={"bundle": bundle}, files={"files": ("x.png", image, "image/png")})
            r.raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=60) as http:
        await http.post("/predict", params={"bundle": bundle}, files={"files": ("x.png", image, "image/png")})
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return latencies, requests / elapsed


def dataset_seconds_service(url: str, key: str, spec: dict) -> float:
    """created_at → finished_at of a dataset job run by the server (see the module docstring)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        job = http.post("/datasets", json=spec)
        job.raise_for_status()
        while (status := http.get(f"/datasets/{job.json()['id']}").json())["status"] not in ("succeeded", "failed"):
            time.sleep(0.2)
    assert status["status"] == "succeeded", status
    created, finished = (datetime.fromisoformat(status[k]) for k in ("created_at", "finished_at"))
    return (finished - created).total_seconds()


def dataset_seconds_engine(bundle: object, spec: dict, out: Path) -> float:
    from models.engine import generate_dataset
    from models.spec import DatasetSpec
    from worker.storage import LocalStorage

    t0 = time.perf_counter()
    generate_dataset(DatasetSpec.model_validate(spec), bundle, LocalStorage(out), f"engine-{spec['name']}/")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", type=Path, default=REPO / "bundles")
    parser.add_argument("--bundle", default="faces-m")
    parser.add_argument("--count", type=int, default=4000, help="samples in the dataset comparison")
    parser.add_argument("--requests", type=int, default=300, help="/predict calls per concurrency level")
    parser.add_argument("--repeats", type=int, default=3, help="service/engine dataset runs, alternating")
    args = parser.parse_args()
    from models.runtime import Bundle

    manifest = json.loads((args.bundles / args.bundle / "manifest.json").read_text())
    size, channels = manifest["image_size"], manifest["channels"]
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3) if channels == 3 else (size, size), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    spec = {"name": "bench", "bundle": args.bundle, "count": args.count, "shard_size": max(1, args.count // 4),
            "seed": 1, "image": {"format": "jpg"}}
    bundle = Bundle.load(args.bundles / args.bundle, engine="onnx", device="cpu")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp_s:
        tmp = Path(tmp_s)
        proc, url, key = start_serve(tmp, args.bundles)
        try:
            result: dict[str, object] = {"device": machine(), "bundle": args.bundle, "image_size": size}
            for c in (1, 8, 32):
                lat, rps = asyncio.run(predict_load(url, key, buf.getvalue(), args.bundle, c, args.requests))
                result[f"predict_rps_c{c}"] = round(rps, 1)
                result[f"predict_p50_ms_c{c}"] = round(float(np.percentile(lat, 50)), 2)
                result[f"predict_p99_ms_c{c}"] = round(float(np.percentile(lat, 99)), 2)
            result["predict_p50_ms"], result["predict_p99_ms"] = result["predict_p50_ms_c1"], result["predict_p99_ms_c1"]
            dataset_seconds_service(url, key, {**spec, "name": "warm-up", "count": 64, "shard_size": 32})
            service_runs, engine_runs = [], []
            for i in range(args.repeats):
                service_runs.append(dataset_seconds_service(url, key, {**spec, "name": f"bench-{i}"}))
                engine_runs.append(dataset_seconds_engine(bundle, {**spec, "name": f"bench-{i}"}, tmp / "engine"))
        finally:
            proc.terminate()
            proc.wait(30)
    service_s, engine_s = min(service_runs), min(engine_runs)
    result.update(dataset_count=args.count, dataset_shards=4, service_s=round(service_s, 2), engine_s=round(engine_s, 2),
                  service_runs_s=[round(x, 2) for x in service_runs], engine_runs_s=[round(x, 2) for x in engine_runs],
                  service_vs_engine_ratio=round(engine_s / service_s, 3),
                  load_avg_1m_start=round(load_start, 2), load_avg_1m=round(os.getloadavg()[0], 2))
    out = REPO / "bench" / "results" / f"service-{result['device']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
