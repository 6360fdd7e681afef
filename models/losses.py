"""RenderBEGAN losses (thesis eq. 3.9) and the BEGAN equilibrium controller (eq. 3.6–3.7).

Conventions (the thesis writes norms; we use means so that image size and part size do not rescale
the balance between terms):
- autoencoder loss L_d(v) = mean |v − D(v)|^η per sample (η = 1 by default, as BEGAN's L1);
- L_z = mean squared error between z̃ and z;
- L_l = Σ over the layout's parts of that part's error — so shape (199 slots), texture (199) and
  angles (2) weigh the same, the "compare each part separately, normalised" of thesis §3.3.1.
  Continuous parts use MSE; a categorical field (the digit class) uses cross-entropy on its slice of
  l̃ read as logits (`categorical="ce"`, default) or MSE against the one-hot (`categorical="mse"`,
  the thesis's plain regression);
- L_c = mean squared feature difference.
Every function returns tensors (never Python floats) so the training step stays free of host syncs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

from models.layouts import LabelLayout

CategoricalLoss = Literal["ce", "mse"]


def ae_loss(x: torch.Tensor, recon: torch.Tensor, eta: int = 1) -> torch.Tensor:
    """L_d per sample: [B, C, S, S] × 2 -> [B] mean |x − D(x)|^η."""
    diff = (x - recon).abs()
    if eta == 2:
        diff = diff.pow(2)
    return diff.flatten(1).mean(dim=1)


def noise_loss(z_pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """L_z: [B, Nz] × 2 -> [] mean squared error."""
    return F.mse_loss(z_pred, z)


def label_loss(
    l_pred: torch.Tensor, labels: torch.Tensor, layout: LabelLayout, categorical: CategoricalLoss = "ce"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_l = Σ_parts loss(part); returns (total [], {part: []}) for per-part logging.

    A part's loss = MSE over all its regressed slots + cross-entropy of each of its categorical
    fields (when `categorical="ce"`; with "mse" the one-hot slots are regressed like the rest).
    """
    per_part: dict[str, torch.Tensor] = {}
    groups = layout.parts or {f.name: (f.name,) for f in layout.fields}
    for part, members in groups.items():
        fields = [layout[name] for name in members]
        ce_fields = [f for f in fields if f.kind == "categorical" and categorical == "ce"]
        reg_slices = [f.slice for f in fields if f not in ce_fields]
        loss = labels.new_zeros(())
        for f in ce_fields:
            loss = loss + F.cross_entropy(l_pred[:, f.slice], labels[:, f.slice].argmax(dim=1))
        if reg_slices:
            pred = torch.cat([l_pred[:, s] for s in reg_slices], dim=1)  # [B, n_part]
            true = torch.cat([labels[:, s] for s in reg_slices], dim=1)
            loss = loss + F.mse_loss(pred, true)
        per_part[part] = loss
    return torch.stack(list(per_part.values())).sum(), per_part


def content_loss(f_gen: torch.Tensor, f_sim: torch.Tensor) -> torch.Tensor:
    """L_c: mean squared difference of content features (any shape) -> []."""
    return F.mse_loss(f_gen, f_sim)


def mask_background(gen: torch.Tensor, sim: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Thesis Fig. 3.8: keep G's pixels where the simulator draws the object, S's background elsewhere,
    so L_c compares objects, not backgrounds. [B, C, S, S], [B, C, S, S], [B, 1, S, S] -> [B, C, S, S]."""
    return mask * gen + (1.0 - mask) * sim


def update_k(k: torch.Tensor, ld_real: torch.Tensor, ld_fake: torch.Tensor, gamma: float, lambda_k: float) -> torch.Tensor:
    """k_{t+1} = clamp(k_t + λ_k (γ L_d(x) − L_d(G)), 0, 1); all [] tensors, no host sync."""
    return (k + lambda_k * (gamma * ld_real.detach() - ld_fake.detach())).clamp(0.0, 1.0)


def m_global(ld_real: torch.Tensor, ld_fake: torch.Tensor, gamma: float) -> torch.Tensor:
    """BEGAN's convergence measure M_global = L_d(x) + |γ L_d(x) − L_d(G)| -> []."""
    return ld_real.detach() + (gamma * ld_real.detach() - ld_fake.detach()).abs()
