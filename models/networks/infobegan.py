"""InfoBEGAN networks (seed 002 §3.3.6–3.3.8, Fig. 15) and the SSIM / MS-SSIM image similarity (§3.3, eq. 3–6).

- `BEGANGenerator` G(z, l): BEGAN's decoder (Berthelot et al. 2017): FC to [n, 4, 4], then per
  resolution two 3×3 conv + ELU and a nearest ×2 upsample, and a 3×3 conv to the image channels.
  A sigmoid keeps pixels in [0, 1], the range SSIM's constants assume.
- `BEGANDiscriminator` D: BEGAN's autoencoder (encoder → embedding h [nh] → decoder) with an InfoGAN
  code head Q on h that reads the labels (the code components) back: the seed's "discriminator does
  two tasks: the real/fake decision and recovering the control code" (§3.3.3).
- `NoisePredictor` P: the *separate* network of §3.3.3 / Fig. 7, the encoder architecture of D with
  its own weights and a head giving concat(z̃, l̃) — meant to be G's inverse (not a head on D's
  embedding, as RenderBEGAN's P is).

Why MS-SSIM lives here: it is the distance D's and P's reconstructions are scored with, and the
latent recovery in `models.evaluation.latent_recovery` reuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.layouts import LabelLayout
from models.networks.layers import assert_shape


@dataclass(frozen=True)
class InfoBEGANSizes:
    """Sizes of G, D and P. The bundle-facing four come from the domain; the rest from the config."""

    image_size: int  # pixels per side, power of two ≥ 8
    channels: int  # image channels
    label_dim: int  # label vector length (the InfoGAN code)
    nz: int = 64  # noise dims
    nh: int = 64  # D's embedding dims (BEGAN's h)
    width: int = 64  # BEGAN's filter count n; encoder stage i has n·(i+1) channels
    hidden: int = 256  # hidden FC width of Q and of P's head

    def __post_init__(self) -> None:
        s = self.image_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"image_size: must be a power of two ≥ 8, got {s}")
        for name in ("channels", "label_dim", "nz", "nh", "width", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")

    @property
    def n_up(self) -> int:
        """Resolution doublings from the 4×4 seed to the image: log2(S/4)."""
        return self.image_size.bit_length() - 3


def _conv_pair(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.ELU(), nn.Conv2d(c_out, c_out, 3, 1, 1), nn.ELU())


class BEGANDecoder(nn.Module):
    """[B, n_in] → FC → [B, n, 4, 4] → (conv pair, upsample) × log2(S/4) → conv pair → image in [0, 1]."""

    def __init__(self, n_in: int, sz: InfoBEGANSizes):
        super().__init__()
        self.width = sz.width
        self.fc = nn.Linear(n_in, sz.width * 16)
        self.stages = nn.ModuleList(_conv_pair(sz.width, sz.width) for _ in range(sz.n_up + 1))
        self.to_img = nn.Conv2d(sz.width, sz.channels, 3, 1, 1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # [B, n_in] -> [B, C, S, S]
        x = self.fc(v).view(v.shape[0], self.width, 4, 4)  # [B, n, 4, 4]
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return torch.sigmoid(self.to_img(x))


class BEGANEncoder(nn.Module):
    """Image → conv in → (conv pair, stride-2 conv) per halving, channels n, 2n, 3n, … → [B, (n_up+1)·n·16]."""

    def __init__(self, sz: InfoBEGANSizes):
        super().__init__()
        self.sz = sz
        widths = [sz.width * (i + 1) for i in range(sz.n_up + 1)]
        self.from_img = nn.Sequential(nn.Conv2d(sz.channels, widths[0], 3, 1, 1), nn.ELU())
        self.stages = nn.ModuleList(_conv_pair(w, w) for w in widths)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, 2, 1), nn.ELU()) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out_dim = widths[-1] * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, out_dim]
        sz = self.sz
        assert_shape(x, (None, sz.channels, sz.image_size, sz.image_size), "encoder input")
        x = self.from_img(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.down):
                x = self.down[i](x)
        return x.flatten(1)  # [B, (n_up+1)·n · 4 · 4]


class BEGANGenerator(nn.Module):
    """G(z, l) → images [B, C, S, S] in [0, 1]."""

    def __init__(self, sz: InfoBEGANSizes):
        super().__init__()
        self.sz = sz
        self.decoder = BEGANDecoder(sz.nz + sz.label_dim, sz)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        assert_shape(z, (None, self.sz.nz), "Generator z")
        assert_shape(labels, (z.shape[0], self.sz.label_dim), "Generator labels")
        return self.decoder(torch.cat([z, labels], dim=1))


class BEGANDiscriminator(nn.Module):
    """Autoencoder D (energy = reconstruction distance) with the InfoGAN code head Q on its embedding."""

    def __init__(self, sz: InfoBEGANSizes):
        super().__init__()
        self.sz = sz
        self.encoder = BEGANEncoder(sz)
        self.to_h = nn.Linear(self.encoder.out_dim, sz.nh)
        self.decoder = BEGANDecoder(sz.nh, sz)
        self.code = nn.Sequential(nn.Linear(sz.nh, sz.hidden), nn.ELU(), nn.Linear(sz.hidden, sz.label_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> h [B, nh]
        return self.to_h(self.encoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (reconstruction [B, C, S, S], code logits/values Q(h) [B, D])."""
        h = self.encode(x)
        return self.decoder(h), self.code(h)


