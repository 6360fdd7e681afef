"""Pieces every trainer shares: configs from dicts/YAML with named errors, signal-safe stopping, grids,
and the iteration driver (`run_iterations`) with its scalar logging."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

import torch

log = logging.getLogger(__name__)

C = TypeVar("C")

ProgressFn = Callable[[int, int, dict[str, float] | None], None]  # (done, total, scalars at log steps)


class TrainingCollapsed(RuntimeError):
    """Training stopped because the GAN collapsed or diverged; the message says which signal fired."""


_SCALAR_KINDS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _checked_value(name: str, hint: Any, value: Any) -> Any:
    """`value` for a field annotated `hint`, or ValueError naming the field when it does not fit a plain
    scalar field (bool/int/float/str, optionally `| None`) or is not the container a dict/list/tuple field
    needs (their items are checked by the config's `validate`).
    Without this a YAML or --set typo ("w_c=abc") surfaces later as a TypeError that names no field.
    A float field also takes a numeric string: YAML 1.1 reads `1e-4` (no dot) as the string '1e-4'."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()
    if typing.get_args(hint) and not args:  # tuple[float, float], dict[...], list[...]: the shape; items by validate
        container = typing.get_origin(hint)
        if container is dict and not isinstance(value, dict):
            raise ValueError(f"{name}: must be a mapping {{key: value}}, got {value!r}")
        if container in (list, tuple) and not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: must be a list, got {value!r}")
        return tuple(value) if container is tuple else value  # YAML and JSON give lists (e.g. Adam's betas)
    if value is None and type(None) in args:
        return value
    kinds = [a for a in (args or (hint,)) if a in _SCALAR_KINDS]
    if not kinds or (args and len(kinds) != len(args) - (type(None) in args)):
        return value
    for kind in kinds:
        accepted, _ = _SCALAR_KINDS[kind]
        if isinstance(value, accepted) and (kind is bool or not isinstance(value, bool)):
            return value
    if float in kinds and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    wanted = " or ".join(_SCALAR_KINDS[k][1] for k in kinds) + (" (or null)" if type(None) in args else "")
    raise ValueError(f"{name}: must be {wanted}, got {value!r}")


def config_from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Dataclass from a plain dict (e.g. parsed YAML), naming an unknown key or a value of the wrong type
    instead of ignoring it or failing later without a name."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"{prefix}{key}: unknown option; known: {', '.join(sorted(known))}")
        checked[key] = _checked_value(f"{prefix}{key}", hints[key], value)
    return cls(**checked)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: '{device}' requested but CUDA is not available")
    return torch.device(device)


class StopFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks between iterations (graceful checkpoint + exit).

    Only installs handlers from the main thread (signals cannot be caught elsewhere); restores the
    previous handlers on exit.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name
        log.warning("%s received: finishing this iteration, checkpointing and stopping", self.requested)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def save_grid(rows: list[torch.Tensor], path: Path) -> torch.Tensor:
    """Stack equally long image rows [n, C, S, S] into one clamped grid image, saved as PNG; returns it."""
    from torchvision.utils import make_grid, save_image

    images = torch.cat([r.detach().float().cpu().clamp(0, 1) for r in rows])
    grid = make_grid(images, nrow=rows[0].shape[0], padding=1, pad_value=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return grid


def summary_writer(log_dir: Path, purge_step: int | None = None) -> Any | None:
    """A TensorBoard writer, or None (with a warning) where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: TensorBoard logging is off (log.jsonl still written)")
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


class IterationLoop(Protocol):
    """What `run_iterations` drives: a trainer's GAN phase (RenderBEGAN, labelgan, infobegan, …)."""

    cfg: Any  # has iterations, log_every, sample_every, checkpoint_every
    iteration: int

    def iteration_step(self) -> None: ...

    def log_interval(self, tick: float, writer: Any | None) -> dict[str, float]:
        """Read, log and check the scalars of the interval that started at `tick` (may raise TrainingCollapsed)."""
        ...

    def sample_grid(self, writer: Any | None) -> None: ...

    def save(self) -> None: ...


def run_iterations(loop: IterationLoop, run_dir: Path, progress: ProgressFn | None = None) -> str:
    """Train `loop` to `cfg.iterations`: log every `log_every`, sample every `sample_every`, checkpoint every
    `checkpoint_every`, at the end and on SIGTERM/SIGINT. Returns "completed" or "interrupted".
    One driver for every trainer, so checkpoint timing (and with it exact resume) means the same everywhere."""
    cfg = loop.cfg
    writer = summary_writer(run_dir / "tb", purge_step=loop.iteration or None)
    tick = time.perf_counter()
    status = "completed"
    try:
        with StopFlag() as stop:
            while loop.iteration < cfg.iterations:
                loop.iteration_step()
                it = loop.iteration
                scalars = None
                if it % cfg.log_every == 0 or it == cfg.iterations:
                    scalars = loop.log_interval(tick, writer)
                    tick = time.perf_counter()
                if it % cfg.sample_every == 0:
                    loop.sample_grid(writer)
                if it % cfg.checkpoint_every == 0 and it < cfg.iterations:  # the last one is saved below
                    loop.save()
                if progress is not None:
                    progress(it, cfg.iterations, scalars)
                if stop.requested:
                    status = "interrupted"
                    break
        loop.save()
        loop.sample_grid(writer)
    finally:
        if writer is not None:
            writer.close()
    return status


def write_scalars(run_dir: Path, writer: Any | None, iteration: int, scalars: dict[str, float]) -> None:
    """One log interval's scalars to log.jsonl and TensorBoard."""
    from models.trainers.run import append_log

    append_log(run_dir, {"iteration": iteration, **scalars})
    if writer is not None:
        for name, value in scalars.items():
            writer.add_scalar(name, value, iteration)


def non_finite(scalars: dict[str, float], iteration: int) -> TrainingCollapsed | None:
    """The error to raise when a logged scalar is NaN/inf (the caller checkpoints first), else None."""
    bad = [k for k, v in scalars.items() if not math.isfinite(v)]
    return TrainingCollapsed(f"non-finite losses at iteration {iteration}: {', '.join(bad)}") if bad else None
