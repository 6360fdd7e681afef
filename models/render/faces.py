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

Small images are drawn from a coarser copy of the mesh (vertex clusters about a pixel across, built
once per size; see _decimate.py): the same picture, several times faster at 32 px.

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
from models.render._decimate import decimate
from models.render._raster import MeshNormals, SamplePattern, sample_pattern, zbuffer

CENTER_Y = -0.05  # model-space y at the image centre
HALF_EXTENT = 1.15  # model units from the image centre to its border
DEPTH_OFFSET = 2.0  # added to camera z so the visible head is positive and background 0 is farthest
PLAIN_LIGHT = (-0.35, 0.45, 1.0)  # fixed light direction (from the viewer's upper left), camera space
PLAIN_AMBIENT = 0.35
PLAIN_DIFFUSE = 0.75
BACKGROUND_GREY = 0.5
# Rasterise in chunks whose [points, 4, faces] float32 working set stays near this size: the pass is
# memory-bound, so cache-sized chunks are faster per face than the whole batch at once.
RASTER_CHUNK_BYTES = 8 << 20
# Below this many pixels per model unit a coarser mesh draws the same picture (see _decimate.py): the
# mesh is clustered on a grid of DECIMATE_CELL_PX pixels, unless that would drop few vertices.
DECIMATE_CELL_PX = 1.0
DECIMATE_MIN_SAVING = 0.15  # keep the full mesh when clustering removes less than this share of vertices
MODES = ("plain", "photo")


@dataclass
class RenderOutput:
    image: torch.Tensor  # [B, 3, S, S] float in [0, 1]
    mask: torch.Tensor  # [B, 1, S, S] float in {0, 1}
    depth: torch.Tensor  # [B, 1, S, S] float, camera z + 2 (larger = nearer), 0 on background


@dataclass
class _Surface:
    """What the z-buffer found in one chunk of faces, one row per covered pixel (H of them)."""

    hit: torch.Tensor  # [H] int64 flat index face · S² + row · S + column, faces counted within the chunk
    normal: torch.Tensor  # [H, 3] unit camera-space normal
    albedo: torch.Tensor  # [H, 3] RGB
    z: torch.Tensor  # [H] camera-space z (toward the viewer)


