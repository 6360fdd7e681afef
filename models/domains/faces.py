"""The `faces` domain: plain face renders (simulator) vs a folder of the user's own face photos.

The photos have no labels at all, so this domain has no test split; evaluation falls back to realism
and cycle metrics. Photos are centre-cropped to a square and resized once, at construction, so a bad
folder fails immediately with a message naming `photo_dir` rather than deep inside a training run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from models.domains.base import Domain, RealSplit, register_domain
from models.layouts import FACES, sample_prior

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


class PhotoFolderError(ValueError):
    """The `photo_dir` of a `faces` domain is missing, empty or holds no readable image."""


def load_photo_folder(photo_dir: str | Path, size: int) -> torch.Tensor:
    """Every readable image under `photo_dir` (recursively, sorted by path) → [N, 3, S, S] float in [0, 1].

    Unreadable files are skipped with a warning; none readable is an error.
    """
    root = Path(photo_dir).expanduser()
    if not root.is_dir():
        raise PhotoFolderError(f"photo_dir: '{root}' is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise PhotoFolderError(
            f"photo_dir: '{root}' holds no image files ({', '.join(sorted(PHOTO_SUFFIXES))})"
        )
    photos = []
    for path in files:
        try:
            with Image.open(path) as img:
                square = ImageOps.fit(img.convert("RGB"), (size, size), method=Image.Resampling.LANCZOS)
        except (OSError, UnidentifiedImageError) as err:
            log.warning("skipping unreadable photo %s: %s", path, err)
            continue
        photos.append(torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1))  # [3, S, S] uint8
    if not photos:
        raise PhotoFolderError(f"photo_dir: none of the {len(files)} image files in '{root}' could be read")
    return torch.stack(photos).float() / 255  # [N, 3, S, S]


@register_domain("faces")
class FacesDomain(Domain):
    """Simulator: plain renders of prior labels. Real: the user's photos, unlabeled, no test split."""

    layout = FACES
    channels = 3

    def __init__(
        self,
        image_size: int = 32,
        seed: int = 0,
        device: torch.device | str = "cpu",
        photo_dir: str | Path | None = None,  # folder of face photos (searched recursively)
    ):
        super().__init__(image_size=image_size, seed=seed, device=device)
        if photo_dir is None:
            raise PhotoFolderError("photo_dir: the faces domain needs a folder of face photos (photo_dir=...)")
        self._photos = load_photo_folder(photo_dir, image_size).to(self.device)
        from models.render.faces import FaceRenderer

        self.renderer = FaceRenderer(device=self.device)

    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_prior(FACES, n, generator=generator, device=self.device)

    def simulate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.renderer.render(labels.to(self.device), self.image_size, mode="plain")
        return out.image, out.mask

    def real_train(self) -> RealSplit:
        return RealSplit(images=self._photos, labels=None)
