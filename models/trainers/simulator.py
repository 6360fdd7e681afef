"""`simulator` trainer: fit the neural simulator S(l) to a domain's renderer (thesis §3.3.1).

Labels come fresh from the prior every step (so S cannot overfit a fixed set); quality is reported
as PSNR / SSIM on a held-out label set, with a contact sheet of render(l) above S(l).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from models.domains.base import Domain, get_domain
from models.networks import NetConfig, Simulator
from models.trainers.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from models.trainers.common import ProgressFn, StopFlag, resolve_device, save_grid
from models.trainers.registry import register_trainer
from models.trainers.run import append_log, write_options

log = logging.getLogger(__name__)

HELD_OUT_SEED_OFFSET = 7_919  # held-out labels come from seed + this, never from the training stream


@dataclass
class SimulatorConfig:
    domain: str = "faces-m"  # registered domain name
    domain_kwargs: dict[str, Any] = field(default_factory=dict)  # extra kwargs for get_domain
    image_size: int = 32  # pixels
    c: int = 32  # base channels of S
    seed: int = 0
    steps: int = 5000  # optimizer steps
    batch_size: int = 64  # labels per step
    lr: float = 1e-3  # Adam learning rate (thesis: unstated)
    eval_count: int = 256  # held-out labels for PSNR / SSIM
    log_every: int = 100  # steps between logged scalars
    checkpoint_every: int = 1000  # steps between checkpoints


def fit_simulator(
    domain: Domain,
    sim: Simulator,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    start: int,
    steps: int,
    batch_size: int,
    stop: StopFlag | None = None,
    progress: ProgressFn | None = None,
    on_step: Any = None,
) -> int:
    """MSE-fit S to the renderer from step `start` to `steps`; returns the number of completed steps."""
    sim.train()
    step = start
    while step < steps:
        labels = domain.sample_labels(batch_size, gen)  # [B, D]
        with torch.no_grad():
            target, _ = domain.simulate(labels)  # [B, C, S, S]
        loss = F.mse_loss(sim(labels), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if on_step is not None:
            on_step(step, loss)
        if progress is not None:
            progress(step, steps, None)
        if stop is not None and stop.requested:
            break
    return step


@torch.no_grad()
def evaluate_simulator(domain: Domain, sim: Simulator, count: int, seed: int) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """PSNR (dB) and SSIM of S(l) against render(l) on held-out labels; returns (metrics, render, S)."""
    from skimage.metrics import structural_similarity

    gen = torch.Generator(device=domain.device).manual_seed(seed + HELD_OUT_SEED_OFFSET)
    labels = domain.sample_labels(count, gen)
    target, _ = domain.simulate(labels)
    was_training = sim.training
    pred = sim.eval()(labels)
    sim.train(was_training)
    mse = F.mse_loss(pred, target).item()
    psnr = 10.0 * math.log10(1.0 / max(mse, 1e-12))
    t = target.float().cpu().numpy()
    p = pred.float().cpu().numpy()
    win = min(7, domain.image_size - (1 - domain.image_size % 2))
    ssim = sum(
        structural_similarity(t[i], p[i], channel_axis=0, data_range=1.0, win_size=win) for i in range(count)
    ) / count
    return {"sim_mse": mse, "sim_psnr_db": psnr, "sim_ssim": float(ssim)}, target, pred


def simulator_net_config(domain: Domain, c: int) -> NetConfig:
    return NetConfig(image_size=domain.image_size, channels=domain.channels, label_dim=domain.layout.dim, c=c)


@register_trainer("simulator")
def train_simulator(
    cfg: SimulatorConfig,
    run_dir: Path,
    device: str = "auto",
    resume: bool = False,
    progress: ProgressFn | None = None,
    domain: Domain | None = None,
) -> dict[str, Any]:
    """Train S into `run_dir` (see `models.trainers.run` for the layout); returns final metrics + status."""
    dev = domain.device if domain is not None else resolve_device(device)
    if domain is None:  # tests and notebooks may pass a ready Domain instead of a registered name
        domain = get_domain(cfg.domain, image_size=cfg.image_size, seed=cfg.seed, device=dev, **cfg.domain_kwargs)
    net = simulator_net_config(domain, cfg.c)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    options = {"trainer": "simulator", "domain": cfg.domain, "layout": domain.layout.name, **asdict(cfg),
               "net": net.to_dict()}
    torch.manual_seed(cfg.seed)
    sim = Simulator(net).to(dev)
    opt = torch.optim.Adam(sim.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    start = 0
    ckpt_path = run_dir / CHECKPOINT_NAME
    if resume:
        ckpt = load_checkpoint(ckpt_path, dev)
        sim.load_state_dict(ckpt["models"]["simulator"])
        opt.load_state_dict(ckpt["optimizers"]["simulator"])
        restore_rng(ckpt["rng"], {"data": gen})
        start = int(ckpt["iteration"])
    write_options(run_dir, options)

    def checkpoint(step: int, metrics: dict[str, float]) -> None:
        save_checkpoint(ckpt_path, {
            "trainer": "simulator", "iteration": step, "models": {"simulator": sim.state_dict()},
            "optimizers": {"simulator": opt.state_dict()}, "rng": capture_rng({"data": gen}), "metrics": metrics,
        })

    running: dict[str, Any] = {"loss": torch.zeros((), device=dev), "n": 0}

    def on_step(step: int, loss: torch.Tensor) -> None:
        running["loss"] = running["loss"] + loss.detach()
        running["n"] += 1
        if step % cfg.log_every == 0:
            append_log(run_dir, {"iteration": step, "sim_train_mse": float(running["loss"]) / running["n"]})
            running["loss"], running["n"] = torch.zeros((), device=dev), 0
        if step % cfg.checkpoint_every == 0:
            checkpoint(step, {})

    with StopFlag() as stop:
        done = fit_simulator(domain, sim, opt, gen, start, cfg.steps, cfg.batch_size, stop, progress, on_step)
    metrics, target, pred = evaluate_simulator(domain, sim, cfg.eval_count, cfg.seed)
    checkpoint(done, metrics)
    save_grid([target[:16], pred[:16]], run_dir / "samples" / "contact_sheet.png")
    append_log(run_dir, {"iteration": done, **metrics})
    status = "completed" if done >= cfg.steps else "interrupted"
    log.info("simulator %s at step %d: %s", status, done, metrics)
    return {"status": status, "iteration": done, "run_dir": str(run_dir), **metrics}
