"""Content features for the content-similarity loss L_c (thesis §3.3.2 and its future-work §6.1).

L_c compares G(z, l) with S(l) in a feature space that should react to *what the label controls*
(pose, shape, class) and not to appearance. Three choices:

- `label-aware` (default): a small conv net trained once per domain + seed on simulator images under
  heavy photometric randomization (brightness, contrast, colour gains, noise, blur, random
  backgrounds behind the renderer's mask) to predict the labels. Appearance is nuisance for that
  task, so it keeps label content and drops style — what the thesis asked VGG to do, without
  ImageNet weights (none can be downloaded here). Frozen; cached as a weights-only file. L_c compares
  one of two outputs (`layer`): its label read-out (`labels`, [B, D], the default since session 2),
  or its last conv feature map (`features`, [B, 4w, S/4, S/4]: spatial like the thesis's relu4_3,
  many more constraints per image than D numbers, so harder for G to satisfy with patterns that
  only fool the frozen net).
- `vgg16`: torchvision VGG16 up to relu4_3 after ×7 upsampling, as in the thesis. Weights come from a
  local file (`--vgg-weights`); without one the net is randomly initialised, with a loud warning. The
  upsampling factor is configurable: ×7 brings 32-px images to ImageNet scale, which matters for
  ImageNet weights but costs ~49× the FLOPs (about 25 s an iteration on one CPU core), so a CPU
  ablation with random weights may use ×1.
- `none`: no content loss (ablation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from models.domains.base import Domain
from models.losses import label_loss
from models.trainers.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

ContentKind = Literal["label-aware", "vgg16", "none"]
CONTENT_KINDS: tuple[str, ...] = ("label-aware", "vgg16", "none")
LABEL_AWARE_LAYERS: tuple[str, ...] = ("labels", "features")  # what L_c compares of the label-aware net

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGContent(nn.Module):
    """VGG16 features up to relu4_3 (the ReLU before the penultimate max-pool), inputs upsampled ×`upsample`
    (the thesis: 7)."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, weights_path: str | Path | None = None, upsample: float = 7.0):
        super().__init__()
        self.upsample = upsample
        from torchvision.models import vgg16

        vgg = vgg16(weights=None)
        if weights_path is not None:
            state = torch.load(Path(weights_path), map_location="cpu", weights_only=True)
            vgg.load_state_dict(state)
        else:
            log.warning(
                "vgg16 content features are RANDOMLY INITIALISED (no --vgg-weights given; none can be "
                "downloaded here). L_c then compares random-projection features, not ImageNet ones."
            )
        self.features = vgg.features[:23]  # conv1_1 … relu4_3
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, 512, uS/8, uS/8]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.upsample != 1.0:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return self.features((x - self.mean) / self.std)


class LabelAwareNet(nn.Module):
    """Conv features (`features`) + a linear head predicting the label vector (used only to train it)."""

    def __init__(self, channels: int, image_size: int, label_dim: int, width: int = 32):
        super().__init__()
        self.meta = {"channels": channels, "image_size": image_size, "label_dim": label_dim, "width": width}
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(channels, w, 3, 1, 1), nn.GroupNorm(8, w), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.GroupNorm(8, 2 * w), nn.LeakyReLU(0.2),  # S/2
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.GroupNorm(8, 4 * w), nn.LeakyReLU(0.2),  # S/4
            nn.Conv2d(4 * w, 4 * w, 3, 1, 1), nn.GroupNorm(8, 4 * w), nn.LeakyReLU(0.2),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16 * w, label_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, D]
        return self.head(self.features(x))


@dataclass
class LabelAwareConfig:
    steps: int = 2000  # optimizer steps
    batch_size: int = 64  # simulator images per step
    lr: float = 1e-3  # Adam learning rate
    width: int = 32  # base channels of the feature net


