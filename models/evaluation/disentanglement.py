"""Seed 003's disentanglement figures for ANY model: Δ′ (eqs. 5–6) and the attribute-correlation table.

The seed measures disentanglement on its encoder: take pairs of images that differ in one attribute
only (the same person smiling / not smiling), read both with the model's encoder, and average the
code difference per attribute l, normalized by that code's spread over the real data σ_z(l):
    Δ(l) = 1/(σ_z(l)·N_P) · Σ_P (z^s(l) − z^ns(l)),    Δ′(l) = Δ(l) / max_l Δ(l).
A disentangled model moves one code (Δ′ = 1) and leaves the others near 0 (the seed: off-target
changes "less than 1/5th" of the target's, a 5-fold contrast).

Here every method is scored from the generic `EvalModel`, so the pairs come from the model itself:
G(z, l_before) and G(z, l_after) with the same z and labels that differ in one attribute only (a
continuous slot moved from −step/2 to +step/2 σ, or the class of a categorical field switched), read
back by the model's own predictor (the seed's definition) or by another reader such as the oracle.
Rows of the Δ′ matrix are the attribute changed, columns the attribute read. A categorical field is
read as "is the argmax the class the after-label asks for" (logits or regressed one-hots alike).
Magnitudes |Δ| are used, so a reader whose code moves the opposite way still counts as responding.

The correlation table (the seed's Table 1) is the Pearson correlation between the continuous
attributes the reader reads off the real test images; the seed's summary is the mean absolute
off-diagonal correlation (0.22 for SYNTH-VAE-GAN vs 0.43 for C-VAE-GAN). Where the real side has
ground truth for those attributes (faces-m), the same table of the true labels is the reference:
an encoder cannot be expected to read less correlation than is really there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from models.domains.base import Domain
from models.evaluation.pools import derived_seed
from models.evaluation.subject import EvalModel
from models.layouts import LabelField, LabelLayout

Reader = Callable[[torch.Tensor], torch.Tensor]  # images [B, C, S, S] in [0, 1] → labels [B, D]
SIGMA_MIN = 1e-6  # floor of σ_z: a reader that is constant on real images would divide by zero


@dataclass(frozen=True)
class DisentanglementConfig:
    seed: int = 0  # drives labels, noise and the class switches
    pairs: int = 200  # N_P image pairs per changed attribute
    step: float = 2.0  # size of a continuous change in standardized units (σ of the prior): −1σ → +1σ
    vector_components: int = 3  # vector fields (shape, texture) contribute their first k components
    real_max: int = 2000  # real test images for σ_z and the correlation table
    batch_size: int = 256  # images per forward pass


@dataclass(frozen=True)
class Attribute:
    """One scalar attribute: a continuous slot (`slot` = its index in the label vector) or a whole
    categorical field (`slot` None)."""

    name: str
    field: LabelField
    slot: int | None

    @property
    def categorical(self) -> bool:
        return self.slot is None


def attributes_of(layout: LabelLayout, vector_components: int = 3) -> list[Attribute]:
    """The attributes scored for a layout, in layout order: digits → digit, rotation_deg, …, dy;
    faces → shape[0..k), texture[0..k), yaw_deg, pitch_deg."""
    if vector_components < 1:
        raise ValueError(f"vector_components: must be ≥ 1, got {vector_components}")
    out: list[Attribute] = []
    for f in layout.fields:
        if f.kind == "categorical":
            out.append(Attribute(f.name, f, None))
        elif f.size == 1:
            out.append(Attribute(f.name, f, f.start))
        else:
            out += [Attribute(f"{f.name}[{i}]", f, f.start + i) for i in range(min(vector_components, f.size))]
    return out


def read(pred: torch.Tensor, attrs: list[Attribute], labels: torch.Tensor) -> torch.Tensor:
    """[N, D] reader output → [N, A] attribute reads: the slot's value for continuous attributes, and
    1[argmax = the class `labels` asks for] for categorical ones."""
    cols = []
    for a in attrs:
        if a.slot is not None:
            cols.append(pred[:, a.slot])
        else:
            sl = a.field.slice
            cols.append((pred[:, sl].argmax(1) == labels[:, sl].argmax(1)).float())
    return torch.stack(cols, dim=1)


def real_spread(pred: torch.Tensor, attrs: list[Attribute]) -> torch.Tensor:
    """σ_z per attribute [A] over real images: std of a continuous read; for a categorical field the
    mean over classes of the std of 1[argmax = class] (the spread of its read across real images)."""
    out = []
    for a in attrs:
        if a.slot is not None:
            out.append(pred[:, a.slot].std())
        else:
            hits = torch.nn.functional.one_hot(pred[:, a.field.slice].argmax(1), a.field.size).float()
            out.append(hits.std(dim=0).mean())
    return torch.stack(out).clamp_min(SIGMA_MIN)


def attribute_pairs(layout: LabelLayout, attr: Attribute, base: torch.Tensor, step: float,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(before, after) labels [P, D]: `base` with only `attr` changed (a slot −step/2 → +step/2, or a
    class c1 → c2 ≠ c1)."""
    before, after = base.clone(), base.clone()
    if attr.slot is not None:
        before[:, attr.slot] = -step / 2
        after[:, attr.slot] = step / 2
        return before, after
    k, sl = attr.field.size, attr.field.slice
    c1 = torch.randint(0, k, (len(base),), generator=gen)
    c2 = (c1 + torch.randint(1, k, (len(base),), generator=gen)) % k
    before[:, sl] = torch.nn.functional.one_hot(c1, k).float()
    after[:, sl] = torch.nn.functional.one_hot(c2, k).float()
    return before, after


