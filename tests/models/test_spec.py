"""DatasetSpec: invalid specs are refused with the field named; valid ones sample what they say."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from models.layouts import DIGITS, FACES
from models.sampling import SamplingPlan, philox4x32, uniforms
from models.spec import DatasetSpec, SpecError, parse_spec

BASE = {"name": "ds", "bundle": "tiny-digits", "count": 100, "shard_size": 10}


def spec(**over: object) -> DatasetSpec:
    return parse_spec({**BASE, **over})


@pytest.mark.parametrize(
    ("over", "field", "reason"),
    [
        ({"count": 0}, "count", "greater than or equal to 1"),
        ({"count": 10_000_001}, "count", "less than or equal"),
        ({"shard_size": 1000}, "shard_size", "larger than count"),
        ({"shard_size": 100_001, "count": 200_000}, "shard_size", "less than or equal"),
        ({"labels": {"yaw_deg": {"uniform": {"low": 5, "high": -5}}}}, "labels.yaw_deg", "low > high"),
        ({"labels": {"yaw_deg": {"fixed": math.nan}}}, "labels.yaw_deg.fixed", "finite"),
        ({"labels": {"yaw_deg": {"normal": {"mean": 0, "std": math.inf}}}}, "labels.yaw_deg.normal.std", "finite"),
        ({"labels": {"yaw_deg": {"gauss": {}}}}, "labels.yaw_deg", "exactly one of"),
        ({"labels": {"x": {"grid": {"low": 1, "high": 0, "steps": 3}}}}, "labels.x", "low > high"),
        ({"labels": {"a": {"choice": {"values": [1, 2], "weights": [1]}}}}, "labels.a", "weights has 1 entries"),
        ({"name": "Bad Name"}, "name", "pattern"),
        ({"image": {"format": "gif"}}, "image.format", "png"),
        ({"noise": {"mode": "variants"}}, "noise.k", "k ≥ 2"),
        ({"extras": ["sim", "sim"]}, "extras", "once"),
        ({"surprise": 1}, "surprise", "not permitted"),
    ],
)
def test_invalid_specs_name_the_field(over: dict, field: str, reason: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(**over)
    assert info.value.field == field
    assert reason in str(info.value)


def test_nan_in_json_text_is_refused() -> None:
    with pytest.raises(SpecError, match="labels.yaw_deg.fixed"):
        parse_spec(json.dumps({**BASE, "labels": {"yaw_deg": {"fixed": float("nan")}}}))


@pytest.mark.parametrize(
    ("layout", "labels", "field", "reason"),
    [
        (FACES, {"nose": {"fixed": 1}}, "labels.nose", "unknown field"),
        (FACES, {"shape[199]": {"fixed": 1}}, "labels.shape[199]", "out of range"),
        (FACES, {"yaw_deg[0]": {"fixed": 1}}, "labels.yaw_deg[0]", "not a vector field"),
        (FACES, {"shape": {"fixed": [1.0, 2.0]}}, "labels.shape", "199 slots"),
        (DIGITS, {"digit": {"uniform": {"low": 0, "high": 9}}}, "labels.digit", "categorical"),
        (DIGITS, {"digit": {"fixed": 10}}, "labels.digit", "integer in [0, 9]"),
    ],
)
def test_layout_checks_name_the_field(layout, labels: dict, field: str, reason: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(labels=labels).resolve(layout)
    assert info.value.field == field and reason in info.value.reason


def test_json_schema_is_published_with_examples() -> None:
    schema = DatasetSpec.model_json_schema()
    assert {"name", "bundle", "count"} <= set(schema["required"])
    for example in schema["examples"]:
        DatasetSpec.model_validate(example)  # the published examples are valid specs


def test_philox_matches_the_random123_known_answers() -> None:
    t = lambda v: torch.tensor([v], dtype=torch.int64)  # noqa: E731
    out = philox4x32((t(0x243F6A88), t(0x85A308D3), t(0x13198A2E), t(0x03707344)), 0x299F31D0A4093822)
    assert [int(w) for w in out] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_uniforms_depend_only_on_seed_and_index() -> None:
    a = uniforms(9, torch.arange(0, 1000), 3, 7)
    b = uniforms(9, torch.arange(500, 600), 3, 7)
    assert torch.equal(a[500:600], b)
    assert not torch.equal(uniforms(10, torch.arange(0, 1000), 3, 7), a)
    assert 0 < a.min() and a.max() < 1 and abs(a.mean().item() - 0.5) < 0.01


def test_labels_honour_the_spec() -> None:
    s = spec(count=20_000, shard_size=1000, labels={
        "yaw_deg": {"uniform": {"low": -20, "high": 10}},
        "pitch_deg": {"normal": {"mean": 5, "std": 3}},
        "shape": {"normal": {"mean": 0, "std": 0.5, "truncate": 2}},
        "shape[3]": {"fixed": 1.25},
        "texture[0]": {"choice": {"values": [-1, 1], "weights": [1, 3]}},
    })
    plan = SamplingPlan(s.resolve(FACES), s.seed, nz=8)
    labels = plan.labels(torch.arange(s.count)).numpy().astype(np.float64)
    yaw, pitch = 30 * labels[:, 398], 15 * labels[:, 399]
    assert yaw.min() >= -20 and yaw.max() <= 10 and yaw.max() - yaw.min() > 29.5
    n = s.count
    assert abs(pitch.mean() - 5) < 4 * 3 / math.sqrt(n)
    assert abs(pitch.std() - 3) < 4 * 3 / math.sqrt(2 * n)
    assert np.all(labels[:, 3] == np.float32(1.25))  # fixed: exact
    shape = np.delete(labels[:, :199], 3, axis=1)
    assert np.abs(shape).max() <= 1.0 + 1e-6  # truncated at 2 std of 0.5
    assert set(np.unique(labels[:, 199])) == {-1.0, 1.0}
    assert abs((labels[:, 199] > 0).mean() - 0.75) < 0.02
    assert abs(labels[:, 200].mean()) < 0.05 and abs(labels[:, 200].std() - 1) < 0.05  # prior for the rest


def test_grid_enumerates_the_product_cyclically_and_variants_share_labels() -> None:
    s = spec(count=60, shard_size=10, labels={
        "digit": {"grid": {"values": [0, 1, 2]}},
        "rotation_deg": {"grid": {"low": -10, "high": 10, "steps": 2}},
    }, noise={"mode": "variants", "k": 2})
    plan = SamplingPlan(s.resolve(DIGITS), s.seed, nz=4, noise_mode="variants", k=2)
    idx = torch.arange(14)
    labels = plan.labels(idx)
    digits = labels[:, :10].argmax(1).tolist()
    rot = (12 * labels[:, 10]).round().tolist()
    assert digits == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]
    assert rot == [-10, -10, 10, 10, -10, -10, 10, 10, -10, -10, 10, 10, -10, -10]
    z = plan.noise(idx)
    assert torch.equal(labels[0], labels[1]) and not torch.equal(z[0], z[1])
    fixed = SamplingPlan(s.resolve(DIGITS), 0, nz=4, noise_mode="fixed")
    assert torch.equal(fixed.noise(torch.tensor([3])), fixed.noise(torch.tensor([900])))


def test_numpy_and_torch_philox_paths_agree() -> None:
    """The CPU (numpy) path and the device (torch int64) path must give the same words."""
    from models.sampling import philox4x32_numpy

    counters = np.array([[0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [7, 0, 3, 1]], dtype=np.uint64)
    seed = 0x299F31D0A4093822
    words = philox4x32_numpy(counters, seed)
    assert [int(w) for w in words[0]] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]
    torch_words = philox4x32(tuple(torch.tensor(counters[:, j].astype(np.int64)) for j in range(4)), seed)
    assert np.array_equal(np.stack([w.numpy() for w in torch_words], 1).astype(np.uint64), words)
