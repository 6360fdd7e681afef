"""The morphable face model every face renderer draws from, and the built-in procedural one.

A `FaceModel` has the Basel Face Model's structure (mean + principal components with their standard
deviations, for shape and for per-vertex colour, plus triangles), so a label's `shape`/`texture`
coefficients mean "this many σ along component i" whichever model is loaded. The real BFM may not be
redistributed, so `builtin_face_model()` builds a stand-in procedurally: a smooth, left–right symmetric
head (eyes, brows, nose, lips, chin, ears, hair) on a latitude–longitude mesh that is denser over the
face, with 199 shape and 199 texture components of decreasing σ (hand-designed semantic ones first,
then smaller smooth symmetric bumps). It is deterministic and cached on disk on first use.

Conventions: y up, x to the *viewer's* right when the face looks at the camera (the face's left),
z toward the camera; head-centred, half-height ≈ 1 (chin ≈ −0.95, crown ≈ +1); colours RGB in [0, 1].
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from models.layouts import N_SHAPE, N_TEXTURE

logger = logging.getLogger(__name__)

BUILTIN_VERSION = 1  # bump whenever the procedural geometry/texture changes: it names the cache file
N_LAT = 53  # mesh rows between the poles
N_LON = 64  # mesh columns around the head


@dataclass
class FaceModel:
    """A linear morphable face model (vertex = mean + Σ_i l_i σ_i basis_i), Basel layout."""

    mean_shape: torch.Tensor  # [V, 3] float32, head-centred, half-height ≈ 1, y up, z toward camera
    shape_basis: torch.Tensor  # [K_s, V, 3] principal components, each of unit Frobenius norm
    shape_std: torch.Tensor  # [K_s] σ of each component, model units
    mean_texture: torch.Tensor  # [V, 3] RGB in [0, 1]
    texture_basis: torch.Tensor  # [K_t, V, 3] unit-norm components
    texture_std: torch.Tensor  # [K_t] σ of each component, RGB units
    triangles: torch.Tensor  # [T, 3] int64, counter-clockwise seen from outside (normals point out)
    name: str

    @property
    def n_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    def to(self, device: torch.device | str) -> FaceModel:
        """A copy with every tensor on `device`."""
        tensors = ("mean_shape", "shape_basis", "shape_std", "mean_texture", "texture_basis", "texture_std",
                   "triangles")
        return replace(self, **{f: getattr(self, f).to(device) for f in tensors})


def cache_dir() -> Path:
    """Where generated artefacts live: `$LABELFORGE_CACHE_DIR` or `~/.cache/labelforge`."""
    return Path(os.environ.get("LABELFORGE_CACHE_DIR") or Path.home() / ".cache" / "labelforge")


def load_face_model(path: str | Path | None = None) -> FaceModel:
    """None → the built-in procedural model; `.mat` → BFM2009; `.h5` → BFM2017."""
    if path is None:
        return builtin_face_model()
    from models.bfm import load_bfm2009, load_bfm2017

    path = Path(path)
    if path.suffix.lower() == ".mat":
        return load_bfm2009(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return load_bfm2017(path)
    raise ValueError(f"face model: unsupported file '{path}' (expected a BFM2009 .mat or a BFM2017 .h5)")


@functools.lru_cache(maxsize=1)
def builtin_face_model() -> FaceModel:
    """The procedural Basel-layout model; built once (≈1 s), then read from the on-disk cache."""
    file = cache_dir() / f"builtin_face_model_v{BUILTIN_VERSION}.npz"
    if not file.exists():
        arrays = _build_procedural()
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=file.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **cast(dict[str, Any], arrays))  # numpy's stub types **kwds like allow_pickle
        os.replace(tmp.name, file)  # atomic: concurrent first uses never read a half-written file
    with np.load(file, allow_pickle=False) as data:
        t = {k: torch.from_numpy(data[k]) for k in data.files}
    return FaceModel(
        mean_shape=t["mean_shape"], shape_basis=t["shape_basis"], shape_std=t["shape_std"],
        mean_texture=t["mean_texture"], texture_basis=t["texture_basis"], texture_std=t["texture_std"],
        triangles=t["triangles"], name=f"builtin-procedural-v{BUILTIN_VERSION}",
    )


# ----------------------------------------------------------------------------------------------------
# Procedural model. Everything below is numpy float64, deterministic (fixed seed), then cast.


def _gauss(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """exp(−(a² + b²)/2): the smooth bump every feature is made of (a, b already divided by radii)."""
    return np.exp(-0.5 * (a * a + b * b))


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _spline(knots: dict[float, float]) -> CubicSpline:
    xs = np.array(sorted(knots))
    return CubicSpline(xs, [knots[x] for x in xs], bc_type="natural")


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mesh parameters (θ longitude, φ latitude per vertex) and triangles, denser over the face.

    Columns are symmetric about θ = 0 (one column on the nose line), so the mesh is its own mirror image.
    Rows are densest over the eyes and brows, where the texture has the finest detail.
    """
    t = -1 + 2 * np.arange(N_LON) / N_LON  # includes 0 (front) and −1 (back)
    a = 0.45
    theta = np.pi * (a * t + (1 - a) * t**3)  # [N_LON], dense near the front
    u = (np.arange(N_LAT) + 1) / (N_LAT + 1)
    phi = np.deg2rad(np.interp(u, [0, 0.1, 0.45, 0.78, 0.88, 1], [-90, -62, -5, 25, 45, 90]))  # [N_LAT]
    th, ph = np.meshgrid(theta, phi)  # [N_LAT, N_LON]
    theta_v = np.concatenate([th.ravel(), [0.0, 0.0]])
    phi_v = np.concatenate([ph.ravel(), [-np.pi / 2, np.pi / 2]])
    idx = np.arange(N_LAT * N_LON).reshape(N_LAT, N_LON)
    nxt = np.roll(idx, -1, axis=1)
    a0, a1, b0, b1 = idx[:-1], nxt[:-1], idx[1:], nxt[1:]  # row i (lower φ) and row i+1
    quads = np.concatenate([np.stack([a0, a1, b1], -1).reshape(-1, 3), np.stack([a0, b1, b0], -1).reshape(-1, 3)])
    bottom, top = N_LAT * N_LON, N_LAT * N_LON + 1
    fan_b = np.stack([np.full(N_LON, bottom), idx[0, 1:].tolist() + [idx[0, 0]], idx[0]], -1)
    fan_t = np.stack([np.full(N_LON, top), idx[-1], idx[-1, 1:].tolist() + [idx[-1, 0]]], -1)
    return theta_v, phi_v, np.concatenate([quads, fan_b, fan_t]).astype(np.int64)


