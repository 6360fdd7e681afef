"""Seed 004's two experiments on a trained `dcgan` run: D as a feature extractor, and latent arithmetic.

1. **Linear probe** (seed experiment 1, Radford et al. §5.1): D's real/fake output is dropped and its conv
   stages, each max-pooled to 4×4 and concatenated (`DCGANDiscriminator.features`), feed a linear SVM
   that classifies real digits; the same SVM on raw pixels is the reference. The honest split: the SVM
   is fitted on the digits' real *train* split with its classes (the evaluation-only labeled pool of
   `models.evaluation.pools.real_labeled_pool`, the same one the oracle learns from), C is chosen by
   stratified k-fold cross-validation inside that split, and the 500 real *test* digits are scored once.
2. **Latent arithmetic sheet** (seed experiment 3): G draws `count` images from seeded z; the evaluation's
   oracle reads their classes; for a triple (a, b, c) the z of the `per_class` images read most surely
   as each class are averaged, and mean_a − mean_b + mean_c is decoded, plus `variants − 1` copies with
   uniform noise in ±`jitter` (Radford et al.'s presentation). The oracle's reading of those results
   is reported next to the PNG: digits have no semantic attribute beyond the class, so the sheet shows
   how G's latent space is organised rather than a known answer.

`python -m models.evaluation.dcgan_probe RUN_DIR [--out DIR] [--quick]` writes `dcgan_probe.json` and
`latent_arithmetic.png` (default: RUN_DIR/eval/).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from models.domains.base import Domain, RealSplit
from models.evaluation.evaluate import EvalConfig, domain_fingerprint, supervised_fields
from models.evaluation.pools import derived_seed, real_labeled_pool
from models.evaluation.predictors import LabelCNN, as_float, batched, cached_predictor, train_predictor
from models.layouts import LabelField, LabelLayout

log = logging.getLogger(__name__)

PROBE_FILE = "dcgan_probe.json"
SHEET_FILE = "latent_arithmetic.png"
MIN_PIXELS = 64  # sheet cells are upscaled (nearest) to at least this size


@dataclass(frozen=True)
class ProbeConfig:
    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1)  # LinearSVC C candidates (larger C: slow liblinear, no gain)
    folds: int = 3  # stratified CV folds inside the train split
    max_iter: int = 5000  # liblinear iterations
    pool_count: int = 20_000  # labeled real images for domains that render them (digits: the whole split)
    seed: int = 0


@dataclass(frozen=True)
class ArithmeticConfig:
    triples: tuple[tuple[int, int, int], ...] = ((8, 0, 1), (9, 4, 7), (6, 0, 3))  # (a, b, c): a − b + c
    count: int = 2000  # generated images the oracle reads
    per_class: int = 3  # z vectors averaged per class (the seed's sets of 3)
    variants: int = 6  # decoded results per triple (the first without noise)
    jitter: float = 0.25  # uniform noise half-width added to the other variants
    seed: int = 0


def class_field(layout: LabelLayout) -> LabelField:
    """The layout's one categorical field (digits: `digit`); both experiments are about classes."""
    cats = [f for f in layout.fields if f.kind == "categorical"]
    if len(cats) != 1:
        raise ValueError(f"layout: '{layout.name}' has {len(cats)} categorical fields; the DCGAN probe needs "
                         "exactly one class field (the digits domain)")
    return cats[0]


# --- 1. linear probe ------------------------------------------------------------------------------

def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 cfg: ProbeConfig) -> dict[str, float]:
    """Standardize + LinearSVC with C picked by CV on the train split only, then one score on test.

    `test_y` is read only by the final accuracy: nothing is fitted or selected with it.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    pipe = make_pipeline(StandardScaler(), LinearSVC(max_iter=cfg.max_iter, random_state=cfg.seed))
    search = GridSearchCV(pipe, {"linearsvc__C": list(cfg.c_grid)}, n_jobs=1,
                          cv=StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed))
    search.fit(train_x, train_y)
    pred = search.predict(test_x)
    return {"test_acc": float((pred == test_y).mean()), "cv_acc": float(search.best_score_),
            "C": float(search.best_params_["linearsvc__C"]), "dim": int(train_x.shape[1])}


def probe_discriminator(features: Callable[[torch.Tensor], torch.Tensor], train: RealSplit, test: RealSplit,
                        field: LabelField, cfg: ProbeConfig) -> dict[str, Any]:
    """D features vs raw pixels, same classifier, same split. `features`: images in [0, 1] → [B, F]."""
    if train.labels is None or test.labels is None:
        raise ValueError("train/test: the probe needs labeled real images on both sides")
    y_train = train.labels[:, field.slice].argmax(1).numpy()
    y_test = test.labels[:, field.slice].argmax(1).numpy()
    out: dict[str, Any] = {"field": field.name, "train_count": len(y_train), "test_count": len(y_test)}
    for name, fn in (("d_features", features), ("raw_pixels", lambda x: x.flatten(1))):
        x_train = batched(fn, train.images).numpy()
        x_test = batched(fn, test.images).numpy()
        out[name] = linear_probe(x_train, y_train, x_test, y_test, cfg)
    return out


# --- 2. latent arithmetic -------------------------------------------------------------------------

def class_mean(z: torch.Tensor, probs: torch.Tensor, cls: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the `k` z whose images are read as `cls` most surely → (mean [nz], their indices [k])."""
    read = probs.argmax(1)
    candidates = torch.nonzero(read == cls).flatten()
    if len(candidates) < k:
        raise ValueError(f"triples: class {cls}: only {len(candidates)} of {len(z)} generated images are read as "
                         f"it (need {k}); raise count or pick classes the generator makes")
    top = candidates[probs[candidates, cls].argsort(descending=True)[:k]]
    return z[top].mean(0), top


