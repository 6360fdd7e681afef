"""`source-only` trainer: the no-adaptation baseline as a servable bundle.

Every method is judged against "train a predictor on simulator images and apply it to real ones"
(thesis §4.2; `labelforge eval`'s `source_only_*` figures). This trainer packages exactly that
baseline in the bundle contract, so the service has something honest to serve before a GAN is
trained (no GPU has been lent so far; RenderBEGAN on faces-m needs days of CPU):
  generator        G(z, l) = S(l) — the neural simulator; z is ignored, so a dataset's images are
                   simulator-like (not realistic) but carry their labels exactly;
  image_predictor  the evaluation's source-only CNN (`models.evaluation.predictors.LabelCNN`, same
                   recipe) trained on renderer images, with z̃ = 0 in front of l̃.
Its eval report therefore shows `kid_gen_real` ≈ `kid_sim_real` and `gap_closed` ≈ 0 by design.
Phases: S (fitted, or reused from the run dir / `simulator_run`, as RenderBEGAN does), then the CNN.
The CNN phase takes minutes and is not checkpointed mid-way: `--resume` after an interruption
redoes it from the same seed (same result).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.domains.base import Domain, get_domain
from models.evaluation.evaluate import supervised_fields
from models.evaluation.pools import simulator_pool
from models.evaluation.predictors import LabelCNN, PredictorConfig, train_predictor
from models.networks import NetConfig, Simulator
from models.trainers.checkpoint import CHECKPOINT_NAME, save_checkpoint
from models.trainers.common import ProgressFn, resolve_device
from models.trainers.registry import register_trainer
from models.trainers.renderbegan import prepare_simulator, resolve_net, simulator_view
from models.trainers.run import RunModules, append_log, build_module, register_run_builder, write_options

NAME = "source-only"


@dataclass
class SourceOnlyConfig:
    domain: str = "faces-m"
    domain_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int = 32
    seed: int = 0
    net: dict[str, Any] = field(default_factory=dict)  # NetConfig overrides for S (c, …) and nz
    simulator_run: str | None = None  # run dir with a trained S; None = this run's simulator.pt or fit it
    simulator_steps: int = 5000
    simulator_batch: int = 64
    simulator_lr: float = 1e-3
    source_count: int = 20_000  # renderer images the predictor learns from (the evaluation's recipe)
    iterations: int = 12  # predictor epochs over those images
    width: int = 32  # predictor CNN width (the evaluation's recipe)

    def validate(self) -> None:
        if self.source_count < 2:
            raise ValueError("source_count: must be ≥ 2")
        if self.iterations < 1:
            raise ValueError("iterations: must be ≥ 1 (predictor epochs)")
        if self.width < 1:
            raise ValueError("width: must be ≥ 1")


class SimulatorAsGenerator(nn.Module):
    """G(z, l) = S(l). z is kept as an input (the bundle contract) and touched with weight 0 so that
    exporters keep it in the graph."""

    def __init__(self, simulator: nn.Module):
        super().__init__()
        self.simulator = simulator

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # -> [B, C, S, S]
        return self.simulator(labels) + 0.0 * z[:, :1, None, None]


class PaddedPredictor(nn.Module):
    """images → concat(z̃ = 0 [B, nz], l̃ [B, D]): a label-only CNN in the bundle's predictor layout."""

    def __init__(self, cnn: nn.Module, nz: int):
        super().__init__()
        self.cnn, self.nz = cnn, nz

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, nz + D]
        labels = self.cnn(images)
        return torch.cat([labels.new_zeros(labels.shape[0], self.nz), labels], dim=1)


def _predictor_config(cfg: SourceOnlyConfig, domain: Domain) -> PredictorConfig:
    return PredictorConfig(image_size=cfg.image_size, channels=domain.channels, label_dim=domain.layout.dim,
                           width=cfg.width, epochs=cfg.iterations, seed=cfg.seed)


@register_trainer(NAME, config=SourceOnlyConfig)
def train_source_only(cfg: SourceOnlyConfig, run_dir: Path, device: str = "auto", resume: bool = False,
                      progress: ProgressFn | None = None, domain: Domain | None = None) -> dict[str, Any]:
    """Fit (or reuse) S, then the source-only CNN; returns {"status", "iteration", "run_dir", **metrics}."""
    cfg.validate()
    dev = domain.device if domain is not None else resolve_device(device)
    if domain is None:
        domain = get_domain(cfg.domain, image_size=cfg.image_size, seed=cfg.seed, device=dev, **cfg.domain_kwargs)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rb = simulator_view(cfg)
    net = resolve_net(rb, domain)
    sim, sim_net = prepare_simulator(rb, domain, net, run_dir)
    pcfg = _predictor_config(cfg, domain)
    options = {**asdict(cfg), "trainer": NAME, "layout": domain.layout.name, "net": net.to_dict(),
               "simulator_net": sim_net.to_dict(), "predictor": asdict(pcfg)}
    write_options(run_dir, options)
    pool = simulator_pool(domain, cfg.source_count, cfg.seed)
    assert pool.labels is not None
    cnn = train_predictor(pool.images, pool.labels, domain.layout, supervised_fields(domain.layout), pcfg, dev)
    metrics = {"source_count": float(len(pool.images)), "epochs": float(cfg.iterations)}
    append_log(run_dir, {"phase": "predictor", "iteration": cfg.iterations, **metrics})
    save_checkpoint(run_dir / CHECKPOINT_NAME, {
        "trainer": NAME, "iteration": cfg.iterations, "metrics": metrics,
        "models": {"simulator": sim.state_dict(), "source_predictor": cnn.state_dict()}})
    if progress is not None:
        progress(cfg.iterations, cfg.iterations, None)
    return {"status": "completed", "iteration": cfg.iterations, "run_dir": str(run_dir), **metrics}


@register_run_builder(NAME)
def _source_only_modules(options: dict[str, Any], states: dict[str, Any], net: NetConfig, device: str) -> RunModules:
    sim = build_module(Simulator, NetConfig.from_dict(options["simulator_net"]), states["simulator"], device)
    cnn = build_module(LabelCNN, PredictorConfig(**options["predictor"]), states["source_predictor"], device)
    assert sim is not None and cnn is not None
    return RunModules(generator=SimulatorAsGenerator(sim).eval(), simulator=sim,
                      image_predictor=PaddedPredictor(cnn, net.nz).eval(),
                      parts={"simulator": sim, "source_predictor": cnn})
