"""Bundles: export → load → both engines agree; tampered or mismatched bundles are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from models.runtime import Bundle, BundleError

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def engines(tiny_faces_bundle_dir: Path) -> tuple[Bundle, Bundle]:
    return (Bundle.load(tiny_faces_bundle_dir, engine="torchscript"),
            Bundle.load(tiny_faces_bundle_dir, engine="onnx"))


def test_manifest_describes_the_bundle(tiny_faces_bundle_dir: Path, engines) -> None:
    ts, _ = engines
    manifest = json.loads((tiny_faces_bundle_dir / "manifest.json").read_text())
    assert manifest["trained"] is False and manifest["domain"] == "faces-m"
    assert manifest["layout"]["dim"] == 400 and manifest["onnx_opset"] >= 17
    assert set(manifest["files"]) == {f"{n}.{e}" for n in ("generator", "simulator", "predictor") for e in ("ts", "onnx")}
    assert (ts.nz, ts.image_size, ts.channels, ts.layout.name) == (4, 16, 3, "faces")
    assert len(ts.sha) == 64


@pytest.mark.parametrize("batch", [1, 5])
def test_torchscript_and_onnx_agree_on_random_inputs(engines, batch: int) -> None:
    ts, ox = engines
    gen = torch.Generator().manual_seed(batch)
    z = torch.randn(batch, ts.nz, generator=gen)
    labels = torch.randn(batch, ts.layout.dim, generator=gen)
    images = torch.rand(batch, 3, 16, 16, generator=gen)
    a, b = ts.generate(z, labels), ox.generate(z, labels)
    assert a.shape == (batch, 3, 16, 16)
    assert (a - b).abs().max() <= 1e-4
    assert a.min() >= 0 and a.max() <= 1
    assert (ts.simulate(labels) - ox.simulate(labels)).abs().max() <= 1e-4
    for x, y in zip(ts.predict(images), ox.predict(images), strict=True):
        assert (x - y).abs().max() <= 1e-4
    zp, lp = ox.predict(images)
    assert zp.shape == (batch, 4) and lp.shape == (batch, 400)


def test_predict_named_gives_human_fields(engines) -> None:
    named = engines[1].predict_named(torch.rand(2, 3, 16, 16))
    assert len(named) == 2 and len(named[0]["shape"]) == 199 and isinstance(named[0]["yaw_deg"], float)
    with pytest.raises(ValueError, match="images"):
        engines[1].predict(torch.rand(2, 3, 32, 32))


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("victim", ["generator.onnx", "predictor.ts", "simulator.onnx"])
def test_a_tampered_file_is_refused(tiny_bundle_dir: Path, tmp_path: Path, victim: str) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path)
    data = bytearray((bundle / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / victim).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{victim}: sha256 does not match"):
        Bundle.load(bundle, engine="onnx")


def test_missing_file_and_layout_mismatch_are_refused(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path)
    (bundle / "simulator.ts").unlink()
    with pytest.raises(BundleError, match="simulator.ts: listed in the manifest but missing"):
        Bundle.load(bundle)
    shutil.rmtree(bundle)
    bundle = _copy(tiny_bundle_dir, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["layout"]["fields"][1]["scale"] = 99.0  # rotation_deg units changed behind the code's back
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="layout 'digits' differs"):
        Bundle.load(bundle)
    with pytest.raises(BundleError, match="manifest.json: missing"):
        Bundle.load(tmp_path / "nowhere")


def test_an_attached_evaluation_travels_with_the_bundle_and_renames_it(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    from models.export import attach_evaluation

    bundle = _copy(tiny_bundle_dir, tmp_path)
    before = Bundle.load(bundle, engine="onnx")
    attach_evaluation(bundle, {"mode": "full", "summary": {"gen_digit_acc": 0.5}})
    after = Bundle.load(bundle, engine="onnx")  # every network's sha256 still checks
    assert after.describe()["evaluation"]["summary"] == {"gen_digit_acc": 0.5}
    assert after.sha != before.sha  # new figures, new identity: shards record which one made them
    assert [p.name for p in bundle.iterdir() if p.name.startswith("manifest")] == ["manifest.json"]