def _base_head(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """[V, 3] a lofted head + neck: per-latitude half-width, front depth and back depth profiles."""
    deg = np.rad2deg(phi)
    height = _spline({90: 1.0, 60: 0.87, 30: 0.5, 0: 0.0, -30: -0.5, -50: -0.78, -58: -0.92, -66: -1.02,
                      -75: -1.25, -90: -1.7})(deg)
    width = _spline({90: 0.0, 75: 0.33, 55: 0.56, 30: 0.69, 10: 0.72, -10: 0.7, -30: 0.63, -45: 0.53,
                     -55: 0.44, -62: 0.38, -70: 0.34, -80: 0.34, -90: 0.0})(deg)
    front = _spline({90: 0.0, 75: 0.32, 55: 0.62, 30: 0.8, 10: 0.84, -10: 0.84, -30: 0.8, -45: 0.72,
                     -54: 0.6, -60: 0.42, -66: 0.3, -75: 0.3, -82: 0.3, -90: 0.0})(deg)
    back = _spline({90: 0.0, 75: 0.42, 55: 0.72, 30: 0.9, 10: 0.9, -10: 0.82, -30: 0.66, -45: 0.5,
                    -60: 0.4, -75: 0.38, -82: 0.38, -90: 0.0})(deg)
    w_front = 0.5 + 0.5 * np.tanh(np.cos(theta) / 0.35)
    depth = w_front * front + (1 - w_front) * back
    return np.stack([width * np.sin(theta), height, depth * np.cos(theta)], -1)


class _Features:
    """Named displacement / colour fields over the mesh, in face-plane coordinates (X, Y)."""

    def __init__(self, theta: np.ndarray, phi: np.ndarray, base: np.ndarray):
        self.theta, self.phi = theta, phi
        self.X, self.Y = base[:, 0], base[:, 1]
        self.AX = np.abs(self.X)
        self.front = _smoothstep(0.25, 0.65, np.cos(theta))  # 1 on the face, 0 on sides/back
        self.base = base

    def g(self, x0: float, y0: float, rx: float, ry: float, mirrored: bool = True) -> np.ndarray:
        """Gaussian bump on the face (a mirrored pair at ±x0 when `mirrored`), zero on the back."""
        x = self.AX if mirrored else self.X
        return self.front * _gauss((x - x0) / rx, (self.Y - y0) / ry)

    def nose(self) -> np.ndarray:
        """Nose height above the face: a ridge growing from the bridge to the tip, plus tip and alae."""
        Y = self.Y
        along = _smoothstep(0.2, -0.2, Y) * (1 - _smoothstep(-0.21, -0.29, Y))
        width = 0.045 + 0.035 * _smoothstep(0.15, -0.22, Y)
        ridge = (0.03 + 0.19 * along) * np.exp(-0.5 * (self.X / width) ** 2) * _smoothstep(0.3, 0.15, Y)
        ridge *= 1 - _smoothstep(-0.25, -0.31, Y)
        return self.front * ridge + 0.04 * self.g(0, -0.2, 0.06, 0.05) + 0.05 * self.g(0.08, -0.24, 0.04, 0.035)

    def ears(self) -> np.ndarray:
        side = np.abs(np.abs(self.theta) - np.deg2rad(88))
        return _gauss(side / 0.13, (self.Y - 0.02) / 0.17)

    def hair(self) -> np.ndarray:
        """1 where hair grows: above a hairline that drops from the forehead to the nape."""
        line = _spline({0: 0.62, 30: 0.6, 60: 0.46, 80: 0.3, 95: 0.24, 115: -0.05, 140: -0.4, 180: -0.55})(
            np.rad2deg(np.abs(self.theta)))
        return _smoothstep(line - 0.03, line + 0.05, self.Y) * (1 - 0.9 * self.ears())

    def normals(self, triangles: np.ndarray) -> np.ndarray:
        return _vertex_normals(self.base, triangles)


def _vertex_normals(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    v0, v1, v2 = (verts[triangles[:, k]] for k in range(3))
    fn = np.cross(v1 - v0, v2 - v0)
    n = np.zeros_like(verts)
    for k in range(3):
        np.add.at(n, triangles[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _mean_geometry(f: _Features) -> np.ndarray:
    """Offsets (mostly along z, the face's outward direction) that carve the features into the head."""
    z = (
        f.nose()
        - 0.075 * f.g(0.27, 0.12, 0.12, 0.085)  # eye sockets
        + 0.04 * f.g(0.27, 0.115, 0.075, 0.045)  # eyeballs / lids
        + 0.05 * f.front * _gauss(f.X / 0.42, (f.Y - 0.28) / 0.06)  # brow ridge
        + 0.045 * f.g(0, -0.42, 0.14, 0.035)  # upper lip
        + 0.05 * f.g(0, -0.52, 0.12, 0.04)  # lower lip
        - 0.02 * f.g(0.18, -0.47, 0.04, 0.05)  # mouth corners
        - 0.03 * f.g(0, -0.62, 0.12, 0.035)  # groove under the lower lip
        + 0.07 * f.g(0, -0.74, 0.15, 0.09)  # chin
        + 0.04 * f.g(0.36, -0.08, 0.15, 0.14)  # cheeks
    )
    offset = np.zeros_like(f.base)
    offset[:, 2] = z
    ears = f.ears()
    offset[:, 0] += np.sign(f.X) * 0.13 * ears  # ears stand out sideways
    offset[:, 2] -= 0.04 * ears
    radial = f.base / np.maximum(np.linalg.norm(f.base, axis=1, keepdims=True), 1e-9)
    offset += 0.04 * f.hair()[:, None] * radial  # hair volume
    return offset


def _shape_fields(f: _Features, triangles: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """1σ displacement fields [V, 3]: semantic ones first (largest), then small smooth symmetric bumps."""
    X, Y = f.X, f.Y
    lower = _smoothstep(-0.1, -0.85, Y) * (Y > -1.1)
    zero = np.zeros_like(f.base)

    def field(dx: np.ndarray | float = 0.0, dy: np.ndarray | float = 0.0, dz: np.ndarray | float = 0.0) -> np.ndarray:
        out = zero.copy()
        out[:, 0] += dx
        out[:, 1] += dy
        out[:, 2] += dz
        return out

    eye = f.g(0.27, 0.12, 0.13, 0.1)
    chin = f.g(0, -0.76, 0.2, 0.14)
    fields = [
        field(dx=0.075 * X),  # 0 face/head width
        field(dx=0.09 * X * lower),  # 1 jaw width
        field(dy=-0.08 * lower, dz=0.02 * lower * f.front),  # 2 lower-face length
        field(dz=0.45 * f.nose()),  # 3 nose size
        field(dy=0.035 * f.front * _gauss(X / 0.4, (Y - 0.28) / 0.08), dz=0.025 * f.g(0, 0.28, 0.45, 0.06)),  # brows
        field(dx=0.05 * np.sign(X) * f.g(0.38, -0.15, 0.15, 0.15), dz=0.04 * f.g(0.36, -0.15, 0.15, 0.15)),  # cheeks
        field(dx=0.03 * np.sign(X) * eye),  # 6 eye spacing
        field(dy=-0.04 * chin, dz=0.06 * chin),  # 7 chin
        field(dz=0.05 * f.front * _smoothstep(0.25, 0.6, Y)),  # 8 forehead slope
        field(dz=0.3 * (0.045 * f.g(0, -0.42, 0.14, 0.035) + 0.05 * f.g(0, -0.52, 0.12, 0.04))),  # 9 lips
        field(dx=0.04 * np.sign(X) * f.g(0.15, -0.47, 0.1, 0.07)),  # 10 mouth width
        field(dx=np.sign(X) * 0.06 * f.ears(), dy=0.02 * f.ears()),  # 11 ears
        field(dy=-0.03 * f.g(0, -0.22, 0.08, 0.07), dz=-0.02 * f.g(0, -0.25, 0.08, 0.05)),  # 12 nose tip
        field(dz=0.05 * f.base[:, 2] * f.front),  # 13 face depth
        field(dz=0.07 * f.base[:, 2] * (f.base[:, 2] < 0) * _smoothstep(-0.3, 0.3, Y)),  # 14 back of head
        field(dx=0.02 * np.sign(X) * f.g(0.06, -0.2, 0.06, 0.08)),  # 15 nose width
        field(dz=-0.035 * eye),  # 16 eye-socket depth
        field(dy=0.06 * _smoothstep(0.3, 1.0, Y)),  # 17 cranium height
        field(dy=0.025 * f.g(0.4, -0.05, 0.12, 0.1), dz=0.02 * f.g(0.42, -0.05, 0.12, 0.1)),  # 18 cheekbones
        field(dx=0.04 * X * _gauss((Y + 0.6) / 0.15, 0) * (1 - f.front)),  # 19 jaw angle
    ]
    normals = f.normals(triangles)
    n_random = N_SHAPE - len(fields)
    for k in range(n_random):
        th0 = rng.uniform(0.0, np.deg2rad(110))
        y0 = rng.uniform(-0.85, 0.8)
        radius = rng.uniform(0.1, 0.3) * (1 - 0.5 * k / n_random)
        amp = 0.022 * 0.99**k * rng.choice([-1.0, 1.0])
        bump = _gauss((np.abs(f.theta) - th0) / (radius / 0.75), (Y - y0) / radius) * (Y > -1.1)
        fields.append(amp * bump[:, None] * normals)
    return fields


def _texture_fields(f: _Features, rng: np.random.Generator) -> list[np.ndarray]:
    """1σ colour fields [V, 3]: skin, hair, lips, brows, eyes, shading; then small symmetric blobs."""
    hair = f.hair()
    skin = (1 - hair) * (1 - f.g(0.27, 0.12, 0.09, 0.045))
    lips = f.g(0, -0.42, 0.12, 0.03) + f.g(0, -0.52, 0.1, 0.035)
    brows = _brows(f)
    iris = f.g(0.27, 0.115, 0.04, 0.04)
    ones = np.ones(3)
    fields = [
        -0.09 * skin[:, None] * np.array([1.0, 1.05, 1.1]),  # 0 skin lightness
        0.14 * hair[:, None] * np.array([1.0, 0.85, 0.6]),  # 1 hair lightness (dark ↔ blond)
        0.04 * skin[:, None] * np.array([1.0, -0.3, -0.5]),  # 2 skin redness
        0.05 * hair[:, None] * np.array([1.0, 0.2, -0.4]),  # 3 hair redness
        0.03 * skin[:, None] * np.array([0.5, 0.4, -0.8]),  # 4 skin yellowness
        0.1 * lips[:, None] * np.array([1.0, -0.4, -0.3]),  # 5 lip colour
        -0.12 * brows[:, None] * ones,  # 6 brow darkness
        0.12 * iris[:, None] * np.array([-0.2, 0.3, 0.9]),  # 7 iris colour (brown ↔ blue-grey)
        0.05 * f.g(0.33, -0.2, 0.12, 0.1)[:, None] * np.array([1.0, -0.5, -0.5]),  # 8 cheek blush
        0.035 * (skin * f.Y)[:, None] * ones,  # 9 top–bottom shading
        -0.09 * (skin * f.g(0, -0.68, 0.38, 0.2))[:, None] * ones,  # 10 beard shadow
        -0.05 * f.g(0.27, 0.17, 0.12, 0.06)[:, None] * np.array([1.0, 1.1, 0.9]),  # 11 eye shadow
        0.03 * f.g(0, 0.45, 0.35, 0.15)[:, None] * ones,  # 12 forehead shine
    ]
    n_random = N_TEXTURE - len(fields)
    for k in range(n_random):
        th0 = rng.uniform(0.0, np.deg2rad(120))
        y0 = rng.uniform(-0.9, 0.9)
        radius = rng.uniform(0.08, 0.3)
        colour = rng.normal(size=3)
        colour = 0.5 * colour / np.linalg.norm(colour) + 0.5 * rng.choice([-1.0, 1.0]) * ones / np.sqrt(3)
        blob = _gauss((np.abs(f.theta) - th0) / (radius / 0.75), (f.Y - y0) / radius)
        fields.append(0.025 * 0.99**k * blob[:, None] * colour)
    return fields


def _brows(f: _Features) -> np.ndarray:
    arch = 0.275 + 0.035 * (1 - ((f.AX - 0.27) / 0.17) ** 2)
    return f.front * _gauss((f.AX - 0.27) / 0.1, (f.Y - arch) / 0.022) * (f.AX > 0.08)


def _mean_texture(f: _Features) -> np.ndarray:
    skin = np.array([0.82, 0.63, 0.52])
    tex = np.tile(skin, (len(f.X), 1))

    def paint(weight: np.ndarray, colour: tuple[float, float, float]) -> None:
        w = np.clip(weight, 0, 1)[:, None]
        tex[:] = (1 - w) * tex + w * np.array(colour)

    paint(0.25 * f.g(0.27, 0.13, 0.13, 0.08), (0.6, 0.45, 0.4))  # shadowed eye sockets
    paint(0.35 * f.g(0.35, -0.2, 0.12, 0.1), (0.85, 0.5, 0.45))  # cheeks
    paint(0.4 * f.ears(), (0.78, 0.52, 0.45))
    paint(1.3 * f.g(0.27, 0.12, 0.085, 0.036), (0.93, 0.91, 0.88))  # sclera
    paint(1.6 * f.g(0.27, 0.115, 0.033, 0.033), (0.32, 0.22, 0.14))  # iris
    paint(1.2 * f.g(0.27, 0.115, 0.014, 0.014), (0.04, 0.03, 0.03))  # pupil
    paint(0.8 * f.g(0.27, 0.16, 0.09, 0.015), (0.3, 0.2, 0.17))  # upper lid line
    paint(1.1 * _brows(f), (0.22, 0.15, 0.1))
    paint(1.1 * (f.g(0, -0.42, 0.12, 0.028) + f.g(0, -0.52, 0.1, 0.032)), (0.72, 0.36, 0.36))  # lips
    paint(0.9 * f.g(0, -0.47, 0.13, 0.012), (0.35, 0.15, 0.15))  # mouth line
    paint(0.8 * f.g(0.045, -0.265, 0.02, 0.015), (0.25, 0.12, 0.1))  # nostrils
    paint(f.hair(), (0.2, 0.13, 0.08))
    return tex


def _orthonormal(fields: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Gram–Schmidt in the designed order → (basis [K, V, 3] unit norm, σ [K] = what survives).

    Orthogonalising in order keeps each semantic component's own direction intact; later (random)
    components lose whatever they shared with earlier ones, so they stay independent as in real PCA.
    """
    flat = np.stack([fl.ravel() for fl in fields]).astype(np.float64)  # [K, 3V]
    q, r = np.linalg.qr(flat.T)  # q [3V, K]
    sign = np.sign(np.diag(r))
    basis = (q * sign).T  # same orientation as the designed fields
    std = np.abs(np.diag(r))
    return basis.reshape(len(fields), -1, 3), std


def _build_procedural() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261123)
    theta, phi, triangles = _grid()
    base = _base_head(theta, phi)
    base = base + _mean_geometry(_Features(theta, phi, base))
    feats = _Features(theta, phi, base)
    triangles = orient_outward(base, triangles)
    shape_basis, shape_std = _orthonormal(_shape_fields(feats, triangles, rng))
    texture_basis, texture_std = _orthonormal(_texture_fields(feats, rng))
    # Decreasing σ is part of the PCA contract, so components are sorted by σ. The semantic ones are
    # designed larger, so they come first (shape: width, lower-face length, cranium, forehead, face depth,
    # back of head, jaw, cheeks, chin, nose, brows, ...; texture: skin and hair tone first).
    s_order, t_order = np.argsort(-shape_std, kind="stable"), np.argsort(-texture_std, kind="stable")
    return {
        "mean_shape": base.astype(np.float32),
        "shape_basis": shape_basis[s_order].astype(np.float32),
        "shape_std": shape_std[s_order].astype(np.float32),
        "mean_texture": np.clip(_mean_texture(feats), 0, 1).astype(np.float32),
        "texture_basis": texture_basis[t_order].astype(np.float32),
        "texture_std": texture_std[t_order].astype(np.float32),
        "triangles": triangles,
    }


def orient_outward(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Flip the winding if most face normals point toward the centroid (so normals point out)."""
    v0, v1, v2 = (verts[triangles[:, k]] for k in range(3))
    fn = np.cross(v1 - v0, v2 - v0)
    centre = (v0 + v1 + v2) / 3 - verts.mean(0)
    if np.sum(np.einsum("tc,tc->t", fn, centre)) < 0:
        triangles = triangles[:, [0, 2, 1]]
    return np.ascontiguousarray(triangles)
