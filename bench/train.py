"""RenderBEGAN training speed: eager fp32 reference vs the optimized path, in one process (issue 7).

Runs the thesis's default configuration (B=24, 32×32, 3 D : 1 P : 1 G, content loss on, faces-m)
for a fixed number of iterations twice from the same initial weights and the same data stream:
the plain eager path, then the optimized path (one CUDA graph per iteration with fused capturable
Adam; `--amp bf16` adds bf16 autocast). Prints one JSON object as its last line with
eager_ms_per_iter, optimized_ms_per_iter, speedup, loss_agreement (largest relative difference of the
run-mean L_D, L_G, L_P between the two paths) and device, and saves it to
bench/results/train-<machine>.json. The simulator and content nets are fitted briefly (their quality
does not change the per-iteration cost).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.content import LabelAwareConfig, build_content_features  # noqa: E402
from models.domains import get_domain  # noqa: E402
from models.trainers.renderbegan import (  # noqa: E402
    RenderBEGANConfig,
    RenderBEGANLoop,
    build_nets,
    prepare_simulator,
    resolve_net,
)


def machine_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(dev)).strip("-")
    return f"cpu-{os.cpu_count()}core"


def time_path(cfg: RenderBEGANConfig, domain, sim, feat, run_dir: Path, iters: int, warmup: int) -> tuple[float, dict]:
    """ms/iteration over `iters` timed iterations after `warmup`, and run-mean scalars over all of them."""
    loop = RenderBEGANLoop(cfg, domain, build_nets(cfg, resolve_net(cfg, domain), sim, domain.device), feat, run_dir)
    for _ in range(warmup):
        loop.iteration_step()
    loop.flush_scalars()  # also syncs
    if domain.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        loop.iteration_step()
    if domain.device.type == "cuda":
        torch.cuda.synchronize()
    ms = 1000.0 * (time.perf_counter() - t0) / iters
    return ms, loop.flush_scalars()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", default="faces-m")
    ap.add_argument("--iterations", type=int, default=200, help="timed iterations per path")
    ap.add_argument("--warmup", type=int, default=10, help="untimed iterations per path (graph capture included)")
    ap.add_argument("--amp", default="none", choices=["none", "bf16"], help="autocast of the optimized path")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--real-train-count", type=int, default=2000, help="faces-m real pool size")
    ap.add_argument("--prep-steps", type=int, default=200, help="simulator and content-net fitting steps")
    ap.add_argument("--out", type=Path, default=None, help="result file (default: bench/results/train-<machine>.json)")
    args = ap.parse_args()

    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    if dev.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    kw = {"real_train_count": args.real_train_count, "real_test_count": 16} if args.domain == "faces-m" else {}
    domain = get_domain(args.domain, image_size=32, seed=0, device=dev, **kw)
    base = RenderBEGANConfig(domain=args.domain, domain_kwargs=kw, simulator_steps=args.prep_steps,
                             content_steps=args.prep_steps)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        sim, _ = prepare_simulator(base, domain, resolve_net(base, domain), run_dir)
        feat = build_content_features(base.content, domain, seed=0, cache_path=run_dir / "content.pt",
                                      label_aware=LabelAwareConfig(steps=base.content_steps))
        eager_ms, eager = time_path(base, domain, sim, feat, run_dir, args.iterations, args.warmup)
        fast = replace(base, cuda_graph=True, amp=args.amp)
        fast_ms, opt = time_path(fast, domain, sim, feat, run_dir, args.iterations, args.warmup)
    agreement = max(abs(eager[k] - opt[k]) / (abs(eager[k]) + 1e-8) for k in ("L_D", "L_G", "L_P"))
    result = {
        "bench": "train",
        "domain": args.domain,
        "config": {"batch_size": base.batch_size, "image_size": 32, "d_steps": base.d_steps, "content": base.content,
                   "iterations": args.iterations, "warmup": args.warmup, "amp": args.amp},
        "eager_ms_per_iter": round(eager_ms, 3),
        "optimized_ms_per_iter": round(fast_ms, 3),
        "speedup": round(eager_ms / fast_ms, 3),
        "loss_agreement": agreement,
        "eager_means": {k: eager[k] for k in ("L_D", "L_G", "L_P", "L_c", "k_t")},
        "optimized_means": {k: opt[k] for k in ("L_D", "L_G", "L_P", "L_c", "k_t")},
        "optimized_path": "cuda_graph+fused_adam" if dev.type == "cuda" else "eager (no CUDA: same path)",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }
    out = args.out or Path(__file__).resolve().parent / "results" / f"train-{machine_name(dev)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
