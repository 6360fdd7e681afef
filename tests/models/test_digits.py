"""The stroke digit simulator: every class legible and distinct, pose fields act as documented."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision.transforms.functional as TF

from models.layouts import DIGITS, sample_prior
from models.render.digits import render_digits

torch.set_num_threads(2)
SIZE = 32


def labels_of(**named: float) -> torch.Tensor:
    """One standardized label from human-unit fields; unnamed continuous fields sit at the prior centre."""
    return torch.from_numpy(DIGITS.from_named(named, fill_missing=True))[None]  # [1, 16]


def render_one(**named: float) -> torch.Tensor:
    image, _ = render_digits(labels_of(**named), SIZE)
    return image[0, 0]  # [S, S]


def centroid(image: torch.Tensor) -> torch.Tensor:
    """Ink-weighted (x, y) centre in pixels."""
    ys, xs = torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)), indexing="ij")
    total = image.sum()
    return torch.stack([(image * xs).sum() / total, (image * ys).sum() / total])


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


def test_every_class_renders_inked_in_range_and_centred():
    labels = torch.cat([labels_of(digit=d) for d in range(10)])
    image, mask = render_digits(labels, SIZE)
    assert image.shape == (10, 1, SIZE, SIZE) and mask.shape == (10, 1, SIZE, SIZE)
    assert image.min() >= 0 and image.max() <= 1
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    ink = mask.mean(dim=(1, 2, 3))
    assert (ink > 0.05).all() and (ink < 0.5).all(), ink  # a stroke glyph, not empty, not a blob
    # White on black like scikit-learn: the border is background.
    assert image[:, :, 0, :].max() < 0.5 and image[:, :, :, 0].max() < 0.5
    for d in range(10):
        x, y = centroid(image[d, 0])
        assert abs(x - SIZE / 2) < SIZE * 0.15 and abs(y - SIZE / 2) < SIZE * 0.2, (d, x, y)


def test_all_ten_classes_are_pairwise_distinct():
    masks = [render_digits(labels_of(digit=d), SIZE)[1][0, 0] for d in range(10)]
    # A 3 is drawn inside an 8 by nature (IoU ≈ 0.7); every other pair overlaps far less.
    for a, b in itertools.combinations(range(10), 2):
        assert iou(masks[a], masks[b]) < (0.75 if {a, b} == {3, 8} else 0.55), (a, b, iou(masks[a], masks[b]))


@pytest.mark.parametrize("digit", [1, 4, 7])
def test_rotation_is_counter_clockwise_in_degrees(digit: int):
    upright = render_one(digit=digit)
    rotated = render_one(digit=digit, rotation_deg=30.0)
    # torchvision's rotate turns counter-clockwise for positive angles: the reference convention.
    ccw = TF.rotate(upright[None], 30.0, interpolation=TF.InterpolationMode.BILINEAR)[0]
    cw = TF.rotate(upright[None], -30.0, interpolation=TF.InterpolationMode.BILINEAR)[0]
    assert iou(rotated, ccw) > 0.6
    assert iou(rotated, ccw) > iou(rotated, cw) + 0.2


def test_shift_moves_right_and_down_by_the_fraction_of_the_image():
    base = centroid(render_one(digit=0))
    moved = centroid(render_one(digit=0, dx=0.15, dy=-0.1))
    delta = moved - base
    assert delta[0] == pytest.approx(0.15 * SIZE, abs=0.5)  # positive dx: right
    assert delta[1] == pytest.approx(-0.1 * SIZE, abs=0.5)  # negative dy: up


def test_scale_thickness_and_slant_act_as_documented():
    def height(image: torch.Tensor) -> int:
        rows = (image > 0.5).any(dim=1).nonzero()
        return int(rows.max() - rows.min() + 1)

    assert height(render_one(digit=1, scale=0.5)) < 0.62 * SIZE < height(render_one(digit=1, scale=0.95))
    assert render_one(digit=8, thickness=0.14).sum() > 1.5 * render_one(digit=8, thickness=0.06).sum()

    def lean(image: torch.Tensor) -> float:
        """x-centroid of the top half minus that of the bottom half (positive: leans right)."""
        return float(centroid(image * (torch.arange(SIZE) < SIZE // 2)[:, None])[0]
                     - centroid(image * (torch.arange(SIZE) >= SIZE // 2)[:, None])[0])

    assert lean(render_one(digit=1, slant=0.3)) > lean(render_one(digit=1)) + 2
    assert lean(render_one(digit=1, slant=-0.3)) < lean(render_one(digit=1)) - 2


def test_batched_render_is_deterministic_and_matches_single_renders():
    labels = sample_prior(DIGITS, 6, generator=torch.Generator().manual_seed(3))
    batch, _ = render_digits(labels, 24)
    again, _ = render_digits(labels, 24)
    assert torch.equal(batch, again)
    singles = torch.cat([render_digits(labels[i : i + 1], 24)[0] for i in range(6)])
    torch.testing.assert_close(batch, singles)


def test_wrong_label_width_is_refused():
    with pytest.raises(ValueError, match="16"):
        render_digits(torch.zeros(2, 400), SIZE)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    labels = sample_prior(DIGITS, 64, generator=torch.Generator().manual_seed(0))
    cpu, _ = render_digits(labels, 64)
    gpu, _ = render_digits(labels.cuda(), 64)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
