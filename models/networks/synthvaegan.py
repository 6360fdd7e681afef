"""SYNTH-VAE-GAN networks (seed 003, Fig. 2): synthetic encoder E_s, real encoder E_r, decoder, D.

The latent is split (seed §"Adaptation to the Real Domain"): the *attribute part* z_da (D dims, one
per label slot, in whitened units) comes from E_s, trained on simulator images only and then frozen;
the *residual part* z_r (nz dims) comes from the VAE encoder E_r trained on the real images. The
decoder reads concat(z_da, z_r) — attributes first, as in the seed's Fig. 6c.

Whitening (seed §"Construction of Disentangled Representations"): E_s regresses each attribute
standardized to zero mean and unit variance under the synthetic sampling distribution (independent,
uniform — maximum entropy — on a finite range), so strong and weak attributes weigh alike. The
bundle-facing wrappers (`SynthGenerator`, `SynthImagePredictor`) whiten/unwhiten inside the graph,
so a bundle speaks the layout's standardized label units like every other method.

All blocks are batch-independent (no BatchNorm): a served predictor answers the same for a photo
whatever its batch neighbours.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.layouts import LabelLayout
from models.networks.layers import PixelNorm, assert_shape


@dataclass
class SynthNetConfig:
    image_size: int = 32  # pixels per side, a power of two in 8..128
    channels: int = 3  # image channels
    label_dim: int = 400  # D: attribute part of the latent = layout.dim
    nz: int = 32  # residual part of the latent (real-domain code z_r)
    width: int = 32  # base channels: conv stages widen c → 4c going down (and narrow 4c → c going up)
    hidden: int = 256  # FC width of the encoder / discriminator heads

    def __post_init__(self) -> None:
        s = self.image_size
        if s < 8 or s > 128 or s & (s - 1):
            raise ValueError(f"image_size: must be a power of two in 8..128, got {s}")
        for name in ("channels", "label_dim", "nz", "width", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")

    def widths(self) -> list[int]:
        """Channels of the down stages, full size → 4×4: c, 2c, 4c, 4c, … (log2(S/4) entries)."""
        n = self.image_size.bit_length() - 3
        return [self.width * min(2**i, 4) for i in range(n)]

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class ConvStack(nn.Module):
    """Per stage a 3×3 conv then a stride-2 4×4 conv, LReLU 0.2 after each: [B, C, S, S] → [B, w·16]."""

    def __init__(self, cfg: SynthNetConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = cfg.channels
        for w in cfg.widths():
            layers += [nn.Conv2d(c_in, w, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, w, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in = w
        self.body = nn.Sequential(*layers)
        self.out_dim = c_in * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        assert_shape(x, (None, cfg.channels, cfg.image_size, cfg.image_size), "image input")
        return self.body(x).flatten(1)  # [B, 4c·16]


def _head(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, n_out))


class SyntheticEncoder(nn.Module):
    """E_s: image → (whitened attribute estimate m [B, D], log Laplace scale log b [B, D]).

    m is fitted by L1 regression (seed §"Training Details"); b, the expected |error| of m, is fitted
    beside it (on a detached m, so the regression stays plain L1) and gives z_da its σ(l) = √2·b,
    the per-attribute spread that the exploratory regularizer overrides.
    """

    def __init__(self, cfg: SynthNetConfig):
        super().__init__()
        self.cfg = cfg
        self.features = ConvStack(cfg)
        self.head = _head(self.features.out_dim, cfg.hidden, 2 * cfg.label_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, log_b = self.head(self.features(x)).chunk(2, dim=1)  # [B, D] each
        return m, log_b.clamp(-7.0, 3.0)


class RealEncoder(nn.Module):
    """E_r: image → (μ [B, nz], log σ² [B, nz]) of the residual code z_r (a plain VAE encoder)."""

    def __init__(self, cfg: SynthNetConfig):
        super().__init__()
        self.cfg = cfg
        self.features = ConvStack(cfg)
        self.head = _head(self.features.out_dim, cfg.hidden, 2 * cfg.nz)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.features(x)).chunk(2, dim=1)  # [B, nz] each
        return mu, logvar.clamp(-10.0, 10.0)


class Decoder(nn.Module):
    """concat(z_da [B, D], z_r [B, nz]) → FC → [4c, 4, 4] → (×2 nearest, 3×3 conv, LReLU, PixelNorm)
    per stage → 3×3 conv → sigmoid, so pixels are in [0, 1] like the real images."""

    def __init__(self, cfg: SynthNetConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths()[::-1]  # [4c, …, c]
        self.fc = nn.Linear(cfg.label_dim + cfg.nz, widths[0] * 16)
        layers: list[nn.Module] = []
        c_in = widths[0]
        for w in widths:
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c_in, w, 3, 1, 1),
                       nn.LeakyReLU(0.2), PixelNorm()]
            c_in = w
        layers += [nn.Conv2d(c_in, cfg.channels, 3, 1, 1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)
        self.c0 = widths[0]

    def forward(self, code: torch.Tensor) -> torch.Tensor:  # [B, D + nz] -> [B, C, S, S]
        assert_shape(code, (None, self.cfg.label_dim + self.cfg.nz), "Decoder code")
        x = F.leaky_relu(self.fc(code), 0.2).view(code.shape[0], self.c0, 4, 4)  # [B, 4c, 4, 4]
        return self.body(x)


class Discriminator(nn.Module):
    """D: image → logit of P_real (the seed's 𝔻 is sigmoid(logit))."""

    def __init__(self, cfg: SynthNetConfig):
        super().__init__()
        self.features = ConvStack(cfg)
        self.head = _head(self.features.out_dim, cfg.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B]
        return self.head(self.features(x)).squeeze(1)


class Whitening(nn.Module):
    """Per-slot affine map between the layout's standardized labels l and whitened attributes w.

    w = (l − mean) / std with mean/std of the synthetic sampling distribution: continuous slots
    U(−r, r) → (0, r/√3); a categorical field with K classes drawn uniformly → (1/K, √(1/K·(1 − 1/K)))
    per one-hot slot. Buffers only, so it travels in checkpoints and exported graphs.
    """

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, label_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(label_dim))
        self.register_buffer("std", torch.ones(label_dim))

    @classmethod
    def for_layout(cls, layout: LabelLayout, attribute_range: float) -> Whitening:
        if attribute_range <= 0:
            raise ValueError(f"attribute_range: must be > 0, got {attribute_range}")
        out = cls(layout.dim)
        for f in layout.fields:
            if f.kind == "categorical":
                p = 1.0 / f.size
                out.mean[f.slice] = p
                out.std[f.slice] = math.sqrt(p * (1.0 - p))
            else:
                out.std[f.slice] = attribute_range / math.sqrt(3.0)
        return out

    def whiten(self, labels: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, D]
        return (labels - self.mean) / self.std

    def unwhiten(self, w: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, D]
        return w * self.std + self.mean


class SynthGenerator(nn.Module):
    """Bundle generator: (z [B, nz], labels [B, D] standardized) → decoder(concat(whiten(l), z))."""

    def __init__(self, decoder: Decoder, whitening: Whitening):
        super().__init__()
        self.decoder, self.whitening = decoder, whitening

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # -> [B, C, S, S]
        return self.decoder(torch.cat([self.whitening.whiten(labels), z], dim=1))


class SynthImagePredictor(nn.Module):
    """Bundle predictor: images → concat(z̃ = E_r's μ [B, nz], l̃ = unwhiten(E_s's m) [B, D])."""

    def __init__(self, synth_encoder: SyntheticEncoder, real_encoder: RealEncoder, whitening: Whitening):
        super().__init__()
        self.synth_encoder, self.real_encoder, self.whitening = synth_encoder, real_encoder, whitening

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, nz + D]
        m, _ = self.synth_encoder(images)
        mu, _ = self.real_encoder(images)
        return torch.cat([mu, self.whitening.unwhiten(m)], dim=1)
