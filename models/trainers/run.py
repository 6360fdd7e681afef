"""Run directories: where a training run lives, and `load_run` for everyone who consumes one.

    runs/NAME/
      training_options.json   resolved config ({"trainer", "domain", "layout", "net", ...})
      checkpoint.pt           latest checkpoint (weights_only-loadable, written atomically)
      log.jsonl               one JSON object of scalars per log interval
      tb/                     TensorBoard events
      samples/                image grids

Evaluation (H4) and bundle export (H5) read runs only through `load_run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.networks import Discriminator, Generator, NetConfig, Predictor, Simulator
from models.trainers.checkpoint import CHECKPOINT_NAME, load_checkpoint

OPTIONS_NAME = "training_options.json"
LOG_NAME = "log.jsonl"


@dataclass
class TrainedRun:
    run_dir: Path
    trainer: str  # "renderbegan" | "simulator"
    domain: str  # registered domain name
    layout: str  # layout name
    net: NetConfig
    config: dict[str, Any]  # full resolved training config (what training_options.json holds)
    iteration: int  # completed iterations (simulator runs: completed steps)
    generator: nn.Module | None
    simulator: nn.Module
    discriminator: nn.Module | None
    predictor: nn.Module | None
    metrics: dict[str, float]  # latest logged scalars


def prepare_run_dir(out: Path, resume: bool) -> Path:
    """The directory to train in. Without `resume`, an existing non-empty `out` is never overwritten:
    the run goes to the first free `out-1`, `out-2`, … instead (numbered run directories)."""
    out = Path(out)
    if resume:
        if not (out / CHECKPOINT_NAME).exists():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT_NAME} in {out}")
        return out
    candidate, n = out, 0
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = out.with_name(f"{out.name}-{n}")
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


def write_options(run_dir: Path, options: dict[str, Any]) -> None:
    (Path(run_dir) / OPTIONS_NAME).write_text(json.dumps(options, indent=2, sort_keys=True) + "\n")


def read_options(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / OPTIONS_NAME
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {OPTIONS_NAME} is missing")
    return json.loads(path.read_text())


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / LOG_NAME, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _build(cls: type[nn.Module], net: NetConfig, state: dict[str, Any] | None, device: str) -> nn.Module | None:
    if state is None:
        return None
    module = cls(net)
    module.load_state_dict(state)
    return module.to(device).eval()


def load_run(run_dir: Path | str, device: str = "cpu") -> TrainedRun:
    """Rebuild a run's networks from its options and latest checkpoint, in eval mode on `device`."""
    run_dir = Path(run_dir)
    options = read_options(run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{run_dir}: no {CHECKPOINT_NAME} yet (training has not saved one)")
    ckpt = load_checkpoint(ckpt_path, "cpu")
    net = NetConfig.from_dict(options["net"])
    states = ckpt["models"]
    sim_net = NetConfig.from_dict(options.get("simulator_net", options["net"]))  # S may be narrower/wider
    simulator = _build(Simulator, sim_net, states["simulator"], device)
    assert simulator is not None
    return TrainedRun(
        run_dir=run_dir,
        trainer=options["trainer"],
        domain=options["domain"],
        layout=options["layout"],
        net=net,
        config=options,
        iteration=int(ckpt["iteration"]),
        generator=_build(Generator, net, states.get("generator"), device),
        simulator=simulator,
        discriminator=_build(Discriminator, net, states.get("discriminator"), device),
        predictor=_build(Predictor, net, states.get("predictor"), device),
        metrics={k: float(v) for k, v in ckpt.get("metrics", {}).items()},
    )


def clamp_images(x: torch.Tensor) -> torch.Tensor:
    """G and D outputs have no output activation (see `models/networks/generator.py`): clamp to pixels."""
    return x.clamp(0.0, 1.0)
