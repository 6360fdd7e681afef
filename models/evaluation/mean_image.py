"""The seed's MNIST mean-image experiment (LabelGAN thesis §5.1, Fig. 5.2) as an evaluation of any model.

For every class k, `per_class` images G(z, l) are generated with l's class set to k (other fields from
the prior) and read by the evaluation's *oracle* (trained on labeled real images, evaluation only).
Figures: the share read as requested, overall and per class — the seed reports a failure rate under
2 %, so the target is accuracy ≥ 0.98 — and how often the model's own predictor agrees.
Contact sheet (Fig. 5.2): the class mean images of the simulator side on top, then generated images
(class per column, one noise vector per row), each captioned with the oracle's reading — green when it
is the requested class, red when not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from models.domains.base import Domain
from models.evaluation.evaluate import EvalConfig, domain_fingerprint, train_baselines
from models.evaluation.pools import derived_seed
from models.evaluation.predictors import batched
from models.evaluation.subject import EvalModel
from models.trainers.labelgan import class_field, class_mean_images

Reader = Callable[[torch.Tensor], torch.Tensor]  # images [B, C, S, S] in [0, 1] → labels [B, D]

CELL = 48  # pixels per image in the sheet (nearest upscaling)
CAPTION = 14  # pixels of caption strip above each image
GOOD, BAD, PLAIN = (40, 170, 60), (220, 40, 40), (90, 90, 90)


@dataclass(frozen=True)
class MeanImageConfig:
    per_class: int = 100  # generated images per class read by the oracle
    sheet_rows: int = 6  # noise vectors (rows) per class in the contact sheet (≤ per_class)
    mean_per_class: int = 256  # simulator renders averaged per class for the sheet's top row
    seed: int = 0  # labels, noise and the class means
    target: float = 0.98  # seed §5.1: "Die Ausfallquote liegt hier bei unter 2 %"


@dataclass
class MeanImageResult:
    figures: dict[str, float]  # mean_image_acc, mean_image_fail_rate, mean_image_cycle_acc, per-class acc
    target: dict[str, Any]  # {"name", "value", "op", "threshold", "pass", "note"} like the report's targets
    sheet: Path  # the contact sheet PNG


def oracle_for(domain: Domain, cfg: EvalConfig, domain_key: dict[str, Any] | None = None,
               device: torch.device | str = "cpu") -> Reader:
    """The evaluation's oracle for `domain`, from the same cache `labelforge eval` fills (same key recipe)."""
    key = {"domain": domain.name, "image_size": domain.image_size, "domain_seed": domain.seed,
           "code": domain_fingerprint(domain), **(domain_key or {})}
    base = train_baselines(domain, cfg, key, has_oracle=True, device=device)
    if base.oracle is None:
        raise ValueError(f"domain '{domain.name}': no oracle (no labeled real images)")
    return base.oracle


