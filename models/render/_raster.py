"""Pure-torch z-buffered point rasteriser for triangle meshes (no compiled extension, CPU and CUDA).

Why points: every triangle is covered by a fixed pattern of barycentric sample points, dense enough
for the image size that neighbouring samples land less than a pixel apart, so the splatted surface has
no holes. A per-pixel `scatter_reduce(amin)` over packed int64 keys (quantized depth << 32 | sample id)
is a z-buffer: the nearest sample wins, ties broken by id, so results are deterministic on any device.
Only the winners are then shaded, so the cost of dense sampling is one gather of positions.

The per-point gathers (edge vectors, normal accumulation, barycentric fill points) are fixed linear
maps of the vertex array, so they are precomputed as sparse CSR matrices: one sparse × dense product
streams the [V, 3·B] array once instead of three gathers, products and sums with their temporaries
(about 6× faster on a 2-core CPU at 256 faces × 3.4k vertices).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

DEPTH_RANGE = 8.0  # camera-space z span covered by the depth quantizer, model units (±4)
DEPTH_BITS = 24
DEPTH_SCALE = (2**DEPTH_BITS - 1) / DEPTH_RANGE  # depth key units per model unit
ID_BITS = 32
EMPTY = 2**62  # above every key (depth < 2^24 sits in bits 32…55); exact in float64, which pad needs


@dataclass
class SamplePattern:
    """Sample points of a mesh for one image size: the V vertices themselves, then extra points.

    Extra point e = Σ_k weights[e, k] · vertex[vertex_ids[e, k]] fills triangles whose legs are longer
    than the target spacing on screen; where the mesh is already dense enough, vertices alone suffice.
    """

    n_vertices: int
    vertex_ids: torch.Tensor  # [E, 3] int64
    weights: torch.Tensor  # [E, 3] float32 barycentric weights
    # [P, V] sparse CSR, P = V + E: identity rows (the vertices) then the extra points, so one product
    # turns per-vertex rows into per-point rows with no concatenation
    interpolate: torch.Tensor = field(init=False)
    point_ids: torch.Tensor = field(init=False)  # [3, P] int64: vertex_ids.T, with (v, v, v) for vertex v
    point_weights: torch.Tensor = field(init=False)  # [3, P] float32: weights.T, with (1, 0, 0) for a vertex

    def __post_init__(self) -> None:
        device = self.vertex_ids.device
        own = torch.arange(self.n_vertices, device=device)
        ids = torch.cat([own[:, None].expand(-1, 3), self.vertex_ids])  # [P, 3]
        one_hot = torch.tensor([1.0, 0.0, 0.0], device=device).expand(self.n_vertices, 3)
        weights = torch.cat([one_hot, self.weights])
        rows = torch.arange(self.n_points, device=device).repeat_interleave(3)
        self.interpolate = _csr(rows, ids.reshape(-1), weights.reshape(-1), (self.n_points, self.n_vertices))
        self.point_ids, self.point_weights = ids.T.contiguous(), weights.T.contiguous()

    @property
    def n_points(self) -> int:
        return self.n_vertices + len(self.vertex_ids)

    def to(self, device: torch.device) -> SamplePattern:
        return SamplePattern(self.n_vertices, self.vertex_ids.to(device), self.weights.to(device))

    def point_vertices(self, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """point ids [H] → (vertex ids [3, H], weights [3, H]) for interpolating per-vertex data."""
        return self.point_ids.index_select(1, point), self.point_weights.index_select(1, point)


def _corner_lattice(n1: int, n2: int) -> torch.Tensor:
    """[P, 3] barycentric points of the n1 × n2 cell-centre lattice spanned by a triangle's two legs.

    With weights (1 − a − b, a, b) on (corner, leg-1 end, leg-2 end), keep a + b ≤ 1: the other half of
    the parallelogram is the neighbouring triangle of a quad, whose own lattice is the same one mirrored,
    so the two halves tile the quad with no seam (points on the diagonal are drawn by both).
    """
    a = (torch.arange(n1, dtype=torch.float64) + 0.5) / n1
    b = (torch.arange(n2, dtype=torch.float64) + 0.5) / n2
    aa, bb = torch.meshgrid(a, b, indexing="ij")
    keep = (aa + bb) <= 1 + 1e-9
    aa, bb = aa[keep], bb[keep]
    return torch.stack([1 - aa - bb, aa, bb], -1).float()


def sample_pattern(verts: torch.Tensor, triangles: torch.Tensor, pixels_per_unit: float,
                   spacing_px: float = 1.0) -> SamplePattern:
    """Vertices plus a lattice on every triangle with a leg longer than `spacing_px` on screen.

    One pixel spacing leaves at most isolated one-pixel holes where the lattice and the pixel grid beat;
    `zbuffer` fills those from their neighbours, which is far cheaper than sampling twice as densely.

    Each triangle's corner is the vertex opposite its longest edge; its two legs get their own counts,
    so long thin triangles (near the poles, on the back of the head) are not oversampled. An orthographic
    camera never makes an edge longer than pixels_per_unit × its 3D length, so the spacing holds at every
    pose; shapes far from the mean (±3σ) grow a few percent, well inside the margin below one pixel.
    """
    tri_v = verts.double()[triangles]  # [T, 3, 3]
    opposite = (tri_v.roll(-1, dims=1) - tri_v.roll(-2, dims=1)).norm(dim=-1)  # [T, 3]: edge facing vertex k
    corner = opposite.argmax(dim=1)  # [T]
    order = (corner[:, None] + torch.arange(3)) % 3  # corner first, then the two leg ends
    tris = torch.gather(triangles, 1, order)  # [T, 3]
    legs = opposite.gather(1, order[:, [2, 1]])  # leg to vertex 1 faces vertex 2 and vice versa
    counts = torch.clamp(torch.ceil(legs * pixels_per_unit / spacing_px), min=1).long()  # [T, 2]
    ids, weights = [torch.zeros(0, 3, dtype=torch.int64)], [torch.zeros(0, 3)]
    for n1, n2 in torch.unique(counts, dim=0).tolist():
        if n1 == 1 and n2 == 1:
            continue  # both legs short: the triangle's own vertices cover it
        t_idx = torch.nonzero((counts[:, 0] == n1) & (counts[:, 1] == n2)).squeeze(1)  # [T_n]
        bary = _corner_lattice(n1, n2)  # [Q, 3]
        ids.append(tris[t_idx].repeat_interleave(len(bary), dim=0))
        weights.append(bary.repeat(len(t_idx), 1))
    return SamplePattern(len(verts), torch.cat(ids), torch.cat(weights))


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix from COO triplets (duplicates summed)."""
    with warnings.catch_warnings():  # "sparse CSR is beta": the product we use is long stable
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False)
        return coo.coalesce().to_sparse_csr()


