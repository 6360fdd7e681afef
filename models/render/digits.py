"""Stroke-rendered handwritten digits for the `digits` layout, batched in torch (CPU or CUDA).

Each class is a skeleton of line segments (polylines, elliptic arcs and Bézier curves sampled into
short segments) drawn in *glyph space*: x right, y down, the glyph 1 unit tall and centred on 0.
A label's pose (slant, scale, rotation, shift) is an affine map from glyph space to *image space*
(fractions of the image, centred on 0, y down). Mapping the segment end points forward is exact
(affine maps send segments to segments) and equivalent to mapping the pixel grid backwards, but it
keeps the stroke width in image units, which is what the layout's `thickness` field is measured in.
Pixel intensity is a soft step on the distance to the nearest segment, so strokes are anti-aliased
and the rendering is differentiable in the pose fields.

The output looks like scikit-learn's digits: white ink on a black background, values in [0, 1].
"""

from __future__ import annotations

import math

import torch

from models.layouts import DIGITS

Point = tuple[float, float]

_ARC_STEPS = 16  # segments per full ellipse turn (sagitta < 0.6 px at 128 px); arcs use a proportional share
_CURVE_STEPS = 10  # segments per quadratic Bézier curve
_EDGE_PX = 1.2  # width of the soft stroke edge, in pixels (anti-aliasing)
_MAX_CHUNK_ELEMENTS = 2**22  # cap on B·S²·segments floats evaluated at once (16 MiB per temporary)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> list[Point]:
    """Points on an ellipse from angle a0 to a1 (degrees, counter-clockwise on screen, 0 = right)."""
    steps = max(2, round(abs(a1 - a0) / 360 * _ARC_STEPS))
    out = []
    for i in range(steps + 1):
        a = math.radians(a0 + (a1 - a0) * i / steps)
        out.append((cx + rx * math.cos(a), cy - ry * math.sin(a)))  # minus: glyph y points down
    return out


def _curve(p0: Point, p1: Point, p2: Point) -> list[Point]:
    """Points on the quadratic Bézier curve p0 → p2 pulled towards the control point p1."""
    out = []
    for i in range(_CURVE_STEPS + 1):
        t = i / _CURVE_STEPS
        u = 1 - t
        out.append((u * u * p0[0] + 2 * u * t * p1[0] + t * t * p2[0], u * u * p0[1] + 2 * u * t * p1[1] + t * t * p2[1]))
    return out


# Skeletons: each class is a list of strokes, each stroke a polyline of glyph-space points.
# Shapes follow the handwriting in scikit-learn's digits (open 4, flagged 1, looped 6 and 9).
_STROKES: dict[int, list[list[Point]]] = {
    0: [_arc(0.0, 0.0, 0.27, 0.47, 95, 455)],
    1: [[(-0.16, -0.30), (0.05, -0.50), (0.02, 0.50)]],
    2: [_arc(0.0, -0.22, 0.25, 0.26, 165, -20) + [(-0.27, 0.48), (0.30, 0.46)]],
    3: [_arc(-0.01, -0.26, 0.23, 0.23, 150, -90), _arc(-0.01, 0.245, 0.27, 0.255, 90, -160)],
    4: [[(0.02, -0.50), (-0.30, 0.14), (0.32, 0.14)], [(0.17, -0.18), (0.16, 0.50)]],
    5: [[(0.28, -0.50), (-0.18, -0.50), (-0.22, -0.06)], _arc(0.0, 0.20, 0.27, 0.29, 130, -145)],
    6: [_curve((0.22, -0.50), (-0.34, -0.30), (-0.25, 0.22)), _arc(0.0, 0.22, 0.25, 0.27, 180, -180)],
    7: [[(-0.28, -0.49), (0.30, -0.49), (-0.06, 0.50)], [(-0.10, 0.02), (0.20, 0.02)]],
    8: [_arc(0.0, -0.26, 0.21, 0.23, 270, -90), _arc(0.0, 0.24, 0.26, 0.26, 90, -270)],
    9: [_arc(0.0, -0.22, 0.25, 0.27, 0, 360), _curve((0.25, -0.22), (0.26, 0.20), (0.08, 0.50))],
}