@torch.no_grad()
def generate_per_class(model: EvalModel, domain: Domain, cfg: MeanImageConfig,
                       batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [K, n, C, S, S], labels [K, n, D]) on the CPU: n = per_class generated images of each class."""
    cls = class_field(model.layout)
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "mean-image"))
    n, k = cfg.per_class, cls.size
    labels = domain.sample_labels(n * k, gen).float().cpu()  # [K·n, D]
    labels[:, cls.slice] = F.one_hot(torch.arange(k).repeat_interleave(n), k).float()
    z = torch.randn(n * k, model.nz, generator=gen)
    images = torch.cat([model.generate(z[i:i + batch_size], labels[i:i + batch_size]).float().cpu().clamp(0, 1)
                        for i in range(0, n * k, batch_size)])
    return images.view(k, n, *images.shape[1:]), labels.view(k, n, -1)


def _cell(image: torch.Tensor) -> Image.Image:
    """[C, S, S] in [0, 1] → an RGB PIL image CELL pixels wide (nearest)."""
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    arr = (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr).resize((CELL, CELL), Image.Resampling.NEAREST)


def write_sheet(means: torch.Tensor, images: torch.Tensor, reads: torch.Tensor, path: Path) -> Path:
    """means [K, C, S, S]; images [R, K, C, S, S]; reads [R, K] class ids → captioned grid PNG at `path`."""
    rows, k = reads.shape
    pad = 2
    sheet = Image.new("RGB", (k * (CELL + pad) + pad, (rows + 1) * (CELL + CAPTION + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    grid = [[(means[c], str(c), PLAIN) for c in range(k)]]
    grid += [[(images[r, c], str(int(reads[r, c])), GOOD if int(reads[r, c]) == c else BAD) for c in range(k)]
             for r in range(rows)]
    for r, row in enumerate(grid):
        for c, (img, text, colour) in enumerate(row):
            x, y = pad + c * (CELL + pad), pad + r * (CELL + CAPTION + pad)
            draw.text((x + CELL // 2 - 3, y), text, fill=colour, font=font)
            sheet.paste(_cell(img), (x, y + CAPTION))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


@torch.no_grad()
def mean_image_experiment(model: EvalModel, domain: Domain, out_dir: str | Path,
                          cfg: MeanImageConfig = MeanImageConfig(), oracle: Reader | None = None,
                          eval_cfg: EvalConfig | None = None, domain_key: dict[str, Any] | None = None,
                          device: torch.device | str = "cpu", prefix: str = "") -> MeanImageResult:
    """Generate `per_class` images per class, read them with the oracle, write `{prefix}mean_image.png`.

    `oracle` defaults to the evaluation's cached oracle for this domain (trained on first use, with
    `eval_cfg`'s baseline recipe — pass the one `labelforge eval` used to share its cache).
    """
    eval_cfg = eval_cfg if eval_cfg is not None else EvalConfig()
    if (domain.image_size, domain.channels, domain.layout.name) != (model.image_size, model.channels,
                                                                    model.layout.name):
        raise ValueError(f"model ({model.image_size}px, {model.channels}ch, {model.layout.name}) does not match "
                         f"domain '{domain.name}' ({domain.image_size}px, {domain.channels}ch, {domain.layout.name})")
    if not 1 <= cfg.sheet_rows <= cfg.per_class:
        raise ValueError(f"sheet_rows: must be in [1, per_class={cfg.per_class}], got {cfg.sheet_rows}")
    cls = class_field(model.layout)
    reader = oracle if oracle is not None else oracle_for(domain, eval_cfg, domain_key, device)
    images, _ = generate_per_class(model, domain, cfg, eval_cfg.batch_size)  # [K, n, C, S, S]
    flat = images.flatten(0, 1)
    wanted = torch.arange(cls.size).repeat_interleave(cfg.per_class)  # [K·n]
    read = batched(reader, flat, eval_cfg.batch_size, device)[:, cls.slice].argmax(1)  # [K·n]
    own = batched(model.predict, flat, eval_cfg.batch_size)[:, cls.slice].argmax(1)
    hits = (read == wanted).double().view(cls.size, cfg.per_class)  # [K, n]
    acc = float(hits.mean())
    figures = {"mean_image_acc": acc, "mean_image_fail_rate": 1.0 - acc,
               "mean_image_min_class_acc": float(hits.mean(1).min()),
               "mean_image_cycle_acc": float((own == wanted).double().mean()),
               **{f"mean_image_acc/{c}": float(hits[c].mean()) for c in range(cls.size)}}
    target = {"name": "mean_image_acc", "value": acc, "op": ">=", "threshold": cfg.target, "pass": acc >= cfg.target,
              "note": "oracle reads generated images as the requested class (seed §5.1: < 2 % failures)"}
    means = class_mean_images(domain, cfg.mean_per_class, derived_seed(cfg.seed, "means"))
    rows = cfg.sheet_rows
    sheet = write_sheet(means.cpu(), images[:, :rows].transpose(0, 1),
                        read.view(cls.size, cfg.per_class)[:, :rows].T, Path(out_dir) / f"{prefix}mean_image.png")
    return MeanImageResult(figures=figures, target=target, sheet=sheet)
