"""Neural simulator S(l) (thesis §3.3.1, Fig. 3.6): a differentiable stand-in for the renderer.

FC → [4c, 4, 4], then per resolution doubling a 3×3 conv + BatchNorm + LReLU 0.2 + ×2 upsample with
channels decreasing linearly, and a last 3×3 conv to the image channels with a sigmoid, so S's
images live in [0, 1] like the renderer's.
"""

from __future__ import annotations

import torch
from torch import nn

from models.networks.config import NetConfig
from models.networks.layers import assert_shape


class Simulator(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths()  # [4c, ..., c]
        self.fc = nn.Linear(cfg.label_dim, widths[0] * 16)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, 1, 1),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2),
                nn.Upsample(scale_factor=2.0, mode="nearest"),
            ]
        layers += [nn.Conv2d(widths[-1], cfg.channels, 3, 1, 1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, C, S, S]
        cfg = self.cfg
        assert_shape(labels, (None, cfg.label_dim), "Simulator labels")
        x = self.fc(labels).view(labels.shape[0], -1, 4, 4)  # [B, 4c, 4, 4]
        return self.body(x)
