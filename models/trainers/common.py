"""Pieces both trainers share: configs from dicts/YAML with named errors, signal-safe stopping, grids."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

C = TypeVar("C")

ProgressFn = Callable[[int, int, dict[str, float] | None], None]  # (done, total, scalars at log steps)


class TrainingCollapsed(RuntimeError):
    """Training stopped because the GAN collapsed or diverged; the message says which signal fired."""


def config_from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Dataclass from a plain dict (e.g. parsed YAML), naming an unknown key instead of ignoring it."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ValueError(f"{prefix}{key}: unknown option; known: {', '.join(sorted(known))}")
    return cls(**data)


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