class MeshNormals:
    """Area-weighted vertex normals of one triangle list, as two precomputed sparse maps."""

    def __init__(self, triangles: torch.Tensor, n_vertices: int):
        t = len(triangles)
        rows = torch.arange(t, device=triangles.device).repeat(2)
        ones = torch.ones(t, device=triangles.device)
        # edge k = vertex[k] − vertex[0], for k = 1, 2: [T, V] each, stacked to [2T, V]
        self.edges = _csr(torch.cat([rows, rows + t]),
                          torch.cat([triangles[:, 1], triangles[:, 0], triangles[:, 2], triangles[:, 0]]),
                          torch.cat([ones, -ones, ones, -ones]), (2 * t, n_vertices))
        # each face normal added to its three corners: [V, T]
        self.accumulate = _csr(triangles.T.reshape(-1), torch.arange(t, device=triangles.device).repeat(3),
                               torch.ones(3 * t, device=triangles.device), (n_vertices, t))

    def __call__(self, verts: torch.Tensor) -> torch.Tensor:
        """verts [V, 3, B] → vertex normals [V, 3, B], not normalized (only its sign is used before
        interpolation)."""
        v, _, b = verts.shape
        e = (self.edges @ verts.reshape(v, 3 * b)).view(2, -1, 3, b)  # [2, T, 3, B]
        (ax, ay, az), (cx, cy, cz) = e[0].unbind(1), e[1].unbind(1)
        face_n = torch.stack([ay * cz - az * cy, az * cx - ax * cz, ax * cy - ay * cx], 1)  # [T, 3, B]
        return (self.accumulate @ face_n.view(-1, 3 * b)).view(v, 3, b)


