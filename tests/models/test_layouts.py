"""Label layouts: the contract between networks (standardized vectors) and people (human units)."""

import numpy as np
import pytest
import torch

from models.layouts import DIGITS, FACES, LayoutError, get_layout, sample_prior


def test_faces_layout_matches_basel_slots() -> None:
    assert FACES.dim == 400
    assert FACES["shape"].slice == slice(0, 199)
    assert FACES["texture"].slice == slice(199, 398)
    assert FACES["yaw_deg"].start == 398 and FACES["pitch_deg"].start == 399


@pytest.mark.parametrize("layout", [FACES, DIGITS], ids=lambda lay: lay.name)
def test_standardized_to_named_round_trip(layout) -> None:
    labels = sample_prior(layout, 16, torch.Generator().manual_seed(0))
    named = layout.to_named(labels)
    back = np.stack([layout.from_named(row) for row in named])
    np.testing.assert_allclose(back, labels.numpy(), atol=1e-5)


def test_human_units_use_the_layout_scale() -> None:
    vec = FACES.from_named({"shape": [0.0] * 199, "texture": [0.0] * 199, "yaw_deg": 45.0, "pitch_deg": -15.0})
    assert vec[398] == pytest.approx(1.5) and vec[399] == pytest.approx(-1.0)
    assert FACES.to_named(vec)[0]["yaw_deg"] == pytest.approx(45.0)


def test_digit_class_is_one_hot_and_named_as_an_integer() -> None:
    vec = DIGITS.from_named({"digit": 7}, fill_missing=True)
    assert vec[:10].tolist() == [0.0] * 7 + [1.0] + [0.0] * 2
    assert DIGITS.to_named(vec)[0]["digit"] == 7
    assert DIGITS.to_named(vec)[0]["scale"] == pytest.approx(DIGITS["scale"].offset)


@pytest.mark.parametrize(
    ("named", "field"),
    [
        ({"digit": 10}, "digit"),
        ({"digit": 2.5}, "digit"),
        ({"rotation_deg": float("nan")}, "rotation_deg"),
        ({"rotation_deg": [1.0, 2.0]}, "rotation_deg"),
        ({"colour": 1.0}, "colour"),
        ({"dx": "left"}, "dx"),
    ],
)
def test_bad_values_name_their_field(named, field) -> None:
    with pytest.raises(LayoutError) as err:
        DIGITS.from_named(named, fill_missing=True)
    assert err.value.field == field
    assert field in str(err.value)


def test_missing_field_is_refused_unless_filled() -> None:
    with pytest.raises(LayoutError, match="shape: missing"):
        FACES.from_named({"texture": [0.0] * 199, "yaw_deg": 0.0, "pitch_deg": 0.0})


def test_vector_field_length_is_checked() -> None:
    with pytest.raises(LayoutError, match="shape: must be a list of 199 numbers"):
        FACES.from_named({"shape": [0.0] * 3}, fill_missing=True)


def test_unknown_layout_lists_the_known_ones() -> None:
    with pytest.raises(LayoutError, match="known: faces, digits"):
        get_layout("cars")


def test_prior_is_seeded_and_standard_normal() -> None:
    a = sample_prior(FACES, 4096, torch.Generator().manual_seed(1))
    b = sample_prior(FACES, 4096, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert abs(a.mean().item()) < 0.01 and abs(a.std().item() - 1) < 0.01
    digits = sample_prior(DIGITS, 1000, torch.Generator().manual_seed(1))
    assert torch.all(digits[:, :10].sum(1) == 1)
    assert len(torch.unique(digits[:, :10].argmax(1))) == 10
