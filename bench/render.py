"""Face renderer throughput: faces per second for plain/photo at 32 px and plain at 128 px.

Prints one JSON object as its last line and saves it to bench/results/render-<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from models.layouts import FACES, sample_prior
from models.render.faces import FaceRenderer


def _rate(renderer: FaceRenderer, size: int, mode: str, batch: int, repeats: int) -> float:
    labels = sample_prior(FACES, batch, torch.Generator().manual_seed(0), device=renderer.device)
    renderer.render(labels, size, mode, torch.Generator().manual_seed(0))  # warm-up (sample pattern cache)
    if renderer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(repeats):
        renderer.render(labels, size, mode, torch.Generator().manual_seed(i))
    if renderer.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def _loadavg() -> float | None:
    """1-minute load average when the figures were taken (None where /proc is missing)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one timed batch per figure (< 30 s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    renderer = FaceRenderer(device=args.device)
    repeats = 1 if args.quick else 5
    result = {
        "plain_32_faces_per_s": round(_rate(renderer, 32, "plain", 256, repeats), 1),
        "photo_32_faces_per_s": round(_rate(renderer, 32, "photo", 256, repeats), 1),
        "plain_128_faces_per_s": round(_rate(renderer, 128, "plain", 64, repeats), 1),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu-{args.threads}thread",
        # other work on the machine skews CPU figures (2 busy threads on 2 cores halve them or worse)
        "loadavg_1m": _loadavg(),
    }
    machine = result["device"].replace(" ", "-") if args.device.startswith("cuda") else f"cpu-{args.threads}core"
    out = Path(__file__).parent / "results" / f"render-{machine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
