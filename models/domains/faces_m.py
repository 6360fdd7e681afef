"""The `faces-m` benchmark domain: plain face renders (simulator) vs photometric renders ("real").

It is the MNIST → MNIST-M idea applied to faces: the real side is the same face model drawn in photo
mode (random lights and colours, specular, photo backgrounds, occluders, blur, noise, JPEG), so its
ground-truth labels exist and "gap closed" can be measured, yet training only ever sees its images.

The real pools are rendered from prior labels with seeds far from anything a trainer samples
(`REAL_SEED_BASE`), train and test from different seeds so they never share a face, then cached on
disk as uint8 under `$LABELFORGE_CACHE_DIR/faces-m/` keyed by size, seed, count and a fingerprint
of the renderer's source, so changing the renderer invalidates the cache by itself.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models import data_cache
from models.domains.base import Domain, RealSplit, register_domain
from models.layouts import FACES, sample_prior

if TYPE_CHECKING:
    from models.render.faces import FaceRenderer

log = logging.getLogger(__name__)

REAL_SEED_BASE = 0x5EED_FACE  # real-pool seeds start here; trainers seed with small integers
POOL_FORMAT = 1  # bump when the way pools are drawn (not the renderer) changes
CHUNK = 256  # faces rendered per call; part of the cache key since photo noise follows the chunking
PROGRESS_AFTER_S = 3.0  # show a progress bar when a pool is predicted to take longer than this


def _renderer_fingerprint() -> str:
    """Hash of the face model and every face-renderer module (photo effects included)."""
    import models.face_model
    import models.render

    render_dir = Path(models.render.__file__).parent
    sources = [p for p in sorted(render_dir.glob("*.py")) if p.name != "digits.py"]
    return data_cache.file_fingerprint(models.face_model.__file__, *sources)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def render_photo_pool(
    renderer: FaceRenderer, count: int, size: int, seed: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """`count` photo-mode faces: {"images": uint8 [N, 3, S, S], "labels": float32 [N, 400]}.

    Renders in chunks of `CHUNK`; once the first chunk predicts more than `PROGRESS_AFTER_S` seconds in
    all, a rich progress bar shows the rest.
    """
    log.info("faces-m: rendering %d photo-mode faces at %dpx (seed %d)", count, size, seed)
    labels = sample_prior(FACES, count, generator=torch.Generator().manual_seed(seed))  # [N, 400]
    photo_gen = torch.Generator().manual_seed(seed + 1)  # CPU: the same pool whatever the device
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)  # [N, 3, S, S]
    starts = list(range(0, count, CHUNK))

    def render_chunk(lo: int) -> None:
        out = renderer.render(labels[lo : lo + CHUNK].to(device), size, mode="photo", generator=photo_gen)
        images[lo : lo + CHUNK] = _to_uint8(out.image)

    began = time.perf_counter()
    render_chunk(starts[0])
    if (time.perf_counter() - began) * len(starts) <= PROGRESS_AFTER_S:
        for lo in starts[1:]:
            render_chunk(lo)
        return {"images": images, "labels": labels}

    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(f"faces-m: rendering {count} photo faces at {size}px", total=len(starts), completed=1)
        for lo in starts[1:]:
            render_chunk(lo)
            progress.advance(task)
    return {"images": images, "labels": labels}


@register_domain("faces-m")
class FacesMDomain(Domain):
    """Simulator: plain renders of prior labels. Real: cached photo-mode renders (labels hidden in train)."""

    layout = FACES
    channels = 3

    def __init__(
        self,
        image_size: int = 32,
        seed: int = 0,
        device: torch.device | str = "cpu",
        real_train_count: int = 20_000,  # unlabeled real images for training
        real_test_count: int = 2_000,  # labeled real images for evaluation only
        cache_dir: str | Path | None = None,  # default: $LABELFORGE_CACHE_DIR or ~/.cache/labelforge
    ):
        super().__init__(image_size=image_size, seed=seed, device=device)
        for name, value in (("real_train_count", real_train_count), ("real_test_count", real_test_count)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        from models.render.faces import FaceRenderer

        self.renderer = FaceRenderer(device=self.device)
        self.real_train_count = real_train_count
        self.real_test_count = real_test_count
        self._cache_root = Path(cache_dir) if cache_dir is not None else None
        self._train: torch.Tensor | None = None
        self._test: RealSplit | None = None

    def _pool(self, split: str, count: int, seed: int) -> dict[str, torch.Tensor]:
        key = data_cache.cache_key(
            split=split, size=self.image_size, seed=seed, count=count, chunk=CHUNK,
            pool_format=POOL_FORMAT, renderer=_renderer_fingerprint(),
        )
        return data_cache.load_or_build(
            "faces-m",
            key,
            lambda: render_photo_pool(self.renderer, count, self.image_size, seed, self.device),
            root=self._cache_root,
        )

    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_prior(FACES, n, generator=generator, device=self.device)

    def simulate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.renderer.render(labels.to(self.device), self.image_size, mode="plain")
        return out.image, out.mask

    def real_train(self) -> RealSplit:
        if self._train is None:
            pool = self._pool("train", self.real_train_count, REAL_SEED_BASE + 2 * self.seed)
            self._train = pool["images"].to(self.device).float() / 255  # labels dropped: unlabeled side
        return RealSplit(images=self._train, labels=None)

    def real_test(self) -> RealSplit:
        if self._test is None:
            pool = self._pool("test", self.real_test_count, REAL_SEED_BASE + 2 * self.seed + 1)
            self._test = RealSplit(
                images=pool["images"].to(self.device).float() / 255, labels=pool["labels"].to(self.device)
            )
        return self._test
