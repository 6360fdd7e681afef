"""Small building blocks shared by the RenderBEGAN networks (thesis §3.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def assert_shape(x: torch.Tensor, shape: Sequence[int | None], name: str = "tensor") -> None:
    """Fail loudly at a module boundary when a tensor's shape is off; `None` matches any size."""
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape, strict=True)):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")


class PixelNorm(nn.Module):
    """Pixelwise feature normalisation (thesis eq. 3.10): each pixel's feature vector to unit RMS."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al. 2017): appends one channel holding the mean std.

    Why a running average: the plain layer makes each image's embedding depend on the other images
    in its batch, so a served predictor would answer differently for the same photo depending on
    its neighbours. Training uses the batch statistic (as Karras) and tracks it like BatchNorm does;
    eval mode uses the tracked value, so inference is per-sample.
    """

    running_std: torch.Tensor  # buffer

    def __init__(self, momentum: float = 0.01, eps: float = 1e-8):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_std", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C+1, H, W]
        b, _, h, w = x.shape
        if self.training and b > 1:
            stat = torch.sqrt(x.var(dim=0, unbiased=False) + self.eps).mean()  # []
            with torch.no_grad():
                self.running_std.lerp_(stat.detach().to(self.running_std.dtype), self.momentum)
        else:
            stat = self.running_std.to(x.dtype)
        return torch.cat([x, stat.expand(b, 1, h, w)], dim=1)


class ResBlock(nn.Module):
    """Two 3×3 convs, each followed by LReLU 0.2 and PixelNorm, with a (1×1 if needed) skip (thesis §3.3.3)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.norm = PixelNorm()
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, c_in, H, W] -> [B, c_out, H, W]
        y = self.norm(F.leaky_relu(self.conv1(x), 0.2))
        y = self.norm(F.leaky_relu(self.conv2(y), 0.2))
        return y + self.skip(x)


class UpDecoder(nn.Module):
    """From a 4×4 tensor to an image: residual blocks, nearest ×2 upsampling after all but the last,
    channels decreasing linearly 4c → c, then a 3×3 conv to the image channels (G and D's decoder).
    """

    def __init__(self, c_in: int, widths: Sequence[int], channels: int):
        super().__init__()
        ins = [c_in, *widths[:-1]]
        self.blocks = nn.ModuleList(ResBlock(i, o) for i, o in zip(ins, widths, strict=True))
        self.to_img = nn.Conv2d(widths[-1], channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, c_in, 4, 4] -> [B, C, S, S]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.blocks) - 1:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.to_img(x)
