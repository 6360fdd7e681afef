"""Service benchmark: /predict latency and throughput through a real `labelforge serve`, and dataset
throughput through the service versus the engine alone in the same run.

    python bench/service.py [--bundles bundles] [--count 2000] [--requests 200]

Prints one JSON object (last line) and saves it to bench/results/service-<machine>.json:
predict_p50_ms / predict_p99_ms (concurrency 1), predict_rps_c1/c8/c32, predict_p99_ms_c32, and
service_vs_engine_ratio = engine-alone seconds / service seconds for the same spec (the service's
time is the job record's started_at → finished_at, so process start-up is not counted).
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
           "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp}/data/labelforge.db", "LABELFORGE_BROKER_POLLING_INTERVAL_S": "0.1",
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
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        job = http.post("/datasets", json=spec).json()
        while (status := http.get(f"/datasets/{job['id']}").json())["status"] not in ("succeeded", "failed"):
            time.sleep(0.1)
    assert status["status"] == "succeeded", status
    started, finished = (datetime.fromisoformat(status[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def dataset_seconds_engine(bundles: Path, spec: dict, out: Path) -> float:
    from models.engine import generate_dataset
    from models.runtime import Bundle
    from models.spec import DatasetSpec
    from worker.storage import LocalStorage

    bundle = Bundle.load(bundles / spec["bundle"], engine="onnx", device="cpu")
    t0 = time.perf_counter()
    generate_dataset(DatasetSpec.model_validate(spec), bundle, LocalStorage(out), "engine/")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", type=Path, default=REPO / "bundles")
    parser.add_argument("--bundle", default="faces-m")
    parser.add_argument("--count", type=int, default=2000, help="samples in the dataset comparison")
    parser.add_argument("--requests", type=int, default=200, help="/predict calls per concurrency level")
    args = parser.parse_args()
    manifest = json.loads((args.bundles / args.bundle / "manifest.json").read_text())
    size, channels = manifest["image_size"], manifest["channels"]
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3) if channels == 3 else (size, size), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    spec = {"name": "bench", "bundle": args.bundle, "count": args.count, "shard_size": max(1, args.count // 4),
            "seed": 1, "image": {"format": "jpg"}}
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
            service_s = dataset_seconds_service(url, key, spec)
        finally:
            proc.terminate()
            proc.wait(30)
        engine_s = dataset_seconds_engine(args.bundles, spec, tmp / "engine")
    result.update(dataset_count=args.count, service_s=round(service_s, 2), engine_s=round(engine_s, 2),
                  service_vs_engine_ratio=round(engine_s / service_s, 3))
    out = REPO / "bench" / "results" / f"service-{result['device']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