def _segment_table() -> tuple[torch.Tensor, torch.Tensor]:
    """([10, M, 2] segment starts, [10, M, 2] segment ends), padded per class with far-away dots."""
    per_class = []
    for digit in range(10):
        segs = [(a, b) for stroke in _STROKES[digit] for a, b in zip(stroke[:-1], stroke[1:], strict=True)]
        per_class.append(segs)
    m = max(len(s) for s in per_class)
    far = (1e3, 1e3)  # padding: a zero-length segment no pixel is near
    starts = torch.tensor([[a for a, _ in s] + [far] * (m - len(s)) for s in per_class], dtype=torch.float32)
    ends = torch.tensor([[b for _, b in s] + [far] * (m - len(s)) for s in per_class], dtype=torch.float32)
    return starts, ends


_SEG_START, _SEG_END = _segment_table()  # [10, M, 2] each


def glyph_to_image(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pose of each label as an affine map p_img = A @ p_glyph + t, plus the stroke width.

    Returns (A [B, 2, 2], t [B, 2], width [B]) in image fractions. Order of operations: slant
    (shear, positive leans right), scale (glyph height / image height), rotation (counter-clockwise
    on screen), shift (dx right, dy down).
    """
    def human(name: str) -> torch.Tensor:
        f = DIGITS[name]
        return f.offset + f.scale * labels[:, f.start]  # [B]

    theta = torch.deg2rad(human("rotation_deg"))
    c, s = torch.cos(theta), torch.sin(theta)
    scale = human("scale").clamp(min=0.2)
    slant = human("slant")
    # Rotation counter-clockwise on screen with y pointing down: [[c, s], [-s, c]].
    rot = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)  # [B, 2, 2]
    shear = torch.zeros_like(rot)
    shear[:, 0, 0] = 1.0
    shear[:, 0, 1] = -slant  # x' = x − slant·y: the top (y < 0) moves right for positive slant
    shear[:, 1, 1] = 1.0
    a = rot @ shear * scale[:, None, None]  # [B, 2, 2]
    t = torch.stack([human("dx"), human("dy")], -1)  # [B, 2]
    width = human("thickness").clamp(min=0.01)  # [B]
    return a, t, width


def render_digits(labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """labels [B, 16] standardized → (image [B, 1, S, S] in [0, 1], mask [B, 1, S, S] in {0, 1}).

    White strokes on black like scikit-learn's digits; the mask marks pixels whose centre lies
    inside the stroke. Runs on the labels' device; deterministic (no randomness at all).
    """
    if labels.ndim != 2 or labels.shape[1] != DIGITS.dim:
        raise ValueError(f"labels must be [B, {DIGITS.dim}] for the digits layout, got {tuple(labels.shape)}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    labels = labels.float()
    device = labels.device
    b = labels.shape[0]
    digit = labels[:, DIGITS["digit"].slice].argmax(-1)  # [B]
    a, t, width = glyph_to_image(labels)
    starts = torch.einsum("bij,bmj->bmi", a, _SEG_START.to(device)[digit]) + t[:, None]  # [B, M, 2]
    ends = torch.einsum("bij,bmj->bmi", a, _SEG_END.to(device)[digit]) + t[:, None]  # [B, M, 2]

    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size - 0.5  # pixel centres
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    px, py = xx.reshape(1, -1, 1), yy.reshape(1, -1, 1)  # [1, S², 1] each

    # x and y kept as separate tensors: reductions over a trailing dim of 2 are slow on CPU.
    ax, ay = starts[..., 0], starts[..., 1]  # [B, M]
    ex, ey = ends[..., 0] - ax, ends[..., 1] - ay  # segment vectors [B, M]
    inv_len2 = 1 / (ex * ex + ey * ey).clamp(min=1e-12)  # [B, M]
    n_seg = starts.shape[1]
    chunk = max(1, _MAX_CHUNK_ELEMENTS // (size * size * n_seg))
    dist2 = torch.empty(b, size * size, device=device)
    for lo in range(0, b, chunk):
        sl = slice(lo, lo + chunk)
        rx = px - ax[sl, None]  # [b, S², M]
        ry = py - ay[sl, None]  # [b, S², M]
        seg_x, seg_y = ex[sl, None], ey[sl, None]  # [b, 1, M]
        along = ((rx * seg_x + ry * seg_y) * inv_len2[sl, None]).clamp_(0, 1)  # [b, S², M]
        rx.sub_(along * seg_x)
        ry.sub_(along * seg_y)
        dist2[sl] = (rx * rx + ry * ry).amin(-1)  # [b, S²]
    dist = dist2.sqrt()

    dist = dist.reshape(b, 1, size, size)  # [B, 1, S, S]
    inside = width[:, None, None, None] / 2 - dist  # > 0 inside the stroke, image fractions
    image = (0.5 + inside * size / _EDGE_PX).clamp(0, 1)
    mask = (inside > 0).float()
    return image, mask
