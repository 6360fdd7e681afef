"""Evaluation metrics: label errors in human units, gap closed, KID and diversity.

Everything here is a pure function of tensors so the figures in a report can be checked by hand:
label errors convert standardized vectors to the layout's human units (degrees, σ), KID is the
unbiased polynomial-kernel MMD² of Bińkowski et al. (2018) averaged over random subsets, and the
diversity figures compare feature spreads of generated images with the spread of real ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.layouts import LabelField


def class_accuracy(pred: torch.Tensor, target: torch.Tensor, field: LabelField) -> float:
    """Share of rows whose argmax over a categorical field matches; pred/target [N, dim]."""
    if field.kind != "categorical":
        raise ValueError(f"{field.name}: accuracy needs a categorical field")
    hits = pred[:, field.slice].argmax(dim=1) == target[:, field.slice].argmax(dim=1)  # [N]
    return float(hits.double().mean())


def field_mae(pred: torch.Tensor, target: torch.Tensor, field: LabelField) -> float:
    """Mean absolute error of a continuous field in its human unit (e.g. degrees = σ · scale)."""
    diff = (pred[:, field.slice] - target[:, field.slice]).double().abs() * abs(field.scale)  # [N, size]
    return float(diff.mean())


def field_rmse(pred: torch.Tensor, target: torch.Tensor, field: LabelField, first: int | None = None) -> float:
    """Root mean square error over the first `first` slots of a field, in the field's human unit.

    For shape/texture the unit is σ of each principal component, so this is the eigenvalue-normalized
    distance the thesis asks for.
    """
    stop = field.stop if first is None else field.start + min(first, field.size)
    diff = (pred[:, field.start:stop] - target[:, field.start:stop]).double() * abs(field.scale)  # [N, k]
    return float(diff.pow(2).mean().sqrt())


def gap_closed(source: float, ours: float, oracle: float, higher_is_better: bool = False) -> float:
    """Share of the source-only → oracle gap that `ours` closes: 0 = no better than source-only, 1 = oracle.

    Errors: (source − ours) / (source − oracle). Scores such as accuracy: (ours − source) / (oracle − source).
    NaN when source and oracle coincide (no gap to close: the benchmark itself is broken).
    """
    gap = (oracle - source) if higher_is_better else (source - oracle)
    gained = (ours - source) if higher_is_better else (source - ours)
    if abs(gap) < 1e-12:
        return math.nan
    return gained / gap


def _polynomial_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² with the kernel k(a, b) = (a·b / d + 1)³; x [m, d], y [m, d] (float64)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3  # [m, m]
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    sum_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    sum_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return sum_xx + sum_yy - 2 * k_xy.mean()


def kid(feats_a: torch.Tensor, feats_b: torch.Tensor, subsets: int = 50, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance between two feature sets [Na, F], [Nb, F] → (mean, std) over subsets.

    Unbiased, so identical distributions give ≈ 0 (it can dip slightly below zero). Subsets of
    min(subset_size, Na, Nb) rows are drawn without replacement with a seeded generator.
    """
    size = min(subset_size, len(feats_a), len(feats_b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(feats_a)} and {len(feats_b)}")
    gen = torch.Generator().manual_seed(seed)
    a, b = feats_a.double().cpu(), feats_b.double().cpu()
    values = torch.stack([
        _polynomial_mmd2_unbiased(a[torch.randperm(len(a), generator=gen)[:size]],
                                  b[torch.randperm(len(b), generator=gen)[:size]])
        for _ in range(subsets)
    ])  # [subsets]
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0


def mean_pairwise_distance(feats: torch.Tensor) -> float:
    """Mean Euclidean distance between distinct rows of [N, F]; the "spread" of a set of images."""
    if len(feats) < 2:
        raise ValueError("spread needs at least 2 samples")
    dist = torch.cdist(feats.double(), feats.double())  # [N, N]
    n = len(feats)
    return float(dist.sum() / (n * (n - 1)))


@dataclass
class Diversity:
    """Feature spreads, each divided by the spread of real test images (so 1.0 = as varied as real)."""

    z_spread: float  # mean over labels of the spread over z at that fixed label
    gen_spread: float  # spread of generated images over random (z, l)
    real_spread: float  # absolute spread of real images (the reference, in feature units)
    collapse: bool  # generator ignores z, or all outputs look alike

    def as_dict(self) -> dict[str, float | bool]:
        return {"z_spread_ratio": self.z_spread, "gen_spread_ratio": self.gen_spread,
                "real_spread": self.real_spread, "collapse": self.collapse}


def diversity(feats_fixed_label: torch.Tensor, feats_gen: torch.Tensor, feats_real: torch.Tensor,
              min_z_ratio: float = 0.01, min_gen_ratio: float = 0.25) -> Diversity:
    """Diversity over z at fixed labels and over the whole generator output; flags collapse.

    feats_fixed_label [L, K, F]: K noise vectors for each of L labels. Collapse means the noise does
    nothing (z spread below `min_z_ratio` of the real spread) or every output looks alike (spread over
    random labels and noise below `min_gen_ratio` of the real spread): the two failure modes a GAN
    trainer can fall into while its losses still look fine.
    """
    real = mean_pairwise_distance(feats_real)
    scale = real if real > 0 else 1.0
    z = sum(mean_pairwise_distance(f) for f in feats_fixed_label) / len(feats_fixed_label) / scale
    gen = mean_pairwise_distance(feats_gen) / scale
    return Diversity(z_spread=z, gen_spread=gen, real_spread=real,
                     collapse=bool(z < min_z_ratio or gen < min_gen_ratio))
