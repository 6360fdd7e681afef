"""Checkpoints that load without executing code and RNG snapshots that make resume exact.

A checkpoint is a `torch.save` of plain containers (dicts, lists, str, int, float, tensors) so
`torch.load(weights_only=True)` accepts it; it is written to a temporary file and moved into place
with `os.replace`, so a crash mid-write never leaves a truncated `checkpoint.pt` behind.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write `payload` to `path` (tmp file in the same directory + fsync + os.replace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (`weights_only=True`); tensors land on `device`."""
    return torch.load(Path(path), map_location=device, weights_only=True)


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Snapshot every RNG training may touch: torch CPU/CUDA, numpy, python, and named generators."""
    np_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]  # a tuple when legacy
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64)},
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return out


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of `capture_rng`: afterwards every random draw repeats what the saved run did next."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    npk = state["numpy"]
    np.random.set_state(
        ("MT19937", npk["keys"].cpu().numpy().astype(np.uint32), npk["pos"], npk["has_gauss"], npk["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), None))
    for name, g in (generators or {}).items():
        g.set_state(state["generators"][name].cpu())
