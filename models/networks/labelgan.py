"""LabelGAN networks (seed 001, Wachsmann 2017, §4.1 and §5.1): refiner generator, WGAN critic, predictor.

    G(z, l) = R(source(z, l), noise(z))
      source = S(l), the frozen neural simulator                        (§2.3, §4.1: the synthetic face)
             | warp(M[class(l)], φ(z)), a class mean image bent by a
               learned smooth displacement field                        (§5.1: MNIST mean images + diffeomorphism)
      noise(z) = a linear map of z reshaped to one S×S channel          (§2.3: "auf Bildgröße skaliert und als
                                                                          Channel an das Bild angehängt")
      R = stem conv ‖ noise channel → ResNet blocks (conv-BN-ReLU-conv-BN + skip) → 1×1 conv → ReLU(tanh)
    critic D: stride-2 4×4 convs with LeakyReLU, no BatchNorm (§4.1.2, WGAN-GP), down to 2×2, then linear;
    predictor P: four convs + one linear layer on the output of D's *second* convolution (§4.1) → l̃.

Everything is plain conv / linear / grid_sample, so `LabelGANGenerator` (with S or the mean images
inside it) traces to one TorchScript module and one ONNX graph with the bundle signature (z, labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.networks.layers import assert_shape

SOURCES = ("simulator", "mean_image")


@dataclass(frozen=True)
class LabelGANArch:
    """Sizes of the LabelGAN networks; the trainer config carries the same fields (see its comments)."""

    image_size: int  # pixels per side, power of two ≥ 8
    channels: int  # image channels
    label_dim: int  # layout.dim
    nz: int  # noise dims (seed §4.1: 10)
    source: str = "simulator"  # "simulator" (S(l)) or "mean_image" (warped class mean, seed §5.1)
    refiner_width: int = 32  # channels inside R (seed MNIST notebook: 28)
    refiner_blocks: int = 5  # ResNet blocks in R (seed §4.1.1: five)
    critic_width: int = 32  # channels of D's first conv; doubled per conv, capped at 8×
    predictor_width: int = 64  # channels of P's convs
    warp_grid: int = 2  # control points per side of the displacement field (seed MNIST code: 2×2)
    warp_max: float = 1.0  # largest displacement, in units of half the image side (seed: tanh, so 1)

    def __post_init__(self) -> None:
        s = self.image_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"image_size: must be a power of two ≥ 8, got {s}")
        if self.source not in SOURCES:
            raise ValueError(f"source: must be one of {', '.join(SOURCES)}, got '{self.source}'")
        for name in ("channels", "label_dim", "nz", "refiner_width", "refiner_blocks", "critic_width",
                     "predictor_width", "warp_grid"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        if self.refiner_width < 2:
            raise ValueError("refiner_width: must be ≥ 2 (one channel is the noise map)")
        if not 0.0 <= self.warp_max <= 1.0:
            raise ValueError(f"warp_max: must be in [0, 1], got {self.warp_max}")

    @property
    def critic_convs(self) -> int:
        """Stride-2 convs of D from S×S down to 2×2: log2(S) − 1 (4 at 32 px)."""
        return self.image_size.bit_length() - 2


# --- sources: what the refiner starts from ------------------------------------------------------

class SimulatorSource(nn.Module):
    """(z, l) → S(l): the frozen neural simulator; always in eval mode so BatchNorm keeps its fitted statistics."""

    def __init__(self, simulator: nn.Module):
        super().__init__()
        self.simulator = simulator.requires_grad_(False)

    def train(self, mode: bool = True) -> SimulatorSource:
        return super().train(False)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # -> [B, C, S, S]
        return self.simulator(labels)


class ClassTemplates(nn.Module):
    """labels → the mean image of their class: the mean-image variant's simulator (and the bundle's).

    `means` [K, C, S, S] is a buffer (fixed, saved with the weights); the class is the argmax of the
    layout's categorical slice, so near-one-hot inputs work too.
    """

    means: torch.Tensor  # buffer

    def __init__(self, classes: int, channels: int, image_size: int, class_start: int):
        super().__init__()
        self.class_start, self.classes = class_start, classes
        self.register_buffer("means", torch.zeros(classes, channels, image_size, image_size))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, C, S, S]
        cls = labels[:, self.class_start:self.class_start + self.classes].argmax(dim=1)  # [B]
        return self.means[cls]


class Diffeomorphism(nn.Module):
    """z → a smooth displacement field (bounded by `warp_max`), applied to an image by bilinear resampling.

    The field lives on a `warp_grid`² lattice and is upsampled bilinearly to full size (seed's
    `tf_diffeomorphism`); its amplitude comes from a learned layer, so G learns how strongly to bend
    (seed §5.1: "Die Parameter kann der Generator lernen, um die Verzerrung in Stärke anpassen zu können").
    Starts at zero displacement: the last layer is zero-initialised.
    """

    identity: torch.Tensor  # buffer

    def __init__(self, arch: LabelGANArch):
        super().__init__()
        g, s = arch.warp_grid, arch.image_size
        self.grid_size, self.warp_max = g, arch.warp_max
        hidden, amplitude = nn.Linear(arch.nz, 64), nn.Linear(64, 2 * g * g)  # built in this order: seeded inits
        nn.init.zeros_(amplitude.weight)
        nn.init.zeros_(amplitude.bias)
        self.net = nn.Sequential(hidden, nn.ReLU(), amplitude)
        axis = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("identity", torch.stack([xx, yy], dim=-1)[None])  # [1, S, S, 2] (x, y)

    def forward(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> same
        b, s = image.shape[0], image.shape[-1]
        coarse = torch.tanh(self.net(z)).view(b, 2, self.grid_size, self.grid_size) * self.warp_max
        field = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=True)  # [B, 2, S, S]
        grid = self.identity - field.permute(0, 2, 3, 1)  # [B, S, S, 2] where each output pixel samples
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class MeanImageSource(nn.Module):
    """(z, l) → warp(M[class(l)], φ(z)): seed §5.1's input, one template per class bent per sample."""

    def __init__(self, arch: LabelGANArch, classes: int, class_start: int):
        super().__init__()
        self.templates = ClassTemplates(classes, arch.channels, arch.image_size, class_start)
        self.warp = Diffeomorphism(arch)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # -> [B, C, S, S]
        return self.warp(self.templates(labels), z)


