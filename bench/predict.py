"""Predictor latency and throughput with ONNX Runtime on the CPU (issue 5).

Single-image latency with one intra-op thread (what one `/predict` request costs a worker thread),
then batched throughput with ONNX Runtime's default threads. Prints one JSON object as its last line
(`onnx_cpu_p50_ms`, `onnx_cpu_p99_ms`, `onnx_cpu_batch_img_per_s`, …) and saves it to
bench/results/predict-<machine>.json. Target: p50 ≤ 2 ms at 32×32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.export import export_placeholder  # noqa: E402
from models.runtime import Bundle  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("bundles/faces-m"))
    parser.add_argument("--n", type=int, default=2000, help="single-image calls timed")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, batches = (500, 5) if args.quick else (args.n, args.batches)
    bundle_dir = args.bundle
    if not (bundle_dir / "manifest.json").exists():
        bundle_dir = Path(tempfile.mkdtemp()) / bundle_dir.name
        export_placeholder(args.bundle.name, bundle_dir)
    single = Bundle.load(bundle_dir, engine="onnx", device="cpu", threads=1)
    s, c = single.image_size, single.channels
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, c, s, s, generator=gen)
    for _ in range(50):
        single.predict(image)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        single.predict(image)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3

    multi = Bundle.load(bundle_dir, engine="onnx", device="cpu")
    batch = torch.rand(args.batch, c, s, s, generator=gen)
    multi.predict(batch)
    t0 = time.perf_counter()
    for _ in range(batches):
        multi.predict(batch)
    img_per_s = batches * args.batch / (time.perf_counter() - t0)

    device = f"cpu-{os.cpu_count()}core"
    result = {
        "onnx_cpu_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "onnx_cpu_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "onnx_cpu_batch_img_per_s": round(img_per_s, 1),
        "device": device,
        "bundle": single.name,
        "trained": single.trained,
        "image_size": s,
        "channels": c,
        "calls": n,
        "batch": args.batch,
        "load_avg_1m": os.getloadavg()[0],  # the machine may be shared: how busy it was
    }
    out = Path(__file__).resolve().parent / "results" / f"predict-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
