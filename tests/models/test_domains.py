"""The three built-in domains: shapes, ranges, fixed splits, label hiding, and the faces-m pool cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from models.domains import faces_m as faces_m_module
from models.domains import get_domain, list_domains
from models.domains.digits import real_digits_split
from models.domains.faces import PhotoFolderError, load_photo_folder
from models.layouts import DIGITS, FACES

torch.set_num_threads(2)

def test_registry_lists_the_three_domains_and_refuses_unknown_names():
    assert {"digits", "faces", "faces-m"} <= set(list_domains())
    with pytest.raises(ValueError, match="unknown domain 'mnist'"):
        get_domain("mnist")


# --- digits -------------------------------------------------------------------------------------


def test_digits_split_is_fixed_disjoint_stratified_and_complete():
    train, test = real_digits_split()
    assert len(train) == 1297 and len(test) == 500
    assert not set(train) & set(test) and set(train) | set(test) == set(range(1797))
    # Pinned: the same 500 test digits on every machine and run (eval figures stay comparable).
    assert hashlib.sha256(np.sort(test).astype(np.int64).tobytes()).hexdigest()[:16] == "5b47a434e152fa7d"
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target[test], minlength=10)
    assert per_class.min() >= 48 and per_class.max() <= 52


def test_digits_domain_sides_have_the_right_shapes_ranges_and_labels():
    dom = get_domain("digits", image_size=16, seed=3)
    assert dom.channels == 1 and dom.layout is DIGITS
    labels = dom.sample_labels(8, torch.Generator().manual_seed(0))
    images, masks = dom.simulate(labels)
    assert images.shape == masks.shape == (8, 1, 16, 16)
    assert 0 <= images.min() and images.max() <= 1 and images.amax(dim=(1, 2, 3)).min() > 0.9

    train = dom.real_train()
    assert train.labels is None
    assert train.images.shape == (1297, 1, 16, 16) and 0 <= train.images.min() and train.images.max() <= 1

    test = dom.real_test()
    assert test.images.shape == (500, 1, 16, 16)
    assert test.labels.shape == (500, DIGITS.dim)
    assert torch.equal(test.labels[:, :10].sum(1), torch.ones(500))  # one-hot class
    assert torch.count_nonzero(test.labels[:, 10:]) == 0  # continuous fields unknown → 0

    other_seed = get_domain("digits", image_size=16, seed=99).real_test()
    assert torch.equal(other_seed.images, test.images) and torch.equal(other_seed.labels, test.labels)


def test_digits_class_means_average_the_real_train_split_only():
    """The one real-label read a trainer gets (LabelGAN's mean images): class k's mean over the TRAIN
    digits of class k, recomputed here from scikit-learn; the test digits never enter it."""
    from sklearn.datasets import load_digits

    dom = get_domain("digits", image_size=16, seed=0)
    means = dom.real_class_means()
    assert means.shape == (10, 1, 16, 16)
    train_idx, _ = real_digits_split()
    classes = torch.from_numpy(load_digits().target[train_idx])
    for k in range(10):
        torch.testing.assert_close(means[k], dom.real_train().images[classes == k].mean(dim=0))
    assert get_domain("faces-m", image_size=16).real_class_means() is None  # no classes on that side


def test_digits_pose_real_moves_a_scan_the_way_the_renderer_poses_a_glyph():
    """The evaluation's ceiling warps real test digits into requested poses; the warp must be the renderer's:
    posing an upright render reproduces the render of the posed label (rotation direction, slant sign,
    scale and shift), and a label at the prior's mean leaves a scan untouched."""
    dom = get_domain("digits", image_size=32, seed=0)
    labels = dom.sample_labels(200, torch.Generator().manual_seed(0))
    labels[:, DIGITS["thickness"].slice] = 0  # thickness is no pose: a warp does not change it
    upright = labels.clone()
    for name in ("rotation_deg", "slant", "scale", "dx", "dy"):
        upright[:, DIGITS[name].slice] = 0
    target = dom.simulate(labels)[0]
    posed = dom.pose_real(dom.simulate(upright)[0], labels)
    mirrored = labels.clone()
    for name in ("rotation_deg", "slant"):
        mirrored[:, DIGITS[name].slice] *= -1
    wrong_way = dom.pose_real(dom.simulate(upright)[0], mirrored)
    assert (posed - target).abs().mean() < 0.04
    assert (wrong_way - target).abs().mean() > 3 * (posed - target).abs().mean()
    scans = dom.real_test().images[:8]
    torch.testing.assert_close(dom.pose_real(scans, upright[:8]), scans)
    assert get_domain("faces-m", image_size=16).pose_real(torch.zeros(1, 3, 16, 16), torch.zeros(1, FACES.dim)) is None


def test_real_digits_are_white_ink_on_black_like_the_renders():
    dom = get_domain("digits", image_size=32)
    real = dom.real_test().images
    sim, _ = dom.simulate(dom.sample_labels(64, torch.Generator().manual_seed(1)))
    for images in (real, sim):
        corners = torch.stack([images[..., :6, :6], images[..., :6, -6:], images[..., -6:, :6], images[..., -6:, -6:]])
        assert images[..., 8:24, 8:24].mean() > 5 * corners.mean()  # ink in the middle, dark corners


# --- faces (user photos) ------------------------------------------------------------------------


def _write_photos(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.jpg")
    Image.fromarray(skdata.chelsea()[:, :200]).save(folder / "sub-cat.png")  # portrait, not square


def test_photo_folder_is_centre_cropped_resized_and_skips_unreadable_files(tmp_path: Path):
    _write_photos(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    photos = load_photo_folder(tmp_path, 24)
    assert photos.shape == (2, 3, 24, 24) and 0 <= photos.min() and photos.max() <= 1
    # Sorted by path: the astronaut first; its centre crop is unlike the cat's.
    assert (photos[0] - photos[1]).abs().mean() > 0.05


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable", "not-given"])
def test_faces_domain_refuses_a_bad_photo_dir_naming_it(tmp_path: Path, case: str):
    folder = tmp_path / "photos"
    if case in ("empty", "unreadable"):
        folder.mkdir()
    if case == "unreadable":
        (folder / "a.jpg").write_bytes(b"\x00" * 10)
    kwargs = {} if case == "not-given" else {"photo_dir": folder}
    with pytest.raises(PhotoFolderError, match="photo_dir"):
        get_domain("faces", image_size=16, **kwargs)


def test_faces_domain_has_unlabeled_photos_and_plain_renders(tmp_path: Path):
    _write_photos(tmp_path)
    dom = get_domain("faces", image_size=32, photo_dir=tmp_path)
    assert dom.channels == 3 and dom.layout is FACES and dom.real_test() is None
    assert dom.real_train().labels is None and dom.real_train().images.shape == (2, 3, 32, 32)
    images, masks = dom.simulate(dom.sample_labels(2, torch.Generator().manual_seed(0)))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 1, 32, 32)


# --- faces-m ------------------------------------------------------------------------------------


def test_faces_m_real_side_is_photometric_hidden_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path))
    dom = get_domain("faces-m", image_size=32, seed=1, real_train_count=6, real_test_count=4)
    assert dom.channels == 3 and dom.layout is FACES
    train, test = dom.real_train(), dom.real_test()
    assert train.labels is None
    assert train.images.shape == (6, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert test.labels.shape == (4, FACES.dim)
    for images in (train.images, test.images):
        assert 0 <= images.min() and images.max() <= 1

    # The real side is the same faces under other photometry: far from the plain render of its labels.
    plain, masks = dom.simulate(test.labels)
    assert plain.shape == (4, 3, 32, 32) and masks.shape == (4, 1, 32, 32)
    assert (plain - test.images).abs().mean() > 0.05
    # Train and test pools are drawn from different seeds: no shared face.
    assert not torch.equal(train.images[:4], test.images)

    cached = sorted(tmp_path.rglob("*.pt"))
    assert len(cached) == 2  # one entry per pool

    def must_not_render(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        raise AssertionError("a cached pool was rendered again")

    monkeypatch.setattr(faces_m_module, "render_photo_pool", must_not_render)
    again = get_domain("faces-m", image_size=32, seed=1, real_train_count=6, real_test_count=4)
    assert torch.equal(again.real_train().images, train.images)
    assert torch.equal(again.real_test().images, test.images)
    assert torch.equal(again.real_test().labels, test.labels)
