"""Discriminator D = autoencoder (thesis §3.3.4, Fig. 3.10); its reconstruction error is the energy.

Encoder: 3×3 conv in, residual blocks (channels rising linearly c → 4c) with 2×2 average pooling
after all but the last, minibatch-stddev before the last block, then FC → LReLU → dropout → FC to
the N_h embedding h. Decoder: FC → LReLU → dropout → FC to [5c, 4, 4], then the generator's
up-sampling stack (no output activation, see `generator.py`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.networks.config import NetConfig
from models.networks.layers import MinibatchStd, ResBlock, UpDecoder, assert_shape


def _fc_pair(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Linear(hidden, n_out))


class Discriminator(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths()[::-1]  # [c, ..., 4c]
        self.from_img = nn.Conv2d(cfg.channels, widths[0], 3, 1, 1)
        ins = [widths[0], *widths[:-1]]
        ins[-1] += 1  # minibatch-stddev channel enters the last block
        self.blocks = nn.ModuleList(ResBlock(i, o) for i, o in zip(ins, widths, strict=True))
        self.mbstd = MinibatchStd()
        self.enc_fc = _fc_pair(widths[-1] * 16, cfg.hidden, cfg.nh, cfg.dropout_d)
        self.dec_fc = _fc_pair(cfg.nh, cfg.hidden, 5 * cfg.c * 16, cfg.dropout_d)
        self.decoder = UpDecoder(5 * cfg.c, cfg.widths(), cfg.channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, Nh]
        cfg = self.cfg
        assert_shape(x, (None, cfg.channels, cfg.image_size, cfg.image_size), "Discriminator input")
        x = self.from_img(x)  # [B, c, S, S]
        for i, block in enumerate(self.blocks):
            if i == len(self.blocks) - 1:
                x = self.mbstd(x)  # [B, 3c+1, 4, 4] at 32×32
            x = block(x)
            if i < len(self.blocks) - 1:
                x = F.avg_pool2d(x, 2)
        return self.enc_fc(x.flatten(1))  # [B, Nh]

    def decode(self, h: torch.Tensor) -> torch.Tensor:  # [B, Nh] -> [B, C, S, S]
        assert_shape(h, (None, self.cfg.nh), "Discriminator embedding")
        x = self.dec_fc(h).view(h.shape[0], 5 * self.cfg.c, 4, 4)  # [B, 5c, 4, 4]
        return self.decoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> reconstruction [B, C, S, S]
        return self.decode(self.encode(x))
