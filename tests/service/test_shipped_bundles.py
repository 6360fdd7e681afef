"""The bundles shipped in `bundles/` (what `make run` serves), end to end through the real service.

issue 6: "predict on a generated image returns the labels it was made from (yaw/pitch within a few
degrees with a trained bundle)"; for digits, the class. The shipped faces-m bundle is the trained source-only baseline (its
generator is the neural simulator S, its predictor a CNN trained on renders: models/trainers/source_only.py),
so images it generates must be read back close to the yaw and pitch they were asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from service_helpers import BIN, FAST, REPO, Proc, Server, free_port, wait_http

from service.client import Client


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("shipped")
    port = free_port()
    env = {**FAST, "LABELFORGE_DATA_DIR": str(tmp / "data"), "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp}/data/lf.db",
           "LABELFORGE_BROKER_URL": "filesystem://", "LABELFORGE_BUNDLES_DIR": str(REPO / "bundles")}
    proc = Proc([str(BIN / "labelforge"), "serve", "--port", str(port)], env, tmp / "serve.log", cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        yield Server(url, [(tmp / "data" / "api_key").read_text().strip()], env, tmp / "data", [proc])
    finally:
        proc.stop()


def test_shipped_faces_bundle_reads_back_the_pose_it_generated(shipped: Server, tmp_path: Path) -> None:
    manifest = json.loads((REPO / "bundles" / "faces-m" / "manifest.json").read_text())
    assert manifest["trained"] is True and manifest["evaluation"]["summary"]  # eval figures travel with it
    spec = {"name": "pose-check", "bundle": "faces-m", "count": 48, "seed": 3, "shard_size": 48,
            "image": {"format": "png", "size": 32},
            "labels": {"yaw_deg": {"uniform": {"low": -40, "high": 40}}, "pitch_deg": {"uniform": {"low": -20, "high": 20}}}}
    with Client(shipped.url, shipped.keys[0]) as lf:
        job = lf.create_dataset(spec)
        assert lf.wait(job["id"], timeout_s=120, progress=False)["status"] == "succeeded"
        paths = lf.download_shards(job["id"], tmp_path)
        samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False))
        assert len(samples) == 48
        predicted = lf.predict([s["png"] for s in samples], bundle="faces-m")["predictions"]
    asked = [json.loads(s["json"]) for s in samples]
    yaw_err = np.abs([p["yaw_deg"] - a["labels"]["yaw_deg"] for p, a in zip(predicted, asked, strict=True)])
    pitch_err = np.abs([p["pitch_deg"] - a["labels"]["pitch_deg"] for p, a in zip(predicted, asked, strict=True)])
    # measured 3.0° / 3.3° MAE on 256 generated images (labels spread 30° / 15°); "a few degrees":
    assert yaw_err.mean() <= 5.0 and pitch_err.mean() <= 5.0, (yaw_err.mean(), pitch_err.mean())


def test_shipped_digits_bundle_reads_back_the_class_it_generated(shipped: Server, tmp_path: Path) -> None:
    """The shipped digits bundle (a trained SYNTH-VAE-GAN, docs/results/digits/synthvaegan-cpu): its generated
    digits carry their class, so its own predictor reads them back as the class they were asked for."""
    manifest = json.loads((REPO / "bundles" / "digits" / "manifest.json").read_text())
    assert manifest["trained"] is True and manifest["evaluation"]["summary"]["gen_digit_acc"] > 0.5
    spec = {"name": "class-check", "bundle": "digits", "count": 48, "seed": 3, "shard_size": 48,
            "image": {"format": "png"}}
    with Client(shipped.url, shipped.keys[0]) as lf:
        job = lf.create_dataset(spec)
        assert lf.wait(job["id"], timeout_s=120, progress=False)["status"] == "succeeded"
        paths = lf.download_shards(job["id"], tmp_path)
        samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False))
        predicted = lf.predict([s["png"] for s in samples], bundle="digits")["predictions"]
    asked = [json.loads(s["json"])["labels"]["digit"] for s in samples]
    assert len(set(asked)) >= 5  # the prior's classes, not one
    read = [p["fields"]["digit"] for p in predicted]
    agree = np.mean([a == r for a, r in zip(asked, read, strict=True)])
    assert agree >= 0.9, (agree, list(zip(asked, read, strict=True)))  # eval's cycle_acc: 0.999 on 2,000
