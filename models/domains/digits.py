"""The `digits` domain: stroke-rendered digits (simulator) vs scikit-learn's real handwritten digits.

The real side is the 1,797 8×8 scans that ship inside scikit-learn (values 0..16, white ink on black),
scaled to [0, 1] and resized bilinearly to the domain's image size. The train/test split is FIXED —
the same 1,297 / 500 stratified split for every domain seed — so evaluation figures from different runs
compare on the same test digits. Only the class is known for a real digit: `real_test().labels` are the
one-hot `digit` with every continuous field (rotation, thickness, scale, slant, dx, dy) set to 0, which
means "unknown", not "upright". Evaluation must score the `digit` field only. The train split's classes
reach a trainer only as ten averaged images (`real_class_means`, the LabelGAN seed's mean images).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.domains.base import Domain, RealSplit, register_domain
from models.layouts import DIGITS, sample_prior
from models.render.digits import glyph_to_image, render_digits

SPLIT_SEED = 20_240_601  # the fixed train/test split; independent of the domain seed on purpose
TEST_COUNT = 500  # real test digits (stratified by class); the other 1,297 are the unlabeled train pool


def real_digits_split() -> tuple[np.ndarray, np.ndarray]:
    """(train indices [1297], test indices [500]) into `sklearn.datasets.load_digits()`, stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    idx_train, idx_test = train_test_split(
        np.arange(len(target)), test_size=TEST_COUNT, stratify=target, random_state=SPLIT_SEED
    )
    return idx_train, idx_test


@register_domain("digits")
class DigitsDomain(Domain):
    """Simulator: `render_digits` of prior labels. Real: scikit-learn digits (fixed split, classes only)."""

    layout = DIGITS
    channels = 1
    mask_content = False  # the stroke mask IS the digit: L_c must see the whole image (see Domain)

    def __init__(self, image_size: int = 32, seed: int = 0, device: torch.device | str = "cpu"):
        super().__init__(image_size=image_size, seed=seed, device=device)
        from sklearn.datasets import load_digits

        data = load_digits()
        images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # [1797, 1, 8, 8]
        idx_train, idx_test = real_digits_split()
        self._train = self._resize(images[idx_train])  # unlabeled pool: its classes only enter the class means
        train_y = torch.from_numpy(data.target[idx_train]).long().to(self.device)
        self._class_means = torch.stack([self._train[train_y == k].mean(dim=0) for k in range(10)])
        self._test = self._resize(images[idx_test])
        test_y = torch.from_numpy(data.target[idx_test]).long()  # [500]
        labels = torch.zeros(len(test_y), DIGITS.dim)  # continuous fields 0 = unknown (see module doc)
        labels[:, DIGITS["digit"].slice] = F.one_hot(test_y, 10).float()
        self._test_labels = labels.to(self.device)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 1, 8, 8] → [N, 1, S, S] on the domain's device, bilinear, clamped to [0, 1]."""
        out = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return out.clamp(0, 1).to(self.device)

    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_prior(DIGITS, n, generator=generator, device=self.device)

    def simulate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return render_digits(labels.to(self.device), self.image_size)

    def real_train(self) -> RealSplit:
        return RealSplit(images=self._train, labels=None)

    def real_test(self) -> RealSplit:
        return RealSplit(images=self._test, labels=self._test_labels)

    def pose_real(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The renderer's pose map (slant, scale, rotation, shift; `glyph_to_image`) applied to real scans.

        A scan is taken as upright, centred and of the prior's mean height (the `scale` field's offset), so
        a label at the prior's mean leaves it unchanged. Thickness is not a pose and stays the scan's own.
        """
        a, t, _ = glyph_to_image(labels.float().to(images.device))  # image fractions, y down
        a = a / DIGITS["scale"].offset  # relative to a scan's own height
        # affine_grid maps OUTPUT positions to INPUT ones in [-1, 1] units (2× image fractions): the inverse map.
        inv = torch.linalg.inv(a)  # [N, 2, 2]
        theta = torch.cat([inv, -(inv @ (2 * t)[..., None])], dim=2)  # [N, 2, 3]
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def real_class_means(self) -> torch.Tensor:
        return self._class_means