def _save_sheet(rows: list[torch.Tensor], path: Path) -> None:
    """rows: equal-length [n, C, S, S] in [0, 1] → one grid PNG, one row per tensor (white = separator)."""
    grid = torch.cat(rows).float().clamp(0, 1)
    if grid.shape[1] == 1:
        grid = grid.expand(-1, 3, -1, -1)
    if grid.shape[-1] < MIN_PIXELS:
        grid = F.interpolate(grid, scale_factor=MIN_PIXELS // grid.shape[-1], mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path, nrow=len(rows[0]), padding=2, pad_value=1.0)


@torch.no_grad()
def arithmetic_sheet(generate: Callable[[torch.Tensor], torch.Tensor], read: Callable[[torch.Tensor], torch.Tensor],
                     nz: int, cfg: ArithmeticConfig, out_png: Path) -> dict[str, Any]:
    """Write the sheet; returns what the oracle reads. `generate`: z → images in [0, 1]; `read`: images →
    class probabilities [B, K].

    Row per triple: the a images and the decoded mean_a, a white cell, the same for b and c, a white
    cell, then the decoded results (the first exactly mean_a − mean_b + mean_c). A triple with a class
    that too few generated images are read as is skipped, with the reason in its record.
    """
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "dcgan-arithmetic"))
    z = torch.randn(cfg.count, nz, generator=gen)  # [N, nz]
    images = torch.cat([generate(z[i:i + 256]).float().cpu() for i in range(0, cfg.count, 256)])
    probs = torch.cat([read(images[i:i + 256]).float().cpu() for i in range(0, cfg.count, 256)])  # [N, K]
    n_classes = probs.shape[1]
    blank = torch.ones(1, *images.shape[1:])
    rows, records = [], []
    for a, b, c in cfg.triples:
        cells: list[torch.Tensor] = []
        means = []
        try:
            for cls in (a, b, c):
                mean, idx = class_mean(z, probs, cls, cfg.per_class)
                means.append(mean)
                cells += [images[idx], generate(mean[None]).float().cpu(), blank]
        except ValueError as err:  # a class G (almost) never makes: say so, keep the other triples
            records.append({"a": a, "b": b, "c": c, "skipped": str(err)})
            continue
        result = means[0] - means[1] + means[2]  # [nz]
        noise = (torch.rand(cfg.variants - 1, nz, generator=gen) * 2 - 1) * cfg.jitter
        decoded = generate(torch.cat([result[None], result + noise])).float().cpu()  # [V, C, S, S]
        rows.append(torch.cat([*cells, decoded]))
        read_as = read(decoded).float().cpu().argmax(1).tolist()
        records.append({"a": a, "b": b, "c": c, "result_read_as": read_as,
                        "share_read_as_a": read_as.count(a) / len(read_as),
                        "share_read_as_c": read_as.count(c) / len(read_as)})
    if rows:
        _save_sheet(rows, out_png)
    hist = torch.bincount(probs.argmax(1), minlength=n_classes).tolist()
    return {"png": out_png.name if rows else None, "count": cfg.count, "per_class": cfg.per_class, "jitter": cfg.jitter,
            "generated_read_as": hist, "triples": records}


# --- a run end to end ------------------------------------------------------------------------------

