"""A tiny procedural Domain for trainer tests (not registered globally): DIGITS layout, blob images.

Simulator side: a bright Gaussian blob on black whose position follows the class and dx/dy and whose
size follows thickness. Real side: the same blobs, dimmer, on a noisy grey background — a small but
real domain gap, cheap enough for CPU tests at 8–16 px.
"""

from __future__ import annotations

import torch

from models.domains.base import Domain, RealSplit
from models.layouts import DIGITS, sample_prior


class TinyBlobDomain(Domain):
    name = "tiny-blobs"
    layout = DIGITS

    def __init__(self, image_size: int = 8, seed: int = 0, device: str = "cpu", channels: int = 1, pool: int = 48):
        super().__init__(image_size=image_size, seed=seed, device=device)
        self.channels = channels
        gen = torch.Generator(device=self.device).manual_seed(seed + 100)
        labels = self.sample_labels(pool, gen)
        blobs, _ = self.simulate(labels)
        noise = torch.rand(blobs.shape, generator=gen, device=self.device)
        self._pool = (0.3 + 0.2 * noise + 0.5 * blobs).clamp(0, 1)

    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_prior(DIGITS, n, generator=generator, device=self.device)

    def simulate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.image_size
        cls = labels[:, :10].argmax(dim=1).float()  # [B]
        cx = 0.5 + 0.04 * (cls - 4.5) + 0.05 * labels[:, 14]  # [B] fraction of the image
        cy = 0.5 + 0.05 * labels[:, 15]
        width = (0.12 + 0.03 * labels[:, 11]).clamp_min(0.04)
        grid = (torch.arange(s, device=labels.device, dtype=torch.float32) + 0.5) / s  # [S]
        d2 = (grid[None, None, :] - cx[:, None, None]) ** 2 + (grid[None, :, None] - cy[:, None, None]) ** 2
        blob = torch.exp(-d2 / (2 * width[:, None, None] ** 2))[:, None]  # [B, 1, S, S]
        img = blob.expand(-1, self.channels, -1, -1).contiguous()
        return img, (blob > 0.3).float()

    def real_train(self) -> RealSplit:
        return RealSplit(images=self._pool)