def photometric_randomize(x: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Heavy appearance randomization of simulator images [B, C, S, S] in [0, 1] (mask [B, 1, S, S]).

    Random smooth colour backgrounds behind the mask, per-image brightness/contrast, per-channel
    colour gains, a random blur and pixel noise; the label content (geometry) is untouched.
    """
    b, c, s, _ = x.shape
    dev = x.device

    def u(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen, device=dev)

    background = F.interpolate(u(b, c, 4, 4), size=(s, s), mode="bilinear", align_corners=False)
    use_bg = (u(b, 1, 1, 1) < 0.7).to(x.dtype)
    x = x * (1 - use_bg) + use_bg * (mask * x + (1 - mask) * background)
    x = (x - 0.5) * u(b, 1, 1, 1, lo=0.5, hi=1.5) + 0.5 + u(b, 1, 1, 1, lo=-0.25, hi=0.25)
    x = x * u(b, c, 1, 1, lo=0.7, hi=1.3)
    sigma = u(b, 1, 1, 1, hi=1.2)  # blur strength in pixels
    k = torch.arange(-2, 3, device=dev, dtype=x.dtype)
    kern = torch.exp(-(k**2)[None] / (2 * sigma.view(b, 1).clamp_min(1e-3) ** 2))  # [B, 5]
    kern = kern / kern.sum(dim=1, keepdim=True)
    xb = x.reshape(1, b * c, s, s)
    kb = kern.repeat_interleave(c, dim=0)  # [B*C, 5]
    xb = F.conv2d(F.pad(xb, (2, 2, 0, 0), mode="replicate"), kb.view(b * c, 1, 1, 5), groups=b * c)
    xb = F.conv2d(F.pad(xb, (0, 0, 2, 2), mode="replicate"), kb.view(b * c, 1, 5, 1), groups=b * c)
    x = xb.view(b, c, s, s)
    x = x + u(b, 1, 1, 1, hi=0.08) * torch.randn(x.shape, generator=gen, device=dev)
    return x.clamp(0.0, 1.0)


def train_label_aware(domain: Domain, cfg: LabelAwareConfig, seed: int) -> LabelAwareNet:
    """Fit the label-aware feature net on randomized simulator images; deterministic given `seed`."""
    dev = domain.device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        net = LabelAwareNet(domain.channels, domain.image_size, domain.layout.dim, cfg.width).to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    net.train()
    for _ in range(cfg.steps):
        labels = domain.sample_labels(cfg.batch_size, gen)
        with torch.no_grad():
            images, masks = domain.simulate(labels)
            images = photometric_randomize(images, masks, gen)
        loss, _ = label_loss(net(images), labels, domain.layout)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    log.info("label-aware content net trained: final label loss %.4f", loss.item())
    return net.eval().requires_grad_(False)


def load_or_train_label_aware(domain: Domain, cfg: LabelAwareConfig, seed: int, cache_path: Path) -> LabelAwareNet:
    """The frozen label-aware net from `cache_path` if present, else trained now and cached there."""
    if cache_path.exists():
        ckpt = load_checkpoint(cache_path, domain.device)
        net = LabelAwareNet(**ckpt["meta"]).to(domain.device)
        net.load_state_dict(ckpt["state"])
        return net.eval().requires_grad_(False)
    log.info("training the label-aware content net (%d steps); cached at %s", cfg.steps, cache_path)
    net = train_label_aware(domain, cfg, seed)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(cache_path, {"meta": net.meta, "state": net.state_dict(), "seed": seed, "domain": domain.name})
    return net


def build_content_features(
    kind: str,
    domain: Domain,
    *,
    seed: int,
    cache_path: Path,
    label_aware: LabelAwareConfig | None = None,
    vgg_weights: str | Path | None = None,
    vgg_upsample: float = 7.0,
    layer: str = "labels",
) -> nn.Module | None:
    """A frozen feature extractor images [B, C, S, S] -> features, or None for `none`; `layer` picks the
    label-aware net's output (see the module docstring)."""
    if kind == "none":
        return None
    if kind == "vgg16":
        return VGGContent(vgg_weights, vgg_upsample).to(domain.device).eval().requires_grad_(False)
    if kind == "label-aware":
        if layer not in LABEL_AWARE_LAYERS:
            raise ValueError(f"label_aware_layer: must be one of {', '.join(LABEL_AWARE_LAYERS)}, got '{layer}'")
        net = load_or_train_label_aware(domain, label_aware or LabelAwareConfig(), seed, cache_path)
        return net.features if layer == "features" else net
    raise ValueError(f"content: unknown feature extractor '{kind}'; choose one of {', '.join(CONTENT_KINDS)}")