class _Mesh:
    """A triangle mesh with the model's σ-scaled bases, ready to morph a batch of labels at once."""

    def __init__(self, mean_shape: torch.Tensor, shape_basis: torch.Tensor, mean_texture: torch.Tensor,
                 texture_basis: torch.Tensor, triangles: torch.Tensor, device: torch.device):
        """mean_* [V, 3], *_basis [K, V, 3] already multiplied by σ, triangles [T, 3]."""
        v = mean_shape.shape[0]
        self.n_vertices = v
        self.triangles = triangles.to(device)
        # shape and colour stacked so one batched matmul morphs both, vertex-major rows (row = 3·vertex +
        # channel) so per-vertex gathers copy contiguous rows: [2, 3V, K]
        self.basis = torch.stack([shape_basis.permute(1, 2, 0).reshape(3 * v, -1),
                                  texture_basis.permute(1, 2, 0).reshape(3 * v, -1)]).to(device).contiguous()
        self.mean = torch.stack([mean_shape.reshape(3 * v, 1), mean_texture.reshape(3 * v, 1)]).to(device)
        self.normals = MeshNormals(self.triangles, v)

    def morph(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [B, 400] → (vertices [V, 3, B] in head space, albedo [V, 3, B] clamped to [0, 1])."""
        b, v = labels.shape[0], self.n_vertices
        coeffs = torch.stack([labels[:, FACES["shape"].slice].T, labels[:, FACES["texture"].slice].T])  # [2, K, B]
        out = torch.baddbmm(self.mean, self.basis, coeffs)  # [2, 3V, B]
        return out[0].view(v, 3, b), out[1].view(v, 3, b).clamp(0, 1)


@dataclass
class _Level:
    """What one image size renders with: a mesh (coarser for small sizes) and its sample pattern."""

    mesh: _Mesh
    pattern: SamplePattern


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

    def __init__(self, model: FaceModel | None = None, device: str | torch.device = "cpu", coarse: bool = True):
        """`coarse`: draw small images from a coarser copy of the mesh (see _decimate.py), several times
        faster at 32 px; False draws every size from the full mesh, the reference the tests compare with."""
        model = model if model is not None else builtin_face_model()
        if model.shape_basis.shape[0] != N_SHAPE or model.texture_basis.shape[0] != N_TEXTURE:
            raise ValueError(
                f"face model '{model.name}' has {model.shape_basis.shape[0]} shape / "
                f"{model.texture_basis.shape[0]} texture components; the faces layout needs "
                f"{N_SHAPE}/{N_TEXTURE} (the BFM loaders pad or truncate)")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self._cpu_model = cpu = model.to("cpu")  # coarse meshes are built on the CPU (see _level)
        self._shape_basis = cpu.shape_basis * cpu.shape_std[:, None, None]  # σ-scaled: [K, V, 3]
        self._texture_basis = cpu.texture_basis * cpu.texture_std[:, None, None]
        self._mesh = _Mesh(cpu.mean_shape, self._shape_basis, cpu.mean_texture, self._texture_basis,
                           cpu.triangles, self.device)
        self._coarse = coarse
        self._levels: dict[int, _Level] = {}

    # -- geometry ------------------------------------------------------------------------------------

    def morph(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [B, 400] → (vertices [V, 3, B] in head space, albedo [V, 3, B] clamped to [0, 1]), on the
        model's full mesh."""
        return self._mesh.morph(labels)

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

    def _level(self, size: int) -> _Level:
        """The mesh and sample pattern for `size`, built on first use and cached."""
        if size not in self._levels:
            f = size / (2 * HALF_EXTENT)
            m, mesh = self._cpu_model, self._mesh
            dec = decimate(m.mean_shape, m.triangles, DECIMATE_CELL_PX / f)
            if self._coarse and dec.n_vertices <= (1 - DECIMATE_MIN_SAVING) * m.n_vertices:
                shape, texture = (dec.average(basis.transpose(0, 1)).transpose(0, 1)  # [K, V', 3]
                                  for basis in (self._shape_basis, self._texture_basis))
                mesh = _Mesh(dec.average(m.mean_shape), shape, dec.average(m.mean_texture), texture,
                             dec.triangles, self.device)
            pattern = sample_pattern(mesh.mean[0].view(-1, 3).cpu(), mesh.triangles.cpu(), f)
            self._levels[size] = _Level(mesh, pattern.to(self.device))
        return self._levels[size]

    def _rasterise(self, level: _Level, labels: torch.Tensor, size: int) -> _Surface:
        """Rasterise one chunk of faces: morph, rotate, sample, z-buffer, interpolate at the winners."""
        verts, albedo = level.mesh.morph(labels)
        cam = self._camera(verts, labels)  # [V, 3, B]
        vn = level.mesh.normals(cam)  # [V, 3, B], unnormalized
        v, _, b = cam.shape
        data = torch.cat([self._to_pixels(cam, size), vn[:, 2:]], 1).view(v, 4 * b)  # column, row, z, normal z
        points = (level.pattern.interpolate @ data).view(-1, 4, b)  # [P, 4, B]
        winner, z = zbuffer(points, size)  # [B, S·S] each
        hit = torch.nonzero(winner.view(-1) >= 0).squeeze(1)  # [H]
        vid, wt = level.pattern.point_vertices(winner.view(-1)[hit])  # [3, H] each
        # normal and albedo of the three vertices: rows of a [V · B, 6] table, one gather for all
        table = torch.cat([vn, albedo], 1).permute(0, 2, 1).reshape(-1, 6)
        corner = table.index_select(0, (vid * b + hit // (size * size)).view(-1)).view(3, -1, 6)  # [3, H, 6]
        attr = corner[0] * wt[0, :, None]
        attr.addcmul_(corner[1], wt[1, :, None]).addcmul_(corner[2], wt[2, :, None])  # [H, 6]
        return _Surface(hit=hit, normal=torch.nn.functional.normalize(attr[:, :3], dim=-1, eps=1e-12),
                        albedo=attr[:, 3:], z=z.view(-1)[hit])

    # -- public entry point --------------------------------------------------------------------------

    def render(self, labels: torch.Tensor, size: int, mode: str = "plain",
               generator: torch.Generator | None = None) -> RenderOutput:
        """labels [B, 400] standardized FACES vectors → `RenderOutput` at size × size pixels.

        Faces are rasterised in chunks whose [points, 4, faces] working set stays near RASTER_CHUNK_BYTES,
        each chunk's pixels written straight into the outputs.
        """
        labels = self._check(labels, size, mode)
        b, pixels = labels.shape[0], size * size
        if b == 0:  # an empty request (e.g. the tail of a plan) gets empty outputs, not a crash
            empty = torch.zeros(0, 1, size, size, device=self.device)
            return RenderOutput(torch.zeros(0, 3, size, size, device=self.device), empty, empty.clone())
        level = self._level(size)
        params = None
        if mode == "photo":  # drawn up front for the whole batch: the photo does not depend on chunking
            params = _photo.draw(b, size, generator if generator is not None else torch.Generator(), self.device)
        mask = torch.zeros(b * pixels, device=self.device)
        depth = torch.zeros(b * pixels, device=self.device)
        colour = torch.full((b * pixels, 3), BACKGROUND_GREY if params is None else 0.0, device=self.device)
        light = torch.nn.functional.normalize(torch.tensor(PLAIN_LIGHT, device=self.device), dim=0)
        per_chunk = max(1, RASTER_CHUNK_BYTES // (level.pattern.n_points * 16))
        start = 0
        for piece in labels.tensor_split(-(-b // per_chunk)):  # equal-sized chunks, no small tail
            surf = self._rasterise(level, piece, size)
            flat = surf.hit + start * pixels
            mask[flat] = 1.0
            depth[flat] = surf.z + DEPTH_OFFSET
            if params is None:
                lambert = (surf.normal @ light).clamp_(min=0)[:, None]
                colour[flat] = (surf.albedo * (PLAIN_AMBIENT + PLAIN_DIFFUSE * lambert)).clamp_(0, 1)
            else:
                colour[flat] = _photo.shade(surf.normal, surf.albedo, flat // pixels, params)
            start += len(piece)
        image = colour.view(b, size, size, 3).permute(0, 3, 1, 2)
        mask, depth = mask.view(b, 1, size, size), depth.view(b, 1, size, size)
        if params is None:
            return RenderOutput(image.contiguous(), mask, depth)
        image, mask = _photo.compose(image, mask, params)
        return RenderOutput(image, mask, depth * mask)

    def _check(self, labels: torch.Tensor, size: int, mode: str) -> torch.Tensor:
        if labels.ndim != 2 or labels.shape[1] != FACES.dim:
            raise ValueError(f"labels: expected shape [B, {FACES.dim}] (faces layout), got {list(labels.shape)}")
        if not isinstance(size, int) or not 8 <= size <= 1024:
            raise ValueError(f"size: expected an integer image size in [8, 1024], got {size!r}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        return labels.to(self.device, torch.float32)
