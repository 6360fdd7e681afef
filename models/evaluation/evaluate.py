"""Orchestration of `labelforge eval`: baselines, label fidelity, predictor accuracy, realism, diversity.

The flow, each phase a function below:
1. baselines — oracle (labeled real side, evaluation only) and source-only (simulator) CNNs of one
   architecture, cached on disk per (domain, size, seed, config);
2. samples — generated images G(z, l) for prior labels l, their simulator renders S(l), real test images,
   and (where the domain can pose a real image in 2-D: digits) real test images of each l's class in l's pose;
3. figures — fidelity (oracle reads G(z, l) vs l) beside its ceiling (the oracle reading those posed real
   images: an oracle trained on upright scans misreads strongly rotated digits, whoever made them),
   predictor on real test vs the baselines, gap closed, KID on oracle features, diversity;
   domain-specific summaries with the issue's targets.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from models import data_cache
from models.domains.base import Domain, RealSplit
from models.evaluation import metrics, pools
from models.evaluation.disentanglement import DisentanglementConfig, disentanglement
from models.evaluation.pools import derived_seed, real_labeled_pool, simulator_pool
from models.evaluation.predictors import LabelCNN, PredictorConfig, batched, cached_predictor, train_predictor
from models.evaluation.subject import EvalModel
from models.layouts import LabelLayout

log = logging.getLogger(__name__)

# The pool recipes are part of what a cached baseline learned from: editing pools.py retrains the cache
# (a bug there once fed the faces-m oracle thresholded images and the cache kept serving that oracle).
POOLS_FINGERPRINT = data_cache.file_fingerprint(Path(pools.__file__))
EvalProgress = Callable[[str, int, int], None]  # (what is being done, steps done, total steps)

SHAPE_DIMS = 10  # shape coefficients scored by gen_shape10_rmse
DOMAIN_GAP_MIN = 3.0  # issue 4: source-only error must be ≥ 3× the oracle's


@dataclass(frozen=True)
class EvalConfig:
    """Sample sizes and baseline recipe; `quick()` is the few-minutes-on-CPU variant."""

    seed: int = 0  # drives every sample and both baselines
    gen_count: int = 2000  # generated images scored for fidelity and KID
    real_test_max: int = 2000  # real test images used (the first ones of the split)
    oracle_count: int = 20000  # labeled real-side images for the oracle (digits: the whole train split)
    source_count: int = 20000  # simulator images for the source-only predictor
    predictor: PredictorConfig = PredictorConfig()  # size/channels/dim/seed are filled in per run
    kid_subsets: int = 50  # KID subsets
    kid_subset_size: int = 1000  # samples per KID subset (capped by the set sizes)
    div_labels: int = 16  # labels for the z-spread figure
    div_noise: int = 8  # noise vectors per label
    batch_size: int = 256  # images per forward pass
    sheet_columns: int = 10  # images per row in contact sheets
    dis_pairs: int = 200  # image pairs per changed attribute for Δ′ (seed 003)

    @classmethod
    def quick(cls, seed: int = 0) -> EvalConfig:
        return cls(seed=seed, gen_count=500, real_test_max=500, oracle_count=2000, source_count=2000,
                   predictor=PredictorConfig(width=16, feature_dim=96, epochs=5), kid_subsets=10, kid_subset_size=250,
                   div_labels=8, div_noise=6, dis_pairs=50)


@dataclass
class Baselines:
    oracle: LabelCNN | None  # None when the domain has no real labels (faces)
    source: LabelCNN
    fields: tuple[str, ...]  # label fields both were trained on
    info: dict[str, Any]


def supervised_fields(layout: LabelLayout) -> tuple[str, ...]:
    """Fields with ground truth on the real side: digits only know their class, faces know everything."""
    return ("digit",) if layout.name == "digits" else tuple(layout.names)


def train_baselines(domain: Domain, cfg: EvalConfig, domain_key: dict[str, Any], has_oracle: bool,
                    device: torch.device | str, progress: EvalProgress | None = None) -> Baselines:
    """Oracle and source-only CNNs, from the cache when the same recipe was trained before."""
    fields = supervised_fields(domain.layout)
    pcfg = replace(cfg.predictor, image_size=domain.image_size, channels=domain.channels,
                   label_dim=domain.layout.dim, seed=cfg.seed)
    info: dict[str, Any] = {"config": asdict(pcfg), "fields": list(fields)}

    def fit(kind: str, pool_fn: Callable[[Domain, int, int], RealSplit], count: int) -> Callable[[], LabelCNN]:
        def build() -> LabelCNN:
            what = f"{kind} baseline ({count:,} images)"
            if progress is not None:
                progress(f"{what}: drawing the images", 0, 1)
            pool = pool_fn(domain, count, cfg.seed)
            assert pool.labels is not None
            info[f"{kind}_train_count"] = len(pool.images)
            steps = None if progress is None else (lambda done, total: progress(f"{what}: training", done, total))
            return train_predictor(pool.images, pool.labels, domain.layout, fields, pcfg, device, steps)
        return build

    nets: dict[str, LabelCNN | None] = {"oracle": None}
    recipes: list[tuple[str, Callable[[Domain, int, int], RealSplit], int]] = [
        ("source", simulator_pool, cfg.source_count), ("oracle", real_labeled_pool, cfg.oracle_count)]
    for kind, pool_fn, count in recipes:
        if kind == "oracle" and not has_oracle:
            continue
        t0 = time.perf_counter()
        data = {**domain_key, "count": count, "fields": list(fields), "pools": POOLS_FINGERPRINT}
        nets[kind], cached = cached_predictor(kind, domain.name, pcfg, data, fit(kind, pool_fn, count), device)
        info[f"{kind}_cached"] = cached
        info[f"{kind}_seconds"] = round(time.perf_counter() - t0, 2)
    source = nets["source"]
    assert source is not None
    return Baselines(oracle=nets["oracle"], source=source, fields=fields, info=info)


@dataclass
class Samples:
    labels: torch.Tensor  # [N, D] prior labels
    generated: torch.Tensor  # [N, C, S, S] G(z, l)
    simulated: torch.Tensor  # [N, C, S, S] S(l) from the domain renderer
    real: RealSplit  # real test images (labels may be None)
    fixed_label: torch.Tensor  # [L, K, C, S, S] K noise vectors per label
    posed_real: torch.Tensor | None = None  # [N, C, S, S] real test images of each label's class in its pose


@torch.no_grad()
def draw_samples(model: EvalModel, domain: Domain, cfg: EvalConfig) -> Samples:
    """Seeded generated / simulated / real image sets at the model's size, on the CPU."""
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "samples"))
    labels = domain.sample_labels(cfg.gen_count, gen).float().cpu()  # [N, D]
    z = torch.randn(cfg.gen_count, model.nz, generator=gen)  # [N, nz]
    generated = torch.cat([model.generate(z[i:i + cfg.batch_size], labels[i:i + cfg.batch_size]).float().cpu()
                           for i in range(0, cfg.gen_count, cfg.batch_size)])
    simulated = torch.cat([domain.simulate(labels[i:i + cfg.batch_size].to(domain.device))[0].float().cpu()
                           for i in range(0, cfg.gen_count, cfg.batch_size)])
    fixed = domain.sample_labels(cfg.div_labels, gen).float().cpu()  # [L, D]
    fz = torch.randn(cfg.div_labels, cfg.div_noise, model.nz, generator=gen)  # [L, K, nz]
    fixed_imgs = torch.stack([model.generate(fz[i], fixed[i].expand(cfg.div_noise, -1)).float().cpu()
                              for i in range(cfg.div_labels)])  # [L, K, C, S, S]
    real = domain.real_test() or domain.real_train()
    n = min(cfg.real_test_max, len(real.images))
    real = RealSplit(real.images[:n].float().cpu(), None if real.labels is None else real.labels[:n].float().cpu())
    return Samples(labels, generated.clamp(0, 1), simulated, real, fixed_imgs.clamp(0, 1),
                   posed_real(domain, real, labels, cfg.seed))