class NoisePredictor(nn.Module):
    """P: images in [0, 1] → concat(z̃, l̃) [B, nz + D]; `features` is its conv trunk (a feature space for
    latent recovery's feature loss, standing in for the seed's VGG-16 layers)."""

    def __init__(self, sz: InfoBEGANSizes):
        super().__init__()
        self.sz = sz
        self.features = BEGANEncoder(sz)
        self.head = nn.Sequential(nn.Linear(self.features.out_dim, sz.hidden), nn.ELU(),
                                  nn.Linear(sz.hidden, sz.nz + sz.label_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, nz + D]
        return self.head(self.features(images))


def code_to_labels(code: torch.Tensor, layout: LabelLayout) -> torch.Tensor:
    """Predicted labels (categorical slices are logits) → G's input: softmax on categorical slices, so
    gradients flow and the class part stays on the simplex that one-hot labels live on. [B, D] → [B, D]."""
    parts = []
    for f in layout.fields:
        part = code[:, f.slice]
        parts.append(torch.softmax(part, dim=1) if f.kind == "categorical" else part)
    return torch.cat(parts, dim=1)


# --- SSIM / MS-SSIM (Wang et al. 2003; the seed's eq. 3–6), differentiable, per sample -------------------

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al.'s β_j (= γ_j) for 5 scales
SSIM_C1 = 0.01**2  # (K1 · data range)², data range 1
SSIM_C2 = 0.03**2
SSIM_SIGMA = 1.5  # σ_G of the Gaussian window
MIN_SCALE_PX = 8  # the coarsest MS-SSIM scale keeps at least this many pixels per side


def _window(size: int, channels: int, like: torch.Tensor) -> torch.Tensor:
    """[C, 1, k, k] normalized Gaussian window (σ = 1.5), for a depthwise conv."""
    ax = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term cs per sample: [B, C, H, W] × 2 → ([B], [B])."""
    c = x.shape[1]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)  # 'valid' window positions only, as Wang et al.

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    cs = (2 * sxy + SSIM_C2) / (sxx + syy + SSIM_C2)
    lum = (2 * mx * my + SSIM_C1) / (mx * mx + my * my + SSIM_C1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def _window_size(pixels: int) -> int:
    """11 (Wang et al.) or the largest odd size that fits the image."""
    return min(11, pixels if pixels % 2 else pixels - 1)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Single-scale SSIM per sample, images in [0, 1]: [B, C, S, S] × 2 → [B] (1 = identical)."""
    win = _window(_window_size(min(x.shape[-2:])), x.shape[1], x)
    return _ssim_terms(x, y, win)[0]


def ms_ssim_scales(pixels: int) -> int:
    """Scales M ≤ 5 such that the coarsest one still has ≥ 8 pixels per side (1 at 8 px, 3 at 32 px)."""
    return max(1, min(len(MS_SSIM_WEIGHTS), int(math.log2(pixels / MIN_SCALE_PX)) + 1))


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM per sample (eq. 6: l_M^α_M · Π_j cs_j^β_j), images in [0, 1]: → [B].

    Small images get fewer scales (`ms_ssim_scales`) with Wang et al.'s weights renormalized, and one
    window size for all scales (the one that fits the coarsest). cs and SSIM are clamped at 1e-4
    before the fractional powers so a negative correlation gives a tiny value, not NaN gradients.
    """
    m = ms_ssim_scales(min(x.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:m], device=x.device, dtype=x.dtype)
    weights = weights / weights.sum()
    win = _window(_window_size(min(x.shape[-2:]) >> (m - 1)), x.shape[1], x)
    out = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    for j in range(m):
        s, cs = _ssim_terms(x, y, win)
        term = s if j == m - 1 else cs
        out = out * term.clamp_min(1e-4) ** weights[j]
        if j < m - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out


def recon_distance(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Zhao et al.'s mix (the seed's ref. 8): α (1 − MS-SSIM) + (1 − α) L1, per sample → [B].

    α = 0 is BEGAN's plain L1 energy; α = 0.84 is Zhao et al.'s choice.
    """
    l1 = (x - y).abs().flatten(1).mean(1)
    if alpha == 0.0:
        return l1
    return alpha * (1.0 - ms_ssim(x, y)) + (1.0 - alpha) * l1
