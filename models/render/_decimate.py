"""Vertex-clustering decimation: a coarser copy of a mesh for small images, built once per size.

Why: at 32 px a 3.4k-vertex head puts several vertices in every pixel, and morphing, rotating and
taking normals of all of them is most of the cost of a small render. Clustering vertices on a 3D grid
whose cell is about a pixel, and averaging each cluster, gives a mesh with one vertex per pixel or so
that draws the same picture (tests/models/test_face_renderer.py compares it with a downsampled
high-resolution render).

Averaging is linear, so a coarse vertex of a *morphed* face is exactly the average of the fine vertices
it replaces: the renderer averages the model's mean and basis rows once, and every label then morphs
the coarse mesh directly. Colour is averaged over the cluster too, which is what a pixel that covers
the cluster should show.

The grid has a cell centred on x = 0, so a left–right symmetric mesh decimates to a symmetric one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Decimation:
    """How a fine mesh maps onto its coarse copy."""

    cluster: torch.Tensor  # [V] int64: the coarse vertex each fine vertex joins
    n_vertices: int  # V' coarse vertices
    triangles: torch.Tensor  # [T', 3] int64 coarse triangles, winding kept from the fine ones

    def average(self, x: torch.Tensor) -> torch.Tensor:
        """Fine per-vertex rows x [V, ...] → their cluster means [V', ...] (same dtype)."""
        flat = x.reshape(len(self.cluster), -1)
        total = torch.zeros(self.n_vertices, flat.shape[1], dtype=torch.float64, device=x.device)
        total.index_add_(0, self.cluster, flat.double())
        count = torch.bincount(self.cluster, minlength=self.n_vertices).to(total)
        return (total / count[:, None]).to(x.dtype).reshape(self.n_vertices, *x.shape[1:])


def decimate(verts: torch.Tensor, triangles: torch.Tensor, cell: float) -> Decimation:
    """Cluster verts [V, 3] on a grid of `cell` model units; keep the triangles that stay triangles.

    A triangle whose corners fall in fewer than three clusters disappears; of several fine triangles
    that land on the same three clusters only the first is kept (so the coarse mesh has no duplicate
    faces, whose samples would only tie in the z-buffer).
    """
    key = torch.floor(verts.double() / cell + 0.5).long()  # [V, 3]; cell 0 spans x ∈ [−cell/2, cell/2)
    _, cluster = torch.unique(key, dim=0, return_inverse=True)  # sorted keys: deterministic numbering
    n = int(cluster.max()) + 1
    coarse = cluster[triangles]  # [T, 3]
    a, b, c = coarse.unbind(1)
    coarse = coarse[(a != b) & (b != c) & (a != c)]
    _, inverse = torch.unique(coarse.sort(dim=1).values, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1 if len(inverse) else 0,), len(coarse), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(coarse)), reduce="amin")
    return Decimation(cluster, n, coarse[first.sort().values].contiguous())