def posed_real(domain: Domain, real: RealSplit, labels: torch.Tensor, seed: int) -> torch.Tensor | None:
    """For each requested label, a real test image of its class moved to its pose (`Domain.pose_real`):
    what a perfect generator would make. None without one categorical field, real labels or a 2-D pose."""
    from models.trainers.labelgan import class_field

    try:
        cls = class_field(domain.layout).slice
    except ValueError:  # not exactly one categorical field
        return None
    if real.labels is None:
        return None
    want, have = labels[:, cls].argmax(1), real.labels[:, cls].argmax(1)  # [N], [M]
    gen = torch.Generator().manual_seed(derived_seed(seed, "posed-real"))  # its own stream: other samples unchanged
    pick = torch.empty_like(want)
    for k in want.unique().tolist():
        rows, pool = (want == k).nonzero().squeeze(1), (have == k).nonzero().squeeze(1)
        if len(pool) == 0:
            return None
        pick[rows] = pool[torch.randint(0, len(pool), (len(rows),), generator=gen)]
    posed = domain.pose_real(real.images[pick].to(domain.device), labels.to(domain.device))
    return None if posed is None else posed.float().cpu().clamp(0, 1)


def _label_figures(prefix: str, pred: torch.Tensor, target: torch.Tensor, layout: LabelLayout) -> dict[str, float]:
    """Per-domain label errors of one predictor: accuracy for digits; angle MAE and shape/texture RMSE for faces."""
    if layout.name == "digits":
        return {f"{prefix}_acc": metrics.class_accuracy(pred, target, layout["digit"])}
    out = {f"{prefix}_yaw_mae_deg": metrics.field_mae(pred, target, layout["yaw_deg"]),
           f"{prefix}_pitch_mae_deg": metrics.field_mae(pred, target, layout["pitch_deg"])}
    if "shape" in layout.names:
        out[f"{prefix}_shape{SHAPE_DIMS}_rmse"] = metrics.field_rmse(pred, target, layout["shape"], SHAPE_DIMS)
        out[f"{prefix}_texture{SHAPE_DIMS}_rmse"] = metrics.field_rmse(pred, target, layout["texture"], SHAPE_DIMS)
    return out