def eval_oracle(domain: Domain, cfg: EvalConfig, domain_kwargs: dict[str, Any], device: str) -> LabelCNN:
    """The evaluation's oracle CNN (labeled real side, evaluation only), from the same cache entry
    `labelforge eval` uses when the key below matches `train_baselines`'s (else trained afresh)."""
    fields = supervised_fields(domain.layout)
    pcfg = replace(cfg.predictor, image_size=domain.image_size, channels=domain.channels,
                   label_dim=domain.layout.dim, seed=cfg.seed)
    key = {"domain": domain.name, "image_size": domain.image_size, "domain_seed": domain.seed,
           "code": domain_fingerprint(domain), "domain_kwargs": domain_kwargs}

    def build() -> LabelCNN:
        pool = real_labeled_pool(domain, cfg.oracle_count, cfg.seed)
        assert pool.labels is not None
        return train_predictor(pool.images, pool.labels, domain.layout, fields, pcfg, device)

    data = {**key, "count": cfg.oracle_count, "fields": list(fields)}
    net, _ = cached_predictor("oracle", domain.name, pcfg, data, build, device)
    return net


def probe_run(run_dir: Path | str, out_dir: Path | str, device: str = "cpu", probe: ProbeConfig | None = None,
              evaluation: EvalConfig | None = None, arithmetic: ArithmeticConfig | None = None) -> dict[str, Any]:
    """Both experiments on a `dcgan` run; writes `dcgan_probe.json` (and the sheet) into `out_dir`.

    `evaluation` is the recipe of the oracle that reads generated classes (default: `labelforge eval`'s).
    """
    probe, evaluation, arithmetic = probe or ProbeConfig(), evaluation or EvalConfig(), arithmetic or ArithmeticConfig()
    from models.domains import get_domain
    from models.evaluation.subject import domain_settings
    from models.trainers.run import load_run

    run = load_run(run_dir, device)
    if run.trainer != "dcgan":
        raise ValueError(f"run: {run_dir} is a '{run.trainer}' run; the probe reads a DCGAN discriminator")
    settings = domain_settings(run.config)
    kwargs = dict(settings["domain_kwargs"])  # type: ignore[call-overload]
    domain = get_domain(run.domain, image_size=run.net.image_size, seed=settings["domain_seed"], device=device,
                        **kwargs)
    field = class_field(domain.layout)
    test = domain.real_test()
    if test is None or test.labels is None:
        raise ValueError(f"domain '{domain.name}': no labeled real test split to score the probe on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    D, G = run.modules.parts["discriminator"], run.modules.parts["generator"]
    train = real_labeled_pool(domain, probe.pool_count, probe.seed)
    test = RealSplit(as_float(test.images).cpu(), test.labels.float().cpu())
    linear = probe_discriminator(lambda x: D.features(x.to(device) * 2 - 1), train, test, field, probe)  # type: ignore[operator]
    oracle = eval_oracle(domain, evaluation, kwargs, device)
    sheet = arithmetic_sheet(lambda z: (G(z.to(device)) + 1) * 0.5,
                             lambda x: oracle(x.to(device))[:, field.slice].softmax(1), run.net.nz, arithmetic,
                             out_dir / SHEET_FILE)
    report = {"run": str(run_dir), "iteration": run.iteration, "domain": domain.name,
              "linear_probe": {**linear, "config": asdict(probe)},
              "latent_arithmetic": {**sheet, "config": asdict(arithmetic)}, "oracle": asdict(evaluation.predictor)}
    (out_dir / PROBE_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _triple(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--triple: '{text}' is not a,b,c")
    a, b, c = (int(p) for p in parts)
    return a, b, c


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DCGAN linear probe (D features vs raw pixels) and latent arithmetic.")
    parser.add_argument("run", type=Path, help="dcgan run directory")
    parser.add_argument("--out", type=Path, help="output directory (default: RUN/eval)")
    parser.add_argument("--quick", action="store_true", help="small oracle and sample counts (minutes on CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--triple", type=_triple, action="append", help="a,b,c for mean_a − mean_b + mean_c")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    evaluation = EvalConfig.quick(args.seed) if args.quick else EvalConfig(seed=args.seed)
    arithmetic = ArithmeticConfig(triples=tuple(args.triple) if args.triple else ArithmeticConfig.triples,
                                  count=500 if args.quick else ArithmeticConfig.count, seed=args.seed)
    report = probe_run(args.run, args.out or args.run / "eval", args.device, ProbeConfig(seed=args.seed),
                       evaluation, arithmetic)
    lp = report["linear_probe"]
    print(json.dumps({"d_features_acc": lp["d_features"]["test_acc"], "raw_pixels_acc": lp["raw_pixels"]["test_acc"],
                      "arithmetic": report["latent_arithmetic"]["triples"]}))


if __name__ == "__main__":
    main()
