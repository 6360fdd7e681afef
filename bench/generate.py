"""Generation throughput: the generator alone vs the end-to-end engine writing local shards (issue 5).

In one process, on the same bundle and device, alternating the measurements `--repeats` times and
keeping each one's best run (the machine may be shared):
  - generator alone: G on pre-sampled (z, labels) in the engine's batch size, output kept on device;
  - end-to-end: `generate_shards` (labels → G → uint8 → encode → tar → LocalStorage), jpg and png.
Prints one JSON object as its last line (`generator_img_per_s`, `e2e_jpg_img_per_s`,
`e2e_png_img_per_s`, `ratio_jpg` = e2e jpg / generator alone, `device`, …) and saves it to
bench/results/generate-<machine>.json. Targets: CPU ratio_jpg ≥ 0.8 at 32×32; H100 generator alone
≥ 200,000 img/s and e2e jpg ≥ 100,000 img/s at 32×32.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.engine import default_batch_size, generate_shards  # noqa: E402
from models.export import export_placeholder  # noqa: E402
from models.runtime import Bundle  # noqa: E402
from models.sampling import SamplingPlan  # noqa: E402
from models.spec import parse_spec  # noqa: E402
from worker.storage import LocalStorage  # noqa: E402


def machine_name(device: str) -> str:
    if device.startswith("cuda"):
        return re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-")
    return f"cpu-{os.cpu_count()}core"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def generator_alone(bundle: Bundle, count: int, batch: int) -> float:
    """img/s of G alone: inputs sampled beforehand, outputs left where G puts them."""
    spec = parse_spec({"name": "bench", "bundle": bundle.name, "count": count, "shard_size": count})
    plan = SamplingPlan(spec.resolve(bundle.layout), 0, bundle.nz)
    index = torch.arange(batch, device=bundle.device)
    z, labels = plan.noise(index).to(bundle.device), plan.labels(index).to(bundle.device)
    bundle.generate(z, labels)  # warm-up
    sync(str(bundle.device))
    t0 = time.perf_counter()
    done = 0
    while done < count:
        bundle.generate(z, labels)
        done += batch
    sync(str(bundle.device))
    return done / (time.perf_counter() - t0)


def end_to_end(bundle: Bundle, fmt: str, count: int, shard_size: int, batch: int) -> float:
    spec = parse_spec({"name": "bench", "bundle": bundle.name, "count": count, "shard_size": shard_size,
                       "image": {"format": fmt}})
    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp:
        storage = LocalStorage(tmp)
        generate_shards(spec, bundle, storage, "warm", [0], batch_size=batch)  # warm-up (one shard)
        sync(str(bundle.device))
        t0 = time.perf_counter()
        generate_shards(spec, bundle, storage, "run", range(spec.num_shards), batch_size=batch)
        sync(str(bundle.device))
        return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("bundles/faces-m"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--engine", default=None, help="default: torchscript on CUDA, onnx on CPU")
    parser.add_argument("--count", type=int, default=None, help="samples per measurement")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime intra-op threads")
    parser.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = args.engine or ("torchscript" if cuda else "onnx")
    bundle_dir = args.bundle
    if not (bundle_dir / "manifest.json").exists():  # a fresh clone without bundles: build the placeholder
        bundle_dir = Path(tempfile.mkdtemp()) / bundle_dir.name
        export_placeholder(args.bundle.name, bundle_dir)
    bundle = Bundle.load(bundle_dir, engine=engine, device=args.device, threads=args.threads)
    batch = args.batch or default_batch_size(bundle)
    count = args.count or ((200_000 if cuda else 2048) if args.quick else (1_000_000 if cuda else 8192))
    shard_size = min(count, 10_000 if cuda else 1000)
    repeats = 1 if args.quick else args.repeats
    best = {"gen": 0.0, "jpg": 0.0, "png": 0.0}
    for _ in range(repeats):
        best["gen"] = max(best["gen"], generator_alone(bundle, count, batch))
        best["jpg"] = max(best["jpg"], end_to_end(bundle, "jpg", count, shard_size, batch))
        best["png"] = max(best["png"], end_to_end(bundle, "png", count, shard_size, batch))
    device_name = machine_name(args.device)
    result = {
        "generator_img_per_s": round(best["gen"], 1),
        "e2e_jpg_img_per_s": round(best["jpg"], 1),
        "e2e_png_img_per_s": round(best["png"], 1),
        "ratio_jpg": round(best["jpg"] / best["gen"], 3),
        "device": device_name,
        "bundle": bundle.name,
        "trained": bundle.trained,
        "engine": engine,
        "image_size": bundle.image_size,
        "channels": bundle.channels,
        "label_dim": bundle.layout.dim,
        "batch": batch,
        "count": count,
        "shard_size": shard_size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],  # the machine may be shared: how busy it was
    }
    stem = "generate" if bundle.name == "faces-m" else f"generate-{bundle.name}"  # faces-m is the reference
    out = Path(__file__).resolve().parent / "results" / f"{stem}-{device_name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
