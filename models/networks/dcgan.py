"""DCGAN networks (seed 004, "What is a DCGAN?"; Radford et al. 2015), plus the bundle-facing wrappers.

- `DCGANGenerator`   z [B, nz] ~ N(0, I) → image in [-1, 1]: a 1×1 → 4×4 transposed conv, then one
                     stride-2 transposed conv per resolution doubling, each but the last followed by
                     batch norm + ReLU; tanh output. Widths halve towards the image (8·ngf at most).
- `DCGANDiscriminator` image in [-1, 1] → real/fake logit: stride-2 convs with LeakyReLU 0.2, batch
                     norm on all but the first, down to 4×4, then a 4×4 conv to one logit (the seed's
                     sigmoid lives in the loss, `BCEWithLogits`). `features` is the seed's experiment 1
                     representation: every conv stage's output max-pooled to 4×4 and concatenated.
- `LinearHead`, `UnconditionalGenerator`, `DCGANImagePredictor`: what a bundle needs from a DCGAN run.
  The generator wrapper maps tanh to [0, 1] and takes (and ignores) labels — DCGAN is unconditional.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.networks.layers import assert_shape

SLOPE = 0.2  # LeakyReLU slope in D (DCGAN paper)
MAX_MULT = 8  # widest layer = 8 × the base width (the seed's 64×64 net reaches exactly 8·ngf / 8·ndf)
FEATURE_GRID = 4  # D's stage outputs are max-pooled to 4×4 for `features` (Radford et al. §5.1)


@dataclass
class DCGANNetConfig:
    image_size: int = 32  # pixels per side, a power of two in 8..128 (the seed uses 64)
    channels: int = 1  # image channels (1 for digits, 3 for faces)
    nz: int = 100  # latent dims (DCGAN's 100)
    ngf: int = 64  # generator width at the last hidden resolution (S/2); doubles per halving
    ndf: int = 64  # discriminator width at its first stage (S/2); doubles per halving

    def __post_init__(self) -> None:
        s = self.image_size
        if s < 8 or s > 128 or s & (s - 1):
            raise ValueError(f"image_size: must be a power of two in 8..128, got {s}")
        for name in ("channels", "nz", "ngf", "ndf"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")

    @property
    def n_stages(self) -> int:
        """Stride-2 layers between 4×4 and the image: log2(S/4) (3 at 32×32, 4 at the seed's 64×64)."""
        return self.image_size.bit_length() - 3

    def g_widths(self) -> list[int]:
        """Generator channels at 4×4, 8×8, …, S/2 (decreasing to ngf)."""
        n = self.n_stages
        return [self.ngf * min(2 ** (n - 1 - i), MAX_MULT) for i in range(n)]

    def d_widths(self) -> list[int]:
        """Discriminator channels at S/2, S/4, …, 4×4 (increasing from ndf)."""
        return [self.ndf * min(2**j, MAX_MULT) for j in range(self.n_stages)]

    def feature_dim(self) -> int:
        """Length of `DCGANDiscriminator.features`: Σ stage widths × 4 × 4."""
        return sum(self.d_widths()) * FEATURE_GRID**2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN init: conv weights N(0, std), batch-norm scales N(1, std), biases 0 (seeded by the caller)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: DCGANNetConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.g_widths()
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.nz, widths[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [B, nz] -> [B, C, S, S] in [-1, 1]
        assert_shape(z, (None, self.cfg.nz), "DCGANGenerator z")
        return self.main(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: DCGANNetConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.d_widths()
        stages: list[nn.Module] = [nn.Sequential(nn.Conv2d(cfg.channels, widths[0], 4, 2, 1, bias=False),
                                                 nn.LeakyReLU(SLOPE, True))]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            stages.append(nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                                        nn.LeakyReLU(SLOPE, True)))
        self.stages = nn.ModuleList(stages)
        self.out = nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        cfg = self.cfg
        assert_shape(x, (None, cfg.channels, cfg.image_size, cfg.image_size), "DCGANDiscriminator input")
        outs = []
        for stage in self.stages:
            x = stage(x)  # [B, w_j, S/2^(j+1), S/2^(j+1)]
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] in [-1, 1] -> logits [B]
        return self.out(self._stages(x)[-1]).flatten()

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] in [-1, 1] -> [B, feature_dim]
        """All conv stages, each max-pooled to 4×4 (a static kernel, so the ONNX graph stays plain)."""
        pooled = [F.max_pool2d(h, h.shape[-1] // FEATURE_GRID) if h.shape[-1] > FEATURE_GRID else h
                  for h in self._stages(x)]
        return torch.cat([p.flatten(1) for p in pooled], dim=1)


class LinearHead(nn.Module):
    """Standardize features with stored statistics, then one linear map (fitted in closed form)."""

    mean: torch.Tensor  # [n_in] feature means of the fitting set
    inv_std: torch.Tensor  # [n_in] 1 / feature std (0 for constant features)

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("inv_std", torch.ones(n_in))
        self.linear = nn.Linear(n_in, n_out)
        nn.init.zeros_(self.linear.weight)  # an unfitted head answers the intercept (0), not noise
        nn.init.zeros_(self.linear.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # [B, n_in] -> [B, n_out]
        return self.linear((f - self.mean) * self.inv_std)


class UnconditionalGenerator(nn.Module):
    """The bundle's G(z, l) for DCGAN: (tanh + 1) / 2 of G(z). Labels are NOT used to make the image.

    They are accepted (the bundle contract) and touched with weight 0 only so exporters keep the input
    in the graph; a run's options and the bundle manifest say `"label_conditioned": false`.
    """

    def __init__(self, generator: DCGANGenerator, label_dim: int):
        super().__init__()
        self.generator = generator
        self.label_dim = label_dim

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # -> [B, C, S, S] in [0, 1]
        assert_shape(labels, (z.shape[0], self.label_dim), "UnconditionalGenerator labels")
        images = (self.generator(z) + 1.0) * 0.5
        return images + 0.0 * labels[:, :1, None, None]


class DCGANImagePredictor(nn.Module):
    """images in [0, 1] → concat(z̃, l̃) = [noise head, label head] on D's `features` of 2x − 1."""

    def __init__(self, discriminator: DCGANDiscriminator, noise_head: LinearHead, label_head: LinearHead):
        super().__init__()
        self.discriminator = discriminator
        self.noise_head = noise_head
        self.label_head = label_head

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, nz + D]
        f = self.discriminator.features(images * 2.0 - 1.0)  # [B, F]
        return torch.cat([self.noise_head(f), self.label_head(f)], dim=1)
