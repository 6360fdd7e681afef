"""Training pools for the two baselines: simulator images (source-only) and labeled real ones (oracle).

The labeled real pool is the *evaluation-only* path: trainers never call it. A domain may offer it
itself through a method `real_labeled_for_eval(n, generator) -> RealSplit`; for the built-in domains
that do not (yet), this module derives it without touching the test split:
- `faces-m`: extra photometric renders through the domain's own `render_photo_pool`, from a 47-bit
  seed derived from a private tag, so they never coincide with the domain's train/test pools
  (`REAL_SEED_BASE + 2·seed (+1)`) nor with anything a trainer samples;
- `digits`: the domain's own real train split with the classes `real_digits_split()` knows (the
  domain drops them from `real_train()`), so the 500 test digits stay unseen.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from models.domains.base import Domain, RealSplit
from models.layouts import DIGITS

CHUNK = 512  # images rendered per call


def derived_seed(seed: int, tag: str) -> int:
    """A 48-bit seed for stream `tag`, unrelated to `seed` + small offsets that other code might use."""
    return int.from_bytes(hashlib.sha256(f"labelforge-eval/{tag}/{seed}".encode()).digest()[:6], "big")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[N, C, S, S] floats in [0, 1] → uint8 on the CPU (a quarter of the memory for large pools); uint8
    images (a domain's cached pool) pass through — scaling them again would clamp every pixel to 0 or 255."""
    if images.dtype == torch.uint8:
        return images.cpu()
    return (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def simulator_pool(domain: Domain, n: int, seed: int) -> RealSplit:
    """n simulator images with their labels (prior of the domain), uint8 images, CPU."""
    gen = torch.Generator().manual_seed(derived_seed(seed, "source"))
    images, labels = [], []
    for start in range(0, n, CHUNK):
        lab = domain.sample_labels(min(CHUNK, n - start), gen).float()  # [b, D]
        images.append(to_uint8(domain.simulate(lab.to(domain.device))[0]))
        labels.append(lab.cpu())
    return RealSplit(torch.cat(images), torch.cat(labels))


def real_labeled_pool(domain: Domain, n: int, seed: int) -> RealSplit:
    """Evaluation only: labeled real-side images for the oracle (see the module docstring)."""
    gen = torch.Generator().manual_seed(derived_seed(seed, "oracle"))
    hook = getattr(domain, "real_labeled_for_eval", None)
    if hook is not None:
        split = hook(n, gen)
    elif domain.name == "faces-m":
        split = _faces_photo_pool(domain, n, gen)
    elif domain.name == "digits":
        split = _digits_train_labels(domain)
    else:
        raise ValueError(f"domain '{domain.name}' has no labeled real images to train an oracle on")
    if split.labels is None:
        raise ValueError(f"domain '{domain.name}': the labeled real pool came back without labels")
    return RealSplit(to_uint8(split.images), split.labels.float().cpu())


def _faces_photo_pool(domain: Domain, n: int, gen: torch.Generator) -> RealSplit:
    """Fresh photo-mode renders through the domain's own pool renderer, from a seed of their own."""
    from models.domains.faces_m import render_photo_pool

    seed = int(torch.randint(0, 2**47, (1,), generator=gen))
    pool = render_photo_pool(domain.renderer, n, domain.image_size, seed, domain.device)  # type: ignore[attr-defined]
    return RealSplit(pool["images"], pool["labels"])


def _digits_train_labels(domain: Domain) -> RealSplit:
    """The domain's real train digits with their classes (the domain drops them; the split is its own)."""
    from sklearn.datasets import load_digits

    from models.domains.digits import real_digits_split

    idx_train, _ = real_digits_split()  # indices into load_digits(), in the order of real_train()
    train = domain.real_train().images  # [1297, 1, S, S]
    if len(idx_train) != len(train):
        raise ValueError(f"digits: real_train() has {len(train)} images but the split lists {len(idx_train)}")
    classes = torch.as_tensor(load_digits().target[idx_train], dtype=torch.long)  # [1297]
    labels = torch.zeros(len(classes), DIGITS.dim)
    labels[:, DIGITS["digit"].slice] = F.one_hot(classes, 10).float()
    return RealSplit(train, labels)
