"""Face renderer: deterministic, pose directions as documented, z-buffered, shape/texture effects."""

import pytest
import torch
import torch.nn.functional as F

from models.layouts import FACES, sample_prior
from models.render.faces import FaceRenderer

torch.set_num_threads(2)
S = 64


@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    return FaceRenderer()


def _labels(n: int = 1, **slots: float) -> torch.Tensor:
    lab = torch.zeros(n, 400)
    for name, value in slots.items():
        lab[:, {"yaw": 398, "pitch": 399, "shape0": 0, "tex0": 199}[name]] = value
    return lab


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / ((a + b) > 0).sum())


@pytest.mark.parametrize("size", [32, S])  # 32 px draws from the coarse mesh, 64 px from the full one
@pytest.mark.parametrize("mode", ["plain", "photo"])
def test_rendering_is_deterministic_for_a_seed(renderer, mode, size) -> None:
    labels = sample_prior(FACES, 4, torch.Generator().manual_seed(1))
    a = renderer.render(labels, size, mode, torch.Generator().manual_seed(7))
    b = renderer.render(labels, size, mode, torch.Generator().manual_seed(7))
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and torch.equal(a.depth, b.depth)
    assert a.image.shape == (4, 3, size, size) and 0 <= a.image.min() and a.image.max() <= 1
    if mode == "photo":
        c = renderer.render(labels, size, mode, torch.Generator().manual_seed(8))
        assert not torch.equal(a.image, c.image)


@pytest.mark.parametrize("size", [32, S])
def test_yaw_plus_is_the_mirror_of_yaw_minus_and_turns_the_nose_right(renderer, size) -> None:
    out = renderer.render(torch.cat([_labels(yaw=1.0), _labels(yaw=-1.0), _labels(yaw=2.0), _labels(yaw=-2.0)]), size)
    assert _iou(out.mask[0], out.mask[1].flip(-1)) >= 0.98
    assert _iou(out.mask[2], out.mask[3].flip(-1)) >= 0.98
    pix, z = renderer.camera_vertices(_labels(yaw=1.0), S)
    nose = renderer.model.mean_shape[:, 2].argmax()
    assert pix[0, nose, 0] > S / 2 + 5  # layout: positive yaw turns the face toward the image's right


def test_positive_pitch_moves_the_nose_up_the_image(renderer) -> None:
    nose = renderer.model.mean_shape[:, 2].argmax()
    rows = renderer.camera_vertices(torch.cat([_labels(pitch=1.0), _labels(pitch=-1.0)]), S)[0][:, nose, 1]
    assert rows[0] < rows[1] - 5


def test_near_surface_wins_the_depth_test(renderer) -> None:
    lab = _labels(yaw=2.0)  # 60°: nose, near cheek and far cheek overlap on screen
    out = renderer.render(lab, S)
    pix, z = renderer.camera_vertices(lab, S)
    col, row = pix[0].floor().long().clamp(0, S - 1).unbind(-1)
    drawn = out.depth[0, 0, row, col] - 2  # depth where each vertex lands
    on_face = out.mask[0, 0, row, col] > 0
    assert (z[0] - drawn)[on_face].max() < 0.08  # no vertex is nearer than what the pixel shows
    assert ((drawn - z[0])[on_face] > 0.3).sum() > 50  # and many farther ones were hidden


@pytest.mark.parametrize("size", [32, S])
def test_shape_component_changes_silhouette_texture_changes_only_colour(renderer, size) -> None:
    shape = renderer.render(torch.cat([_labels(shape0=3.0), _labels(shape0=-3.0)]), size)
    assert _iou(shape.mask[0], shape.mask[1]) < 0.95
    tex = renderer.render(torch.cat([_labels(tex0=3.0), _labels(tex0=-3.0)]), size)
    assert torch.equal(tex.mask[0], tex.mask[1])
    assert (tex.image[0] - tex.image[1]).abs()[:, tex.mask[0, 0] > 0].mean() > 0.05


def test_small_renders_from_the_coarse_mesh_show_the_same_faces(renderer) -> None:
    """At 32 px the renderer draws from a clustered copy of the mesh (models/render/_decimate.py). It must
    draw what the full mesh draws, and what a 128-px render shows once averaged down to 32 px."""
    labels = torch.cat([sample_prior(FACES, 12, torch.Generator().manual_seed(11)), _labels(yaw=2.0),
                        _labels(yaw=-2.0), _labels(pitch=1.5), _labels(pitch=-1.5)])
    fast = renderer.render(labels, 32)
    full = FaceRenderer(coarse=False).render(labels, 32)
    assert not torch.equal(fast.image, full.image)  # so the coarse path is what is being compared
    large = renderer.render(labels, 128)
    small_image, small_cover = F.avg_pool2d(large.image, 4), F.avg_pool2d(large.mask, 4)

    def agreement(out, mask, image):  # per face: mask IoU, mean |RGB difference| over the whole image
        iou = (out.mask * mask).sum((1, 2, 3)) / ((out.mask + mask) > 0).sum((1, 2, 3))
        return iou, (out.image - image).abs().mean((1, 2, 3))

    iou, diff = agreement(fast, full.mask, full.image)
    assert iou.min() >= 0.98 and diff.max() <= 0.03
    iou_fast, diff_fast = agreement(fast, (small_cover > 0.5).float(), small_image)
    iou_full, diff_full = agreement(full, (small_cover > 0.5).float(), small_image)
    assert iou_fast.min() >= 0.9 and diff_fast.max() <= 0.035
    assert iou_fast.mean() >= iou_full.mean() - 0.01 and diff_fast.mean() <= diff_full.mean() + 0.005


def test_bad_inputs_name_the_field(renderer) -> None:
    with pytest.raises(ValueError, match="labels"):
        renderer.render(torch.zeros(2, 16), S)
    with pytest.raises(ValueError, match="mode"):
        renderer.render(_labels(), S, "cartoon")


@pytest.mark.parametrize("mode", ["plain", "photo"])
def test_an_empty_batch_renders_to_empty_outputs(renderer, mode) -> None:
    out = renderer.render(torch.zeros(0, FACES.dim), 32, mode, torch.Generator().manual_seed(0))
    assert out.image.shape == (0, 3, 32, 32) and out.mask.shape == (0, 1, 32, 32)
