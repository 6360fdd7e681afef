"""Predictor P(h) (thesis §3.3.5, Fig. 3.11): reads (z̃, l̃) back out of D's embedding h.

Three FC layers; the first two are followed by LReLU 0.2 and the second also by dropout 0.4. The
output's first N_z entries are z̃, the rest l̃ (standardized label units; categorical fields are
logits, see `models.losses.label_loss`).
"""

from __future__ import annotations

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
