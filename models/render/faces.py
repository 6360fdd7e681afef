"""Batched face renderer: FACES labels → image, mask and depth, in pure torch on CPU or CUDA.

Camera: orthographic, looking down −z at the head centre, framing y ∈ [−1.2, 1.1] (chin to crown with
a little neck), x likewise. The head turns by R = Rx(pitch) · Ry(yaw) about its centre:
- yaw_deg > 0 turns the face to its left, i.e. the nose moves toward the image's right (larger column),
  as `models.layouts.FACES` documents;
- pitch_deg > 0 tilts the face up: the nose and chin move up the image (smaller row).

Modes:
- "plain": Lambertian + ambient under one fixed light, grey (0.5) background. No randomness.
- "photo": the "real" side of `faces-m`: random light direction/colour, ambient, Blinn–Phong specular,
  photo backgrounds, a hair/cap occluder, colour jitter, blur, sensor noise and JPEG. Every random
  draw comes from the `generator` argument (a CPU generator is fine for CUDA rendering), so the same
  seed gives the same pixels.

Outputs: image [B, 3, S, S] in [0, 1]; mask [B, 1, S, S] in {0, 1}, the visible face (photo mode
excludes the occluder); depth [B, 1, S, S] = camera-space z + 2 (model units; larger = nearer; the head
centre is at 2) where mask is 1, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.face_model import FaceModel, builtin_face_model
from models.layouts import FACES, N_SHAPE, N_TEXTURE
from models.render import _photo
from models.render._raster import MeshNormals, SamplePattern, sample_pattern, zbuffer

CENTER_Y = -0.05  # model-space y at the image centre
HALF_EXTENT = 1.15  # model units from the image centre to its border
DEPTH_OFFSET = 2.0  # added to camera z so the visible head is positive and background 0 is farthest
PLAIN_LIGHT = (-0.35, 0.45, 1.0)  # fixed light direction (from the viewer's upper left), camera space
PLAIN_AMBIENT = 0.35
PLAIN_DIFFUSE = 0.75
BACKGROUND_GREY = 0.5
# Rasterise in chunks whose [points, 4, faces] float32 working set stays near this size: the pass is
# memory-bound, and cache-sized chunks render 64 faces at 32 px ~1.3x faster per face than 256 at once.
RASTER_CHUNK_BYTES = 8 << 20
MODES = ("plain", "photo")


@dataclass
class RenderOutput:
    image: torch.Tensor  # [B, 3, S, S] float in [0, 1]
    mask: torch.Tensor  # [B, 1, S, S] float in {0, 1}
    depth: torch.Tensor  # [B, 1, S, S] float, camera z + 2 (larger = nearer), 0 on background


@dataclass
class _Surface:
    """What the z-buffer found, one row per covered pixel (H of them across the batch)."""

    batch: torch.Tensor  # [H] int64 face index
    pixel: torch.Tensor  # [H] int64 flat pixel index (row · S + column)
    normal: torch.Tensor  # [H, 3] unit camera-space normal
    albedo: torch.Tensor  # [H, 3] RGB
    z: torch.Tensor  # [H] camera-space z (toward the viewer)


def rotation(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
    """[B] angles in degrees → [B, 3, 3] head-to-camera rotations Rx(pitch) · Ry(yaw)."""
    y, p = torch.deg2rad(yaw_deg), torch.deg2rad(pitch_deg)
    cy, sy, cp, sp = torch.cos(y), torch.sin(y), torch.cos(p), torch.sin(p)
    zero, one = torch.zeros_like(y), torch.ones_like(y)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, cp, sp, zero, -sp, cp], -1).view(-1, 3, 3)
    return rx @ ry


class FaceRenderer:
    """Renders FACES labels with a `FaceModel` (the built-in procedural one by default)."""

    def __init__(self, model: FaceModel | None = None, device: str | torch.device = "cpu"):
        model = model if model is not None else builtin_face_model()
        if model.shape_basis.shape[0] != N_SHAPE or model.texture_basis.shape[0] != N_TEXTURE:
            raise ValueError(
                f"face model '{model.name}' has {model.shape_basis.shape[0]} shape / "
                f"{model.texture_basis.shape[0]} texture components; the faces layout needs "
                f"{N_SHAPE}/{N_TEXTURE} (the BFM loaders pad or truncate)")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        v = model.n_vertices
        # σ-scaled bases stacked so one batched matmul morphs shape and colour, vertex-major rows
        # (row = 3·vertex + channel) so per-vertex gathers copy contiguous rows: [2, 3V, K]
        self._basis = torch.stack([
            (model.shape_basis * model.shape_std[:, None, None]).permute(1, 2, 0).reshape(3 * v, N_SHAPE),
            (model.texture_basis * model.texture_std[:, None, None]).permute(1, 2, 0).reshape(3 * v, N_TEXTURE),
        ]).to(self.device).contiguous()
        self._mean = torch.stack([model.mean_shape.reshape(3 * v, 1), model.mean_texture.reshape(3 * v, 1)]
                                 ).to(self.device)
        self._triangles = self.model.triangles
        self._normals = MeshNormals(self._triangles, v)
        self._patterns: dict[int, SamplePattern] = {}

    # -- geometry ------------------------------------------------------------------------------------

    def morph(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [B, 400] → (vertices [V, 3, B] in head space, albedo [V, 3, B] clamped to [0, 1])."""
        b, v = labels.shape[0], self.model.n_vertices
        coeffs = torch.stack([labels[:, FACES["shape"].slice].T, labels[:, FACES["texture"].slice].T])  # [2, K, B]
        out = torch.baddbmm(self._mean, self._basis, coeffs)  # [2, 3V, B]
        return out[0].view(v, 3, b), out[1].view(v, 3, b).clamp(0, 1)

    def camera_vertices(self, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [B, 400] → (vertex pixel coords [B, V, 2] as (column, row), camera z [B, V]).

        Pixel (c, r) covers [c, c+1) × [r, r+1). Useful for landmarks and for checking what went where.
        """
        labels = self._check(labels, size, "plain")
        pix = self._to_pixels(self._camera(self.morph(labels)[0], labels), size)  # [V, 3, B]
        return pix[:, :2].permute(2, 0, 1), pix[:, 2].T

    @staticmethod
    def _camera(verts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Head space [V, 3, B] → camera space [V, 3, B] (x right, y up, z toward the viewer)."""
        yaw = labels[:, FACES["yaw_deg"].start] * FACES["yaw_deg"].scale
        pitch = labels[:, FACES["pitch_deg"].start] * FACES["pitch_deg"].scale
        r = rotation(yaw, pitch).permute(1, 2, 0)  # [3, 3, B]
        x, y, z = verts.unbind(1)
        return torch.stack([r[c, 0] * x + r[c, 1] * y + r[c, 2] * z for c in range(3)], 1)

    @staticmethod
    def _to_pixels(cam: torch.Tensor, size: int) -> torch.Tensor:
        """Camera space [N, 3, B] → (column, row, z) [N, 3, B]."""
        f = size / (2 * HALF_EXTENT)
        col = cam[:, 0] * f + size / 2
        row = size / 2 - (cam[:, 1] - CENTER_Y) * f
        return torch.stack([col, row, cam[:, 2]], 1)

    def _pattern(self, size: int) -> SamplePattern:
        if size not in self._patterns:
            pat = sample_pattern(self.model.mean_shape.cpu(), self._triangles.cpu(), size / (2 * HALF_EXTENT))
            self._patterns[size] = pat.to(self.device)
        return self._patterns[size]

    def _rasterise(self, labels: torch.Tensor, size: int) -> _Surface:
        """Surfaces of the whole batch, rasterised chunk by chunk (see RASTER_CHUNK_BYTES)."""
        pat = self._pattern(size)
        chunk = max(1, RASTER_CHUNK_BYTES // ((pat.n_vertices + len(pat.vertex_ids)) * 16))
        if labels.shape[0] <= chunk:
            return self._rasterise_chunk(labels, size)
        pieces = labels.tensor_split(-(-labels.shape[0] // chunk))  # equal-sized chunks, no small tail
        parts = [self._rasterise_chunk(piece, size) for piece in pieces]
        offsets = [0, *torch.tensor([len(piece) for piece in pieces]).cumsum(0).tolist()]
        return _Surface(
            batch=torch.cat([p.batch + offsets[i] for i, p in enumerate(parts)]),
            pixel=torch.cat([p.pixel for p in parts]),
            normal=torch.cat([p.normal for p in parts]),
            albedo=torch.cat([p.albedo for p in parts]),
            z=torch.cat([p.z for p in parts]),
        )

    def _rasterise_chunk(self, labels: torch.Tensor, size: int) -> _Surface:
        verts, albedo = self.morph(labels)
        cam = self._camera(verts, labels)  # [V, 3, B]
        vn = self._normals(cam)  # [V, 3, B], unnormalized
        pat = self._pattern(size)
        v, _, b = cam.shape
        data = torch.cat([cam, vn[:, 2:]], 1).view(v, 4 * b)  # x, y, z, normal z per vertex
        extra = pat.interpolate @ data  # [E, 4B] barycentric fill points
        points = torch.cat([data, extra]).view(-1, 4, b)  # [P, 4, B]
        winner = zbuffer(self._to_pixels(points[:, :3], size), points[:, 3] > 0, size)  # [B, S·S]
        batch, pixel = torch.nonzero(winner >= 0, as_tuple=True)
        vid, wt = pat.point_vertices(winner[batch, pixel])  # [H, 3] each
        bidx, wt = batch[:, None], wt[..., None]
        return _Surface(
            batch=batch, pixel=pixel,
            normal=torch.nn.functional.normalize((wt * vn[vid, :, bidx]).sum(1), dim=-1, eps=1e-12),
            albedo=(wt * albedo[vid, :, bidx]).sum(1),
            z=(wt[..., 0] * cam[vid, 2, bidx]).sum(1),
        )

    # -- public entry point --------------------------------------------------------------------------

    def render(self, labels: torch.Tensor, size: int, mode: str = "plain",
               generator: torch.Generator | None = None) -> RenderOutput:
        """labels [B, 400] standardized FACES vectors → `RenderOutput` at size × size pixels."""
        labels = self._check(labels, size, mode)
        b = labels.shape[0]
        surf = self._rasterise(labels, size)
        flat = surf.batch * (size * size) + surf.pixel
        mask = torch.zeros(b * size * size, device=self.device)
        mask[flat] = 1.0
        depth = torch.zeros(b * size * size, device=self.device)
        depth[flat] = surf.z + DEPTH_OFFSET
        if mode == "plain":
            light = torch.nn.functional.normalize(torch.tensor(PLAIN_LIGHT, device=self.device), dim=0)
            lambert = (surf.normal @ light).clamp(min=0)[:, None]
            colour = surf.albedo * (PLAIN_AMBIENT + PLAIN_DIFFUSE * lambert)
            image = torch.full((b * size * size, 3), BACKGROUND_GREY, device=self.device)
            image[flat] = colour.clamp(0, 1)
            image = image.view(b, size, size, 3).permute(0, 3, 1, 2).contiguous()
            return RenderOutput(image, mask.view(b, 1, size, size), depth.view(b, 1, size, size))
        params = _photo.draw(b, size, generator if generator is not None else torch.Generator(), self.device)
        colour = _photo.shade(surf.normal, surf.albedo, surf.batch, params)
        face = torch.zeros(b * size * size, 3, device=self.device)
        face[flat] = colour
        face = face.view(b, size, size, 3).permute(0, 3, 1, 2)
        mask = mask.view(b, 1, size, size)
        image, mask = _photo.compose(face, mask, params)
        return RenderOutput(image, mask, depth.view(b, 1, size, size) * mask)

    def _check(self, labels: torch.Tensor, size: int, mode: str) -> torch.Tensor:
        if labels.ndim != 2 or labels.shape[1] != FACES.dim:
            raise ValueError(f"labels: expected shape [B, {FACES.dim}] (faces layout), got {list(labels.shape)}")
        if not isinstance(size, int) or not 8 <= size <= 1024:
            raise ValueError(f"size: expected an integer image size in [8, 1024], got {size!r}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        return labels.to(self.device, torch.float32)
