"""What the evaluation scores: "a model that generates and predicts", from a run or a bundle.

Evaluation code only ever talks to `EvalModel`, so a training run directory (PyTorch modules from
the latest checkpoint) and an exported bundle (TorchScript/ONNX) are judged by the same code path,
and tests can score tiny stand-in networks without either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.layouts import LabelLayout, get_layout


@dataclass
class EvalModel:
    """A generator G(z, l) → images and a predictor images → labels, with the facts needed to drive them."""

    name: str  # run or bundle name, shown in the report
    source: str  # "run" | "bundle" | anything descriptive
    path: str  # where it came from
    domain: str  # registered domain name it was trained on
    layout: LabelLayout
    nz: int  # noise dims
    image_size: int  # pixels
    channels: int
    generate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z [B,nz], l [B,D]) → [B,C,S,S] in [0,1]
    predict: Callable[[torch.Tensor], torch.Tensor]  # images [B,C,S,S] in [0,1] → labels [B,D]
    info: dict[str, object] = field(default_factory=dict)  # trainer, iteration, ... (copied into the report)


def domain_settings(config: dict[str, object]) -> dict[str, object]:
    """The domain's seed and construction kwargs as recorded in a training config, so evaluation
    rebuilds the very real test split the run was held out from."""
    kwargs = config.get("domain_kwargs") or config.get("domain_options") or {}
    seed = config.get("domain_seed", config.get("seed", 0))
    return {"domain_seed": int(seed) if isinstance(seed, (int, float)) else 0,
            "domain_kwargs": dict(kwargs) if isinstance(kwargs, dict) else {}}


def from_run(run_dir: str | Path, device: torch.device | str = "cpu") -> EvalModel:
    """Wrap a training run directory (`models.trainers.run.load_run`)."""
    from models.trainers.run import load_run, loop_seconds

    run = load_run(run_dir, str(device))
    if run.generator is None or run.image_predictor is None:
        raise ValueError(f"run {run_dir} has no generator/predictor (trainer '{run.trainer}'); "
                         "only runs that both generate and predict can be evaluated")
    gen, reader = run.generator, run.image_predictor
    nz, dim = run.net.nz, run.net.label_dim

    def generate(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return gen(z.to(device), labels.to(device)).clamp(0, 1)

    def predict(images: torch.Tensor) -> torch.Tensor:
        out = reader(images.to(device))  # [B, nz + D]
        return out[:, nz:nz + dim]

    return EvalModel(name=Path(run_dir).name, source="run", path=str(run_dir), domain=run.domain,
                     layout=get_layout(run.layout), nz=nz, image_size=run.net.image_size,
                     channels=run.net.channels, generate=generate, predict=predict,
                     info={"trainer": run.trainer, "iteration": run.iteration,
                           "train_loop_seconds": loop_seconds(run_dir), "trainer_config": dict(run.config),
                           **domain_settings(run.config)})


def from_bundle(bundle_dir: str | Path, device: torch.device | str = "cpu") -> EvalModel:
    """Wrap an exported bundle (`models.runtime.Bundle`), run through its ONNX/TorchScript files."""
    from models.runtime import Bundle

    b = Bundle.load(bundle_dir, device=str(device))
    trainer_config = dict(b.manifest.get("trainer_config") or {})

    def generate(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return b.generate(z.to(device), labels.to(device))

    def predict(images: torch.Tensor) -> torch.Tensor:
        return b.predict(images.to(device))[1]

    return EvalModel(name=b.name, source="bundle", path=str(bundle_dir), domain=b.domain, layout=b.layout,
                     nz=b.nz, image_size=b.image_size, channels=b.channels, generate=generate,
                     predict=predict, info={"trainer": b.manifest.get("trainer"), "sha": b.sha,
                                            "trainer_config": trainer_config, **domain_settings(trainer_config)})
