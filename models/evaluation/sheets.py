"""Contact sheets for the evaluation page: what the figures look like.

- `sim_gen_real.png`: rows of simulator renders S(l), generated G(z, l) for the same labels, and real
  test images — the domain gap and how much of it the generator crossed;
- faces: `yaw_sweep.png` (−60°…60° per row, one row per face) and `shape_sweep.png` (shape
  components 0–3 from −3σ to +3σ), with z fixed along each row;
- digits: `digit_noise_grid.png` (class per column, one noise vector per row).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from models.domains.base import Domain
from models.evaluation.pools import derived_seed
from models.evaluation.subject import EvalModel

MIN_PIXELS = 64  # small images are upscaled (nearest) to at least this size so the sheets are readable


def _save_rows(rows: list[torch.Tensor], path: Path) -> None:
    """rows: equal-length [n, C, S, S] tensors → one grid PNG with one row per tensor."""
    grid = torch.cat(rows).float().clamp(0, 1)  # [R·n, C, S, S]
    if grid.shape[1] == 1:
        grid = grid.expand(-1, 3, -1, -1)
    if grid.shape[-1] < MIN_PIXELS:
        grid = F.interpolate(grid, scale_factor=MIN_PIXELS // grid.shape[-1], mode="nearest")
    save_image(grid, path, nrow=len(rows[0]), padding=2, pad_value=1.0)


@torch.no_grad()
def write_sheets(model: EvalModel, domain: Domain, generated: torch.Tensor, simulated: torch.Tensor,
                 real: torch.Tensor, out_dir: Path, columns: int = 10, seed: int = 0, prefix: str = "") -> dict[str, str]:
    """Write the PNGs (names start with `prefix`) into `out_dir`; returns {title: file name} for the markdown page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = min(columns, len(generated), len(real))
    title = "Simulator (top) · generated from the same labels (middle) · real test (bottom)"
    sheets = {title: f"{prefix}sim_gen_real.png"}
    _save_rows([simulated[:n], generated[:n], real[:n]], out_dir / sheets[title])
    gen = torch.Generator().manual_seed(derived_seed(seed, "sheets"))
    layout = model.layout
    if layout.name == "faces":
        yaw = layout["yaw_deg"]
        steps = torch.linspace(-60, 60, columns) / yaw.scale  # standardized
        rows = []
        for _ in range(4):
            base = domain.sample_labels(1, gen).float().cpu().repeat(columns, 1)  # [cols, D]
            base[:, layout["pitch_deg"].start] = 0
            base[:, yaw.start] = steps
            z = torch.randn(1, model.nz, generator=gen).expand(columns, -1)
            rows.append(model.generate(z, base).cpu())
        sheets["Yaw sweep −60° … +60° (one face and noise vector per row)"] = f"{prefix}yaw_sweep.png"
        _save_rows(rows, out_dir / f"{prefix}yaw_sweep.png")
        z = torch.randn(1, model.nz, generator=gen).expand(columns, -1)
        rows = []
        for comp in range(4):
            lab = torch.zeros(columns, layout.dim)
            lab[:, layout["shape"].start + comp] = torch.linspace(-3, 3, columns)
            rows.append(model.generate(z, lab).cpu())
        sheets["Shape components 0–3 (rows) from −3σ to +3σ, other labels 0, fixed noise"] = f"{prefix}shape_sweep.png"
        _save_rows(rows, out_dir / f"{prefix}shape_sweep.png")
    elif layout.name == "digits":
        digit = layout["digit"]
        lab = torch.zeros(digit.size, layout.dim)
        lab[:, digit.slice] = torch.eye(digit.size)
        rows = [model.generate(torch.randn(1, model.nz, generator=gen).expand(digit.size, -1), lab).cpu()
                for _ in range(6)]
        sheets["Digit class 0–9 (columns) × noise vector (rows), other fields 0"] = f"{prefix}digit_noise_grid.png"
        _save_rows(rows, out_dir / f"{prefix}digit_noise_grid.png")
    return sheets
