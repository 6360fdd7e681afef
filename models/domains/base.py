"""The `Domain` interface every trainer and the evaluation consume, and its registry.

A domain bundles the *simulator side* (label prior + renderer: labels → images with masks) and the
*real side* (images without labels for training; a labeled test split for evaluation only, where the
domain has ground truth). Trainers never see `real_test` labels — that is what keeps "gap closed"
honest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.layouts import LabelLayout


@dataclass
class RealSplit:
    """Real images, float in [0, 1], [N, C, H, W]; `labels` standardized [N, dim] or None if unknown."""

    images: torch.Tensor
    labels: torch.Tensor | None = None


class Domain(ABC):
    """Simulator side + real side at one image size. Subclasses register with `@register_domain`."""

    name: str
    layout: LabelLayout
    channels: int
    # Whether the content loss L_c compares objects only (thesis Fig. 3.8: S's background replaces G's
    # outside the simulator's object mask). Right for faces, whose real backgrounds differ from the
    # renderer's. Wrong where the mask is the shape itself and both sides share the background (digits:
    # strokes on black): masked G then equals S(l) for ANY G that is bright under the strokes, so a
    # uniform blob satisfies L_c and G never learns the class. Such domains set this False.
    mask_content: bool = True

    def __init__(self, image_size: int = 32, seed: int = 0, device: torch.device | str = "cpu"):
        self.image_size = image_size
        self.seed = seed
        self.device = torch.device(device)

    @abstractmethod
    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """[n, layout.dim] standardized labels from the simulator-side prior."""

    @abstractmethod
    def simulate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [B, dim] → (images [B, C, S, S] in [0, 1], masks [B, 1, S, S] in {0, 1}); deterministic."""

    @abstractmethod
    def real_train(self) -> RealSplit:
        """Unlabeled real images for training (labels always None here)."""

    def real_test(self) -> RealSplit | None:
        """Held-out real images with ground-truth labels, for evaluation only; None when unknown."""
        return None

    def pose_real(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Real images [N, C, S, S] moved to the poses `labels` [N, dim] ask for, or None where the domain
        cannot do that with a 2-D warp (a face's yaw needs the 3-D head).

        For the evaluation only: real test images in the requested poses are what a perfect generator
        would make, so the oracle's reading of them is the ceiling of "generated read as asked".
        """
        return None

    def real_class_means(self) -> torch.Tensor | None:
        """[K, C, S, S]: the mean real *train* image of each class of the layout's categorical field, or None
        where the real side has no classes.

        The one piece of real-side label information a trainer may read: K averaged images, the weak
        supervision of the LabelGAN seed's mean-image experiment (§5.1 starts from MNIST's class means).
        Per-image real labels stay hidden, and the test split is never part of the mean.
        """
        return None


_DOMAINS: dict[str, Callable[..., Domain]] = {}


def register_domain(name: str) -> Callable[[type[Domain]], type[Domain]]:
    def wrap(cls: type[Domain]) -> type[Domain]:
        if name in _DOMAINS:
            raise ValueError(f"domain '{name}' registered twice")
        _DOMAINS[name] = cls
        cls.name = name
        return cls

    return wrap


def check_domain(name: str) -> None:
    """Raise ValueError listing the known domains when `name` is not one: callers check a config before
    they create anything on disk for it."""
    import models.domains.catalog  # noqa: F401  (registers the built-in domains)

    if name not in _DOMAINS:
        raise ValueError(f"unknown domain '{name}'; known: {', '.join(sorted(_DOMAINS))}")


def get_domain(name: str, **kwargs: object) -> Domain:
    """Build a registered domain; unknown names list the known ones."""
    check_domain(name)
    return _DOMAINS[name](**kwargs)


def list_domains() -> list[str]:
    import models.domains.catalog  # noqa: F401

    return sorted(_DOMAINS)