def zbuffer(points: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest front-facing point per pixel.

    points [P, 4, B]: pixel column, pixel row (down), camera z (toward the viewer), normal z (> 0 faces
    the viewer). Returns (winners [B, S·S] int64: the winning point's index in [0, P), or -1 where
    nothing was drawn; z [B, S·S]: its camera z, quantized to the depth key, meaningless where -1).

    Every point goes through the scatter: points off the image, and back-facing ones, land on a
    one-pixel border of the buffer that is then cut away. That is cheaper than selecting the drawable
    points first (a nonzero and gathers cost more than the scatter they save) or testing bounds.
    """
    p, _, b = points.shape
    if b * p >= 2**ID_BITS:
        raise ValueError(f"render batch too large for the z-buffer: {b} faces × {p} points ≥ 2^{ID_BITS}")
    padded = size + 2
    col_row = points[:, :2].floor().clamp_(-1, size)  # [P, 2, B]: 0…S−1 on the image, −1 / S off it
    pixel = torch.add(col_row[:, 0], col_row[:, 1], alpha=padded)  # exact: |·| < 2^24 in float32
    pixel = torch.where(points[:, 3] > 0, pixel, -(padded + 1)).long()  # back-facing: the (cut) corner
    pixel += torch.arange(b, device=points.device) * (padded * padded) + (padded + 1)  # 1-pixel border
    far = ((DEPTH_RANGE / 2 - points[:, 2]) * DEPTH_SCALE).clamp_(0, 2**DEPTH_BITS - 1).long()
    key = torch.add(torch.arange(p * b, device=points.device).view(p, b), far, alpha=2**ID_BITS)
    buf = torch.full((b * padded * padded,), EMPTY, dtype=torch.int64, device=points.device)
    buf.scatter_reduce_(0, pixel.view(-1), key.view(-1), reduce="amin", include_self=True)
    buf = _fill_holes(buf.view(b, padded, padded)[:, 1:-1, 1:-1]).reshape(b, size * size)
    winner = (buf & (2**ID_BITS - 1)) // b  # point index (ids are p · B + b)
    z = DEPTH_RANGE / 2 - (buf >> ID_BITS).float() / DEPTH_SCALE
    return torch.where(buf == EMPTY, torch.full_like(winner, -1), winner), z


def _fill_holes(buf: torch.Tensor) -> torch.Tensor:
    """buf [B, S, S] keys → one-pixel holes (≥ 3 of 4 neighbours drawn) take their nearest neighbour.

    Requiring three neighbours fills gaps inside the surface but never grows a convex silhouette.
    """
    padded = torch.nn.functional.pad(buf, (1, 1, 1, 1), value=EMPTY)
    s = buf.shape[-1]
    left, right, up, down = padded[:, 1:-1, :s], padded[:, 1:-1, 2:], padded[:, :s, 1:-1], padded[:, 2:, 1:-1]
    drawn = (left != EMPTY).int() + (right != EMPTY).int() + (up != EMPTY).int() + (down != EMPTY).int()
    nearest = torch.minimum(torch.minimum(left, right), torch.minimum(up, down))  # pairwise: no [4, …] copy
    return torch.where((buf == EMPTY) & (drawn >= 3), nearest, buf)