def _target(name: str, value: float, op: str, threshold: float, note: str = "") -> dict[str, Any]:
    ok = math.isfinite(value) and math.isfinite(threshold) and (value >= threshold if op == ">=" else value <= threshold)
    return {"name": name, "value": value, "op": op, "threshold": threshold, "pass": bool(ok), "note": note}


def _digits_summary(d: dict[str, float]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    gap = metrics.gap_closed(d["source_only_acc"], d["pred_acc"], d["oracle_acc"], higher_is_better=True)
    ratio = _ratio(1 - d["source_only_acc"], 1 - d["oracle_acc"])
    summary = {"gen_digit_acc": d["gen_acc"], "pred_acc": d["pred_acc"], "source_only_acc": d["source_only_acc"],
               "oracle_acc": d["oracle_acc"], "gap_closed": gap}
    if "gen_acc_ceiling" in d:  # what real digits in the requested poses score: the reading's ceiling
        summary["gen_digit_acc_ceiling"] = d["gen_acc_ceiling"]
    targets = [
        _target("gen_digit_acc", d["gen_acc"], ">=", 0.98, "oracle reads generated digits as the requested class"
                + (f"; real test digits in the requested poses read {d['gen_acc_ceiling']:.3f} (the reading's ceiling)"
                   if "gen_acc_ceiling" in d else "")),
        _target("gap_closed", gap, ">=", 0.8, "predictor on real test digits, source-only → oracle"),
        _target("domain_gap_ratio", ratio, ">=", DOMAIN_GAP_MIN, "source-only error / oracle error on real test"),
    ]
    return summary, targets


def _faces_summary(d: dict[str, float]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    gap = metrics.gap_closed(d["source_only_yaw_mae_deg"], d["pred_yaw_mae_deg"], d["oracle_yaw_mae_deg"])
    gap_pitch = metrics.gap_closed(d["source_only_pitch_mae_deg"], d["pred_pitch_mae_deg"], d["oracle_pitch_mae_deg"])
    ratio = _ratio(d["source_only_yaw_mae_deg"], d["oracle_yaw_mae_deg"])
    ratio_pitch = _ratio(d["source_only_pitch_mae_deg"], d["oracle_pitch_mae_deg"])
    summary = {
        "gen_yaw_mae_deg": d["gen_yaw_mae_deg"], "gen_pitch_mae_deg": d["gen_pitch_mae_deg"],
        "gen_shape10_rmse": d["gen_shape10_rmse"], "prior_shape10_rmse": d["prior_shape10_rmse"],
        "pred_yaw_mae_deg": d["pred_yaw_mae_deg"], "pred_pitch_mae_deg": d["pred_pitch_mae_deg"],
        "source_only_yaw_mae_deg": d["source_only_yaw_mae_deg"], "oracle_yaw_mae_deg": d["oracle_yaw_mae_deg"],
        "gap_closed": gap, "kid_gen_real": d["kid_gen_real"], "kid_sim_real": d["kid_sim_real"],
    }
    targets = [
        _target("gen_yaw_mae_deg", d["gen_yaw_mae_deg"], "<=", 3.0, "oracle-read yaw of G(z, l) vs requested"),
        _target("gen_pitch_mae_deg", d["gen_pitch_mae_deg"], "<=", 3.0, "oracle-read pitch of G(z, l) vs requested"),
        _target("gen_shape10_rmse", d["gen_shape10_rmse"], "<=", 0.75 * d["prior_shape10_rmse"],
                "clearly below prior_shape10_rmse (here: ≤ 0.75×)"),
        _target("pred_yaw_mae_deg", d["pred_yaw_mae_deg"], "<=", 1.5 * d["oracle_yaw_mae_deg"], "≤ 1.5× oracle"),
        _target("pred_pitch_mae_deg", d["pred_pitch_mae_deg"], "<=", 1.5 * d["oracle_pitch_mae_deg"], "≤ 1.5× oracle"),
        _target("gap_closed", gap, ">=", 0.8, "yaw MAE, source-only → oracle"),
        _target("gap_closed_pitch", gap_pitch, ">=", 0.8, "pitch MAE, source-only → oracle"),
        _target("kid_gen_real", d["kid_gen_real"], "<=", d["kid_sim_real"] / 5, "≤ kid_sim_real / 5"),
        _target("domain_gap_ratio", ratio, ">=", DOMAIN_GAP_MIN, "source-only / oracle yaw MAE on real test"),
        _target("domain_gap_ratio_pitch", ratio_pitch, ">=", DOMAIN_GAP_MIN, "source-only / oracle pitch MAE"),
    ]
    return summary, targets


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def _kid(a: torch.Tensor, b: torch.Tensor, cfg: EvalConfig) -> tuple[float, float]:
    return metrics.kid(a, b, cfg.kid_subsets, cfg.kid_subset_size, seed=derived_seed(cfg.seed, "kid"))


@torch.no_grad()
def compute_figures(model: EvalModel, samples: Samples, base: Baselines, cfg: EvalConfig,
                    device: torch.device | str) -> tuple[dict[str, float], dict[str, Any]]:
    """All figures as one flat dict, plus the diversity record."""
    layout, bs = model.layout, cfg.batch_size
    judge = base.oracle if base.oracle is not None else base.source  # feature net for realism/diversity
    d: dict[str, float] = {}
    real = samples.real
    if base.oracle is not None and real.labels is not None:
        read_gen = batched(base.oracle, samples.generated, bs, device)  # [N, D]
        d.update(_label_figures("gen", read_gen, samples.labels, layout))
        if samples.posed_real is not None:  # the same reading of real digits in the requested poses
            read_posed = batched(base.oracle, samples.posed_real, bs, device)
            d["gen_acc_ceiling"] = _label_figures("posed", read_posed, samples.labels, layout)["posed_acc"]
        if "shape" in layout.names:
            chance = layout_prior_like(samples.labels, cfg.seed)
            d["prior_shape10_rmse"] = metrics.field_rmse(read_gen, chance, layout["shape"], SHAPE_DIMS)
        d.update(_label_figures("pred", batched(model.predict, real.images, bs), real.labels, layout))
        d.update(_label_figures("source_only", batched(base.source, real.images, bs, device), real.labels, layout))
        d.update(_label_figures("oracle", batched(base.oracle, real.images, bs, device), real.labels, layout))
    # cycle: the model's own predictor reading its generated images (meaningful even without real labels)
    cycle = _label_figures("cycle", batched(model.predict, samples.generated, bs), samples.labels, layout) \
        if layout.name in ("digits", "faces") else {}
    d.update(cycle)
    f_gen = batched(judge.features, samples.generated, bs, device)  # [N, F]
    f_sim = batched(judge.features, samples.simulated, bs, device)
    f_real = batched(judge.features, real.images, bs, device)
    d["kid_gen_real"], d["kid_gen_real_std"] = _kid(f_gen, f_real, cfg)
    d["kid_sim_real"], d["kid_sim_real_std"] = _kid(f_sim, f_real, cfg)
    fixed = samples.fixed_label
    f_fixed = batched(judge.features, fixed.flatten(0, 1), bs, device).view(fixed.shape[0], fixed.shape[1], -1)
    div = metrics.diversity(f_fixed, f_gen, f_real)
    return d, {**div.as_dict(), "feature_net": "oracle" if base.oracle is not None else "source_only"}


def layout_prior_like(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Independent N(0, 1) labels shaped like `labels`: the chance baseline for continuous fields."""
    gen = torch.Generator().manual_seed(derived_seed(seed, "chance"))
    return torch.randn(labels.shape, generator=gen)


def domain_fingerprint(domain: Domain) -> str:
    """Hash of the source of every `models.*` module the domain's code reaches (its module, the modules
    those import, the types of its attributes such as a renderer): editing the domain or its renderer
    retrains the cached baselines, editing an unrelated renderer does not."""
    todo = [sys.modules[type(domain).__module__]]
    todo += [sys.modules[type(v).__module__] for v in vars(domain).values() if type(v).__module__ in sys.modules]
    seen: dict[str, Path] = {}
    while todo:
        mod = todo.pop()
        if not mod.__name__.startswith(("models.", "tests.")) or mod.__name__ in seen or not getattr(mod, "__file__", None):
            continue
        seen[mod.__name__] = Path(mod.__file__ or "")
        for obj in vars(mod).values():
            name = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
            if isinstance(name, str) and name in sys.modules:
                todo.append(sys.modules[name])
    return data_cache.file_fingerprint(*(seen[name] for name in sorted(seen)))


def evaluate(model: EvalModel, domain: Domain, cfg: EvalConfig, domain_key: dict[str, Any] | None = None,
             device: torch.device | str = "cpu", mode: str = "full",
             progress: EvalProgress | None = None) -> tuple[dict[str, Any], Samples]:
    """Score `model` on `domain`; returns the JSON-ready report and the samples (for contact sheets).
    `progress` hears each phase (and each baseline training step) as it happens."""
    def phase(what: str) -> None:
        if progress is not None:
            progress(what, 0, 1)

    if (domain.image_size, domain.channels, domain.layout.name) != (model.image_size, model.channels,
                                                                    model.layout.name):
        raise ValueError(f"model ({model.image_size}px, {model.channels}ch, {model.layout.name}) does not match "
                         f"domain '{domain.name}' ({domain.image_size}px, {domain.channels}ch, {domain.layout.name})")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    real_test = domain.real_test()
    has_labels = real_test is not None and real_test.labels is not None
    key = {"domain": domain.name, "image_size": domain.image_size, "domain_seed": domain.seed,
           "code": domain_fingerprint(domain), **(domain_key or {})}
    base = train_baselines(domain, cfg, key, has_labels, device, progress)
    timings["baselines_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    phase(f"generating {cfg.gen_count:,} images")
    samples = draw_samples(model, domain, cfg)
    timings["samples_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    phase("scoring fidelity, predictor, KID and diversity")
    figures, div = compute_figures(model, samples, base, cfg, device)
    timings["figures_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    phase("measuring disentanglement (Δ′)")
    dis_cfg = DisentanglementConfig(seed=cfg.seed, pairs=cfg.dis_pairs, real_max=cfg.real_test_max,
                                    batch_size=cfg.batch_size)
    dis = [disentanglement(model, domain, dis_cfg)]  # read by the model's own predictor (the seed's Δ′)
    if base.oracle is not None and set(base.fields) == set(domain.layout.names):  # oracle knows every field
        oracle = base.oracle
        dis.append(disentanglement(model, domain, dis_cfg, reader=lambda x: batched(oracle, x, device=device),
                                   reader_name="oracle"))
    for d in dis:
        figures.update(d.figures)
    timings["disentanglement_s"] = time.perf_counter() - t3
    if not has_labels:
        summary = {"kid_gen_real": figures["kid_gen_real"], "kid_sim_real": figures["kid_sim_real"]}
        targets = [_target("kid_gen_real", figures["kid_gen_real"], "<=", figures["kid_sim_real"] / 5,
                           "≤ kid_sim_real / 5 (no ground truth on this domain)")]
    elif domain.layout.name == "digits":
        summary, targets = _digits_summary(figures)
    else:
        summary, targets = _faces_summary(figures)
    summary["delta_prime_off"] = figures["dis_delta_prime_off"]  # Δ′ off target: 0 = disentangled
    summary["attr_corr_abs_mean"] = figures["dis_corr_abs_mean"]  # the seed's mean |correlation|
    timings["total_s"] = time.perf_counter() - t0
    gap_targets = [t for t in targets if t["name"].startswith("domain_gap_ratio")]
    report = {
        "model": {"name": model.name, "source": model.source, "path": model.path, "domain": model.domain,
                  "layout": model.layout.name, "image_size": model.image_size, "channels": model.channels,
                  "nz": model.nz, **model.info},
        "mode": mode,
        "summary": summary,
        "targets": targets,
        "collapse": div["collapse"],
        "domain_gap_ok": all(t["pass"] for t in gap_targets) if gap_targets else None,
        "details": {
            "figures": figures,
            "diversity": div,
            "disentanglement": [{**d.as_dict(), "markdown": d.markdown()} for d in dis],
            "baselines": base.info,
            "counts": {"generated": len(samples.generated), "real_test": len(samples.real.images),
                       "fixed_labels": cfg.div_labels, "noise_per_label": cfg.div_noise},
            "seeds": {"eval": cfg.seed, "domain": domain.seed},
            "config": asdict(cfg),
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
            "device": str(device),
        },
    }
    return report, samples