def _corr(x: torch.Tensor) -> torch.Tensor:
    """[N, A] → [A, A] Pearson correlation; NaN where a column is constant."""
    x = x.double() - x.double().mean(0)
    std = x.pow(2).mean(0).sqrt()
    c = (x.T @ x) / len(x) / (std[:, None] * std[None, :])
    c[std[:, None].expand_as(c) == 0] = math.nan
    c[std[None, :].expand_as(c) == 0] = math.nan
    return c.float()


def _mean_abs_offdiag(c: torch.Tensor) -> float:
    mask = ~torch.eye(len(c), dtype=torch.bool)
    vals = c[mask].abs()
    return float(vals.mean()) if len(vals) and bool(torch.isfinite(vals).all()) else math.nan


@dataclass
class Disentanglement:
    """Δ, Δ′ [changed, read] and the correlation tables, with the flat figures for a report."""

    reader: str
    attributes: list[str]
    delta: torch.Tensor  # [A, A] signed Δ: row = attribute changed, column = attribute read
    delta_prime: torch.Tensor  # [A, A] |Δ| / row max
    corr_attributes: list[str]  # continuous attributes of the correlation tables
    corr: torch.Tensor  # [Ac, Ac] correlation of the reader's reads of real test images
    corr_truth: torch.Tensor | None  # [Ac, Ac] correlation of the true labels (None if unknown)
    pairs: int
    real_count: int
    step: float

    @property
    def figures(self) -> dict[str, float]:
        """Flat figures: Δ′ on/off target, the seed's contrast, target response, mean |correlation|.

        `dis_delta_prime_off` (0 = perfectly disentangled) is the headline Δ′ figure.
        """
        a = len(self.attributes)
        off = ~torch.eye(a, dtype=torch.bool)
        mag = self.delta.abs()
        diag = mag.diagonal()
        worst_off = torch.where(off, mag, torch.zeros_like(mag)).amax(dim=1)  # [A]
        contrast = torch.where(worst_off > 0, diag / worst_off.clamp_min(1e-30), torch.full_like(diag, math.inf))
        prefix = "dis" if self.reader == "model" else f"dis_{self.reader}"
        out = {
            f"{prefix}_delta_prime_off": float(self.delta_prime[off].mean()) if a > 1 else math.nan,
            f"{prefix}_delta_prime_on": float(self.delta_prime.diagonal().mean()),
            f"{prefix}_contrast": float(contrast.median()) if a > 1 else math.nan,
            f"{prefix}_target_response": float(diag.mean()),
            f"{prefix}_corr_abs_mean": _mean_abs_offdiag(self.corr),
        }
        if self.corr_truth is not None:
            out[f"{prefix}_corr_abs_mean_truth"] = _mean_abs_offdiag(self.corr_truth)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN stays float; the report writer turns it into null)."""
        return {"reader": self.reader, "attributes": self.attributes, "pairs": self.pairs, "step": self.step,
                "real_count": self.real_count, "delta": self.delta.tolist(),
                "delta_prime": self.delta_prime.tolist(), "corr_attributes": self.corr_attributes,
                "corr": self.corr.tolist(),
                "corr_truth": None if self.corr_truth is None else self.corr_truth.tolist(),
                "figures": self.figures}

    def markdown(self) -> str:
        """The Δ′ matrix and the correlation table(s) as a markdown section."""
        who = "the model's own predictor" if self.reader == "model" else f"the {self.reader}"
        lines = [f"## Disentanglement (seed 003), read by {who}", "",
                 f"Δ′: each row changes one attribute in G's labels (same z; continuous −{self.step / 2:g}σ → "
                 f"+{self.step / 2:g}σ, categorical: another class) over {self.pairs} pairs; columns are |Δ| of "
                 "each attribute read back, in units of its spread over real images, over the row's largest "
                 "(1 = the largest response; a disentangled model has 1 on the diagonal and ≈ 0 elsewhere).", ""]
        lines += _table(self.attributes, self.attributes, self.delta_prime, "changed ↓ / read →")
        lines += ["", "| figure | value |", "|---|---|"]
        lines += [f"| `{k}` | {v:.3g} |" for k, v in self.figures.items()]
        lines += ["", f"Attribute correlation over {self.real_count} real test images read by {who} "
                  "(the seed's Table 1):", ""]
        lines += _table(self.corr_attributes, self.corr_attributes, self.corr, "")
        if self.corr_truth is not None:
            lines += ["", "The same table for the true labels of those images (reference):", ""]
            lines += _table(self.corr_attributes, self.corr_attributes, self.corr_truth, "")
        return "\n".join(lines) + "\n"


def _table(rows: list[str], cols: list[str], values: torch.Tensor, corner: str) -> list[str]:
    out = [f"| {corner} | " + " | ".join(f"`{c}`" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in zip(rows, values.tolist(), strict=True):
        out.append(f"| `{name}` | " + " | ".join("–" if not math.isfinite(v) else f"{v:.2f}" for v in row) + " |")
    return out


def _batched(fn: Callable[..., torch.Tensor], *args: torch.Tensor, batch_size: int) -> torch.Tensor:
    n = len(args[0])
    return torch.cat([fn(*(a[i:i + batch_size] for a in args)).float().cpu() for i in range(0, n, batch_size)])


@torch.no_grad()
def disentanglement(model: EvalModel, domain: Domain, cfg: DisentanglementConfig = DisentanglementConfig(),
                    reader: Reader | None = None, reader_name: str = "model") -> Disentanglement:
    """Δ′ and the correlation tables of `model` on `domain`, read by `reader` (default: its predictor)."""
    if cfg.pairs < 2 or cfg.step <= 0:
        raise ValueError(f"pairs/step: need pairs ≥ 2 and step > 0, got {cfg.pairs} and {cfg.step}")
    read_fn = reader if reader is not None else model.predict
    layout = model.layout
    attrs = attributes_of(layout, cfg.vector_components)
    real = domain.real_test() or domain.real_train()
    n_real = min(cfg.real_max, len(real.images))
    real_images = real.images[:n_real].float().cpu()
    real_pred = _batched(read_fn, real_images, batch_size=cfg.batch_size)  # [N, D]
    sigma = real_spread(real_pred, attrs)  # [A]

    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "disentanglement"))
    delta = torch.zeros(len(attrs), len(attrs))
    for i, attr in enumerate(attrs):
        base = domain.sample_labels(cfg.pairs, gen).float().cpu()  # [P, D]
        z = torch.randn(cfg.pairs, model.nz, generator=gen)  # [P, nz], shared by both images of a pair
        before, after = attribute_pairs(layout, attr, base, cfg.step, gen)
        pred_b = _batched(read_fn, _batched(model.generate, z, before, batch_size=cfg.batch_size),
                          batch_size=cfg.batch_size)
        pred_a = _batched(read_fn, _batched(model.generate, z, after, batch_size=cfg.batch_size),
                          batch_size=cfg.batch_size)
        change = read(pred_a, attrs, after) - read(pred_b, attrs, after)  # [P, A]; class of interest: after's
        delta[i] = change.mean(0) / sigma
    row_max = delta.abs().amax(dim=1, keepdim=True)
    delta_prime = delta.abs() / torch.where(row_max > 0, row_max, torch.full_like(row_max, math.nan))

    slots = [a.slot for a in attrs if a.slot is not None]  # continuous attributes only
    corr = _corr(real_pred[:, slots])
    truth = None
    if real.labels is not None:
        true = real.labels[:n_real].float().cpu()[:, slots]
        if bool((true.std(0) > 0).all()):  # digits' real continuous labels are unknown (all 0): no reference
            truth = _corr(true)
    return Disentanglement(reader=reader_name, attributes=[a.name for a in attrs], delta=delta,
                           delta_prime=delta_prime, corr_attributes=[a.name for a in attrs if not a.categorical], corr=corr,
                           corr_truth=truth, pairs=cfg.pairs, real_count=n_real, step=cfg.step)