# --- generator ----------------------------------------------------------------------------------

class RefinerBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus identity (seed Fig. 4.2 and its notebook's `resnet_block`)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Refiner(nn.Module):
    """R(image, noise map): image → (width − 1) channels, noise appended as one channel, ResNet blocks,
    1×1 conv back to the image channels, ReLU(tanh(·)) so pixels lie in [0, 1) (seed §4.1.1)."""

    def __init__(self, arch: LabelGANArch):
        super().__init__()
        w = arch.refiner_width
        self.stem = nn.Sequential(nn.Conv2d(arch.channels, w - 1, 3, 1, 1), nn.ReLU())
        self.blocks = nn.Sequential(*(RefinerBlock(w) for _ in range(arch.refiner_blocks)))
        self.to_img = nn.Conv2d(w, arch.channels, 1)

    def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.stem(image), noise], dim=1)  # [B, w, S, S]
        return torch.relu(torch.tanh(self.to_img(self.blocks(x))))


class LabelGANGenerator(nn.Module):
    """G(z, l) = R(source(z, l), noise(z)) with the bundle's signature: z [B, nz], labels [B, D] → [B, C, S, S]."""

    def __init__(self, arch: LabelGANArch, source: nn.Module):
        super().__init__()
        self.arch = arch
        self.source = source
        self.noise = nn.Linear(arch.nz, arch.image_size * arch.image_size)  # z → one S×S channel
        self.refiner = Refiner(arch)

    def source_image(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """What R starts from (sample grids show it next to G's output)."""
        return self.source(z, labels)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        a = self.arch
        assert_shape(z, (None, a.nz), "LabelGAN z")
        assert_shape(labels, (z.shape[0], a.label_dim), "LabelGAN labels")
        noise = self.noise(z).view(z.shape[0], 1, a.image_size, a.image_size)  # [B, 1, S, S]
        return self.refiner(self.source(z, labels), noise)


# --- critic and predictor -----------------------------------------------------------------------

class Critic(nn.Module):
    """WGAN critic: stride-2 4×4 convs + LeakyReLU 0.2 (no normalisation: WGAN-GP), 2×2 map → linear → [B]."""

    def __init__(self, arch: LabelGANArch):
        super().__init__()
        widths = [arch.critic_width * min(2 ** i, 8) for i in range(arch.critic_convs)]
        ins = [arch.channels, *widths[:-1]]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 4, 2, 1) for i, o in zip(ins, widths, strict=True))
        self.out = nn.Linear(widths[-1] * 4, 1)
        self.feature_channels = widths[1]  # channels of the second conv's output

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The second convolution's activations [B, 2w, S/4, S/4]: what P reads (seed §4.1)."""
        for conv in self.convs[:2]:
            x = F.leaky_relu(conv(x), 0.2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B]
        h = self.features(x)
        for conv in self.convs[2:]:
            h = F.leaky_relu(conv(h), 0.2)
        return self.out(h.flatten(1)).squeeze(1)


class LabelPredictor(nn.Module):
    """P: four 3×3 convs (stride 2 while the map is larger than 2×2) + LeakyReLU, then one linear → l̃ [B, D]."""

    def __init__(self, arch: LabelGANArch, in_channels: int):
        super().__init__()
        w, size = arch.predictor_width, arch.image_size // 4
        layers: list[nn.Module] = []
        c_in = in_channels
        for _ in range(4):
            stride = 2 if size > 2 else 1
            layers += [nn.Conv2d(c_in, w, 3, stride, 1), nn.LeakyReLU(0.2)]
            c_in, size = w, size // stride
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(w * size * size, arch.label_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, 2w, S/4, S/4] -> [B, D]
        return self.out(self.convs(h).flatten(1))


class LabelReader(nn.Module):
    """images → concat(z̃, l̃) [B, nz + D] for the bundle: D's first two convs, then P.

    LabelGAN's P reads labels only (seed §4.1), so z̃ is the prior mean 0. Only D's first two convs
    are kept (the rest would sit unused in the exported file).
    """

    def __init__(self, critic: Critic, predictor: LabelPredictor, nz: int):
        super().__init__()
        self.convs = nn.ModuleList(critic.convs[:2])
        self.predictor = predictor
        self.nz = nz

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = images
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        labels = self.predictor(h)  # [B, D]
        return torch.cat([labels.new_zeros(labels.shape[0], self.nz), labels], dim=1)
