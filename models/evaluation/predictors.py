"""The small CNN used as *oracle* and *source-only* baseline, its training loop and its disk cache.

Both baselines share one architecture and one seeded recipe so the only difference between them is
the data they saw: the oracle learns from labeled real-side images (evaluation only — no trainer
ever sees them), the source-only predictor from simulator images. Its penultimate layer is also the
feature space for KID and diversity, so realism is judged by a network that knows the real side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models import data_cache
from models.layouts import LabelLayout

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the architecture or training recipe changes
StepProgress = Callable[[int, int], None]  # (optimizer steps done, total): a long baseline fit is visible


@dataclass(frozen=True)
class PredictorConfig:
    """Architecture and training recipe of the evaluation CNN (identical for oracle and source-only)."""

    image_size: int = 32  # input pixels (square); a power of two ≥ 8
    channels: int = 3  # input image channels
    label_dim: int = 400  # output slots = layout.dim (categorical slots are logits)
    width: int = 32  # channels of the first conv stage; doubles per stage, capped at 4×
    feature_dim: int = 128  # penultimate features: KID / diversity space
    epochs: int = 12  # passes over the training pool
    batch_size: int = 64  # images per step
    lr: float = 2e-3  # Adam peak learning rate (cosine decay to 0)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    max_shift: int = 2  # random translation augmentation, pixels at 32 px (scaled with size)
    seed: int = 0  # init, shuffling and augmentation


class LabelCNN(nn.Module):
    """Conv stages (two 3×3 conv + BN + ReLU, then 2× average pool) down to 4×4, then two FC layers."""

    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        if cfg.image_size < 8 or cfg.image_size & (cfg.image_size - 1):
            raise ValueError(f"image_size must be a power of two ≥ 8, got {cfg.image_size}")
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in, size, stage = cfg.channels, cfg.image_size, 0
        while size > 4:
            c_out = cfg.width * min(2 ** stage, 4)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.AvgPool2d(2)]
            c_in, size, stage = c_out, size // 2, stage + 1
        self.convs = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, cfg.feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(cfg.feature_dim, cfg.label_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] in [0, 1] → penultimate features [B, feature_dim]."""
        return self.embed(self.convs(x * 2 - 1))  # [B, F]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] → standardized labels [B, label_dim] (logits on categorical slots)."""
        return self.head(self.features(x))


def label_loss(pred: torch.Tensor, target: torch.Tensor, layout: LabelLayout, fields: Sequence[str]) -> torch.Tensor:
    """Mean over supervised fields of (cross-entropy | MSE), so two angle slots weigh as much as 199 shape slots."""
    losses = []
    for name in fields:
        f = layout[name]
        if f.kind == "categorical":
            losses.append(F.cross_entropy(pred[:, f.slice], target[:, f.slice].argmax(dim=1)))
        else:
            losses.append(F.mse_loss(pred[:, f.slice], target[:, f.slice]))
    return torch.stack(losses).mean()


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pools (0..255) or float images (0..1) → float32 in [0, 1]."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ±max_shift pixels (edge-replicated): cheap robustness to placement."""
    if max_shift <= 0:
        return x
    b, _, s, _ = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")  # [B, C, S+2m, S+2m]
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen)
    return torch.stack([padded[i, :, oy:oy + s, ox:ox + s] for i, (oy, ox) in enumerate(offsets.tolist())])


def train_predictor(images: torch.Tensor, labels: torch.Tensor, layout: LabelLayout, fields: Sequence[str],
                    cfg: PredictorConfig, device: torch.device | str = "cpu",
                    progress: StepProgress | None = None) -> LabelCNN:
    """Fit a fresh seeded `LabelCNN` on images [N, C, S, S] (uint8 or [0, 1]) and labels [N, dim]; eval mode.
    `progress(done, total)` is called after every step (a full faces-m baseline takes tens of CPU minutes)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = LabelCNN(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * max(1, math.ceil(len(images) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps)
    shift = max(0, round(cfg.max_shift * cfg.image_size / 32))
    net.train()
    step = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(images), generator=gen)
        total = 0.0
        for start in range(0, len(images), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            x = _random_shift(as_float(images[idx]), shift, gen).to(device)  # [b, C, S, S]
            loss = label_loss(net(x), labels[idx].to(device), layout, fields)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            step += 1
            if progress is not None:
                progress(step, total_steps)
        log.debug("predictor epoch %d loss %.4f", epoch, total / len(images))
    return net.eval()


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 256,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Apply `fn` to [N, ...] in chunks on `device`; results concatenated on the CPU."""
    return torch.cat([fn(as_float(images[i:i + batch_size]).to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def cache_dir() -> Path:
    """`$LABELFORGE_CACHE_DIR/eval` (default ~/.cache/labelforge/eval): where trained baselines are kept."""
    return data_cache.cache_dir() / "eval"


def cache_path(kind: str, domain: str, cfg: PredictorConfig, data: dict[str, object]) -> Path:
    """One file per (kind, domain, image size, seed, config, data recipe): any change is a new file."""
    key = json.dumps({"v": CACHE_VERSION, "kind": kind, "domain": domain, "cfg": asdict(cfg), "data": data},
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / f"{domain}-{kind}-{cfg.image_size}px-seed{cfg.seed}-{digest}.pt"


def cached_predictor(kind: str, domain: str, cfg: PredictorConfig, data: dict[str, object],
                     build: Callable[[], LabelCNN], device: torch.device | str = "cpu") -> tuple[LabelCNN, bool]:
    """Load the baseline from the cache or `build()` and store it (atomically). Returns (net, was_cached)."""
    path = cache_path(kind, domain, cfg, data)
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = LabelCNN(cfg)
            net.load_state_dict(state["state_dict"])
            return net.to(device).eval(), True
        except (RuntimeError, KeyError, EOFError) as err:  # truncated or stale file: rebuild it
            log.warning("ignoring unreadable cached predictor %s: %s", path, err)
    net = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}, "config": asdict(cfg),
                "data": json.loads(json.dumps(data, default=str))}, tmp)
    os.replace(tmp, path)
    return net, False
