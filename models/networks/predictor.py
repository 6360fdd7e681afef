"""Predictor P(h) (thesis §3.3.5, Fig. 3.11): reads (z̃, l̃) back out of D's embedding h.

Three FC layers; the first two are followed by LReLU 0.2 and the second also by dropout 0.4. The
output's first N_z entries are z̃, the rest l̃ (standardized label units; categorical fields are
logits, see `models.losses.label_loss`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.networks.config import NetConfig
from models.networks.layers import assert_shape


class Predictor(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.Linear(cfg.nh, cfg.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.LeakyReLU(0.2),
            nn.Dropout(cfg.dropout_p),
            nn.Linear(cfg.hidden, cfg.nz + cfg.label_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, Nh] -> [B, Nz + D]
        assert_shape(h, (None, self.cfg.nh), "Predictor embedding")
        return self.net(h)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, Nz + D] → (z̃ [B, Nz], l̃ [B, D])."""
        return out[:, : self.cfg.nz], out[:, self.cfg.nz :]


class ImagePredictor(nn.Module):
    """D's encoder followed by P: images in [0, 1] → concat(z̃, l̃) — what a bundle's predictor file holds.

    D's decoder is dropped from (a copy of) D: TorchScript keeps every submodule's weights, used or
    not, and the decoder would double the predictor's file size for nothing.
    """

    def __init__(self, discriminator: nn.Module, predictor: nn.Module):
        super().__init__()
        encoder = copy.deepcopy(discriminator)
        for unused in ("dec_fc", "decoder"):
            if hasattr(encoder, unused):
                delattr(encoder, unused)
        self.discriminator = encoder
        self.predictor = predictor

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, Nz + D]
        return self.predictor(self.discriminator.encode(images))  # type: ignore[operator]
