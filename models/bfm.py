"""Loaders for the real Basel Face Model files users bring (BFM2009 `.mat`, BFM2017 `.h5`).

Both become a `FaceModel` in the project convention: head-centred (bounding-box centre at the origin),
half-height 1 (BFM2009 is in µm, BFM2017 in mm: normalising the scale removes the unit), colours in
[0, 1] (BFM2009 stores 0–255), σ per component (BFM2009 `*EV` are σ; BFM2017 `pcaVariance` is σ²).
BFM2017's `pcaBasis` is detected rather than assumed: if its columns have norm √variance it is σ-scaled
and is divided back to unit norm, if they have norm 1 it is used as is. The faces layout needs exactly
199 components per part: more are truncated (the smallest σ go), fewer are padded with zero components
of σ = 0 (labels there have no effect); both cases log a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from models.face_model import FaceModel, orient_outward
from models.layouts import N_SHAPE, N_TEXTURE

logger = logging.getLogger(__name__)


def _fit(basis: np.ndarray, std: np.ndarray, k: int, part: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """basis [K, V, 3], std [K] → exactly k components (truncate or zero-pad), with a logged note."""
    n = len(std)
    if n > k:
        logger.warning("%s: %d %s components, keeping the first %d (faces layout)", name, n, part, k)
        return basis[:k], std[:k]
    if n < k:
        logger.warning("%s: %d %s components, padding to %d with σ = 0 (labels there do nothing)", name, n, part, k)
        basis = np.concatenate([basis, np.zeros((k - n, *basis.shape[1:]), basis.dtype)])
        std = np.concatenate([std, np.zeros(k - n, std.dtype)])
    return basis, std


def _unit_columns(pcs: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[3V, K] components → unit-norm columns; a σ-scaled basis (norm ≈ σ) is divided by σ."""
    norms = np.linalg.norm(pcs, axis=0)
    return pcs / np.where(norms > 0, norms, 1.0)


def _assemble(mean: np.ndarray, pcs: np.ndarray, std: np.ndarray, tmean: np.ndarray, tpcs: np.ndarray,
              tstd: np.ndarray, triangles: np.ndarray, name: str) -> FaceModel:
    """Flat BFM arrays (interleaved x, y, z) → normalised FaceModel."""
    v = mean.size // 3
    mean = mean.reshape(v, 3).astype(np.float64)
    lo, hi = mean.min(0), mean.max(0)
    scale = 2.0 / (hi[1] - lo[1])
    mean = (mean - (lo + hi) / 2) * scale
    colour_scale = 1 / 255.0 if tmean.max() > 1.5 else 1.0
    sb = _unit_columns(pcs, std).T.reshape(-1, v, 3)
    tb = _unit_columns(tpcs, tstd).T.reshape(-1, v, 3)
    sb, std = _fit(sb, std * scale, N_SHAPE, "shape", name)
    tb, tstd = _fit(tb, tstd * colour_scale, N_TEXTURE, "texture", name)
    tri = orient_outward(mean, triangles.astype(np.int64))
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return FaceModel(f32(mean), f32(sb), f32(std), f32(np.clip(tmean.reshape(v, 3) * colour_scale, 0, 1)),
                     f32(tb), f32(tstd), torch.from_numpy(tri), name)


def load_bfm2009(path: str | Path) -> FaceModel:
    """`01_MorphableModel.mat`: shapeMU [3V,1], shapePC [3V,K], shapeEV [K,1] (σ), tex*, tl [T,3] 1-based."""
    from scipy.io import loadmat

    m = loadmat(str(path))
    return _assemble(m["shapeMU"].ravel(), m["shapePC"], m["shapeEV"].ravel(), m["texMU"].ravel(), m["texPC"],
                     m["texEV"].ravel(), m["tl"] - 1, f"bfm2009:{Path(path).name}")


def load_bfm2017(path: str | Path) -> FaceModel:
    """BFM2017 `.h5`: {shape,color}/model/{mean,pcaBasis,pcaVariance} (σ²), shape/representer/cells [3,T]."""
    import h5py

    with h5py.File(path, "r") as h:
        s, c = h["shape/model"], h["color/model"]
        sstd, cstd = np.sqrt(np.asarray(s["pcaVariance"]).ravel()), np.sqrt(np.asarray(c["pcaVariance"]).ravel())
        return _assemble(np.asarray(s["mean"]).ravel(), np.asarray(s["pcaBasis"]), sstd,
                         np.asarray(c["mean"]).ravel(), np.asarray(c["pcaBasis"]), cstd,
                         np.asarray(h["shape/representer/cells"]).T, f"bfm2017:{Path(path).name}")
