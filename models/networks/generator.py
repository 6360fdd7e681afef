"""Generator G(z, l) (thesis §3.3.3, Fig. 3.9).

(z, l) are concatenated and stacked to a [Nz + D, 4, 4] tensor (every position sees all of z and l),
then residual blocks with LReLU 0.2 and PixelNorm, nearest ×2 upsampling after all but the last,
channels decreasing linearly 4c → c, and a final 3×3 conv to the image channels.

Output range: like the thesis, there is no output activation. G is pulled into [0, 1] by the
discriminator (whose real inputs are in [0, 1]) and by the content loss against S(l) ∈ [0, 1];
anything that turns G's output into pixels (grids, exports, shards) clamps to [0, 1].

`g_input="dense"` replaces the stacking by a learned linear map to the same [Nz + D, 4, 4] tensor, as
Progressive GAN's first block does (its 4×4 convolution on the 1×1 latent). Why: a stacked input is
the same at all 16 positions, so the only spatial signal the convolutions get is their zero padding;
G must learn where things go from border effects alone. A projection gives every position its own
features from the first layer on. Measured on digits (c=16, seed 0, 2-core CPU): at iteration 2,000
P's digit loss on G's images is 1.55 with `dense` vs 1.76 with `stack`, while L_c and L_d(G) are the
same (0.81 vs 0.76, 0.081 vs 0.082): a modest gain, not a cure (docs/results/README.md).
"""

from __future__ import annotations

import torch
from torch import nn

from models.networks.config import NetConfig
from models.networks.layers import UpDecoder, assert_shape


class Generator(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        n_in = cfg.nz + cfg.label_dim
        self.project = nn.Linear(n_in, n_in * 16) if cfg.g_input == "dense" else None
        self.decoder = UpDecoder(n_in, cfg.widths(), cfg.channels)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # -> [B, C, S, S]
        cfg = self.cfg
        assert_shape(z, (None, cfg.nz), "Generator z")
        assert_shape(labels, (z.shape[0], cfg.label_dim), "Generator labels")
        v = torch.cat([z, labels], dim=1)  # [B, Nz+D]
        if self.project is not None:
            x = self.project(v).view(v.shape[0], v.shape[1], 4, 4)  # [B, Nz+D, 4, 4], each position its own
        else:
            x = v[:, :, None, None].expand(-1, -1, 4, 4)  # [B, Nz+D, 4, 4], the same everywhere
        return self.decoder(x)
