"""Run directories: where a training run lives, and `load_run` for everyone who consumes one.

    runs/NAME/
      training_options.json   resolved config ({"trainer", "domain", "layout", "net", ...})
      checkpoint.pt           latest checkpoint (weights_only-loadable, written atomically)
      log.jsonl               one JSON object of scalars per log interval
      tb/                     TensorBoard events
      samples/                image grids

Evaluation and bundle export read runs only through `load_run`, which asks the run's trainer (its
`register_run_builder`) to turn the checkpoint into the standard `RunModules`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.networks import Discriminator, Generator, ImagePredictor, NetConfig, Predictor, Simulator
from models.trainers.checkpoint import CHECKPOINT_NAME, load_checkpoint

OPTIONS_NAME = "training_options.json"
LOG_NAME = "log.jsonl"


@dataclass
class RunModules:
    """The networks every trainer's run must offer, in eval mode, so export, evaluation and the
    service treat all methods alike (the bundle contract of DESIGN.md):

      generator        (z [B, nz], labels [B, D]) → images [B, C, S, S]; pixels in [0, 1] after the
                       clamp that export/evaluation apply (a tanh generator maps to [0, 1] inside);
      simulator        labels [B, D] → images (the neural simulator S, or the renderer's stand-in);
      image_predictor  images [B, C, S, S] in [0, 1] → [B, nz + D] = concat(z̃, l̃);
      parts            every module the checkpoint holds, by name (trainer-specific: D, P, critic, …).
    """

    generator: nn.Module | None
    simulator: nn.Module
    image_predictor: nn.Module | None
    parts: dict[str, nn.Module] = field(default_factory=dict)


RunBuilder = Callable[[dict[str, Any], dict[str, Any], NetConfig, str], RunModules]
_BUILDERS: dict[str, RunBuilder] = {}


def register_run_builder(trainer: str) -> Callable[[RunBuilder], RunBuilder]:
    """Register how a trainer's checkpoint becomes `RunModules`:
    `fn(options, states, net, device)` with `states` = the checkpoint's `models` dict."""

    def wrap(fn: RunBuilder) -> RunBuilder:
        if trainer in _BUILDERS:
            raise ValueError(f"run builder for '{trainer}' registered twice")
        _BUILDERS[trainer] = fn
        return fn

    return wrap


@dataclass
class TrainedRun:
    run_dir: Path
    trainer: str  # registered trainer name ("renderbegan", "simulator", …)
    domain: str  # registered domain name
    layout: str  # layout name
    net: NetConfig  # the bundle-facing sizes: nz, label_dim, image_size, channels (+ RenderBEGAN widths)
    config: dict[str, Any]  # full resolved training config (what training_options.json holds)
    iteration: int  # completed iterations (simulator runs: completed steps)
    modules: RunModules
    metrics: dict[str, float]  # latest logged scalars

    @property
    def generator(self) -> nn.Module | None:
        return self.modules.generator

    @property
    def simulator(self) -> nn.Module:
        return self.modules.simulator

    @property
    def image_predictor(self) -> nn.Module | None:
        return self.modules.image_predictor


def prepare_run_dir(out: Path, resume: bool) -> Path:
    """The directory to train in. With `resume`, `out` itself (it must hold the run's options). Without `resume`, an existing non-empty `out` is never overwritten:
    the run goes to the first free `out-1`, `out-2`, … instead (numbered run directories)."""
    out = Path(out)
    if resume:  # a run that stopped before its first GAN checkpoint resumes from its phase files
        if not (out / OPTIONS_NAME).exists():
            raise FileNotFoundError(f"--resume: {out} is not a run directory ({OPTIONS_NAME} is missing)")
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


def read_log(run_dir: Path | str) -> list[dict[str, Any]]:
    """The records of a run's `log.jsonl` in order ([] without one); a line cut short by a kill is skipped."""
    path = Path(run_dir) / LOG_NAME
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def build_module(cls: Callable[[Any], nn.Module], arch: Any, state: dict[str, Any] | None,
                 device: str) -> nn.Module | None:
    """`cls(arch)` (arch: its config, e.g. a NetConfig) with `state` loaded, on `device`, in eval mode;
    None when the checkpoint lacks it."""
    if state is None:
        return None
    module = cls(arch)
    module.load_state_dict(state)
    return module.to(device).eval()


@register_run_builder("renderbegan")
@register_run_builder("simulator")
def _renderbegan_modules(options: dict[str, Any], states: dict[str, Any], net: NetConfig, device: str) -> RunModules:
    """S, G, D, P of thesis §3.3; the image predictor is D's encoder followed by P."""
    sim_net = NetConfig.from_dict(options.get("simulator_net", options["net"]))  # S may be narrower/wider
    simulator = build_module(Simulator, sim_net, states["simulator"], device)
    assert simulator is not None
    parts = {name: m for name, m in (
        ("generator", build_module(Generator, net, states.get("generator"), device)),
        ("discriminator", build_module(Discriminator, net, states.get("discriminator"), device)),
        ("predictor", build_module(Predictor, net, states.get("predictor"), device)),
        ("simulator", simulator)) if m is not None}
    reader = None
    if "discriminator" in parts and "predictor" in parts:
        reader = ImagePredictor(parts["discriminator"], parts["predictor"]).eval()
    return RunModules(generator=parts.get("generator"), simulator=simulator, image_predictor=reader, parts=parts)


def loop_seconds(run_dir: Path | str) -> float | None:
    """Wall seconds the run's training loop has taken so far, from `log.jsonl` (each interval's
    `ms_per_iter` × its iterations); None when the run logs no loop (a trainer without one).

    Why from the log: a run is resumed across sessions and machines, so no single clock saw it all.
    After a resume the log repeats the intervals since the checkpoint; the later line of an iteration
    wins. Phases before the loop (fitting S, the content network) are not counted.
    """
    if not (Path(run_dir) / LOG_NAME).is_file():
        return None
    ms_at: dict[int, float] = {}
    for row in read_log(run_dir):
        if "iteration" in row and "ms_per_iter" in row:
            ms_at[int(row["iteration"])] = float(row["ms_per_iter"])
    previous, total = 0, 0.0
    for iteration in sorted(ms_at):
        total += ms_at[iteration] * (iteration - previous) / 1000.0
        previous = iteration
    return total if ms_at else None


def load_run(run_dir: Path | str, device: str = "cpu") -> TrainedRun:
    """Rebuild a run's networks from its options and latest checkpoint, in eval mode on `device`."""
    from models.trainers.registry import load_builtin_trainers

    load_builtin_trainers()  # trainer modules register their run builders on import
    run_dir = Path(run_dir)
    options = read_options(run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{run_dir}: no {CHECKPOINT_NAME} yet (training has not saved one)")
    trainer = options["trainer"]
    if trainer not in _BUILDERS:
        raise ValueError(f"{run_dir}: trainer '{trainer}' has no run builder; known: {', '.join(sorted(_BUILDERS))}")
    ckpt = load_checkpoint(ckpt_path, "cpu")
    net = NetConfig.from_dict(options["net"])
    return TrainedRun(
        run_dir=run_dir,
        trainer=trainer,
        domain=options["domain"],
        layout=options["layout"],
        net=net,
        config=options,
        iteration=int(ckpt["iteration"]),
        modules=_BUILDERS[trainer](options, ckpt["models"], net, device),
        metrics={k: float(v) for k, v in ckpt.get("metrics", {}).items()},
    )


def clamp_images(x: torch.Tensor) -> torch.Tensor:
    """G and D outputs have no output activation (see `models/networks/generator.py`): clamp to pixels."""
    return x.clamp(0.0, 1.0)
