"""Every trained-model method's bundle through the real service (issue 9: "`POST /datasets` with each
method's bundle works").

Each method trains a tiny run on the registered `digits` domain at 8×8 with `labelforge train METHOD`
and is exported with `labelforge export` into one bundles folder; the conftest's `embedded` fixture
then starts one real `labelforge serve` on that folder (this module overrides `bundles_dir`), and each
bundle orders a small dataset over HTTP, downloads its shards over HTTP and reads them with stock
`webdataset`.

Train and export go through typer's CliRunner on the same `service.cli.app` the `labelforge` script
runs, in this process: a `labelforge` subprocess spends ~5 s importing torch and the trainers before
doing ~0.5 s of tiny training, so twelve of them (~80 s) alone would blow this module's time budget.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds
import yaml
from PIL import Image
from service_helpers import Server
from typer.testing import CliRunner

from service.client import Client
from service.commands.train import SIBLING_METHODS

METHODS: tuple[str, ...] = (*SIBLING_METHODS, "renderbegan")
COUNT, SHARD_SIZE = 12, 8  # two shards, the second one partial
LOGGING = {"log_every": 2, "sample_every": 4, "checkpoint_every": 100}
# Tiny widths and few steps, mirroring the TINY configs in tests/models/test_<method>.py.
TINY: dict[str, dict[str, Any]] = {
    "dcgan": {"iterations": 6, "batch_size": 8, "nz": 4, "ngf": 4, "ndf": 4, "head_count": 64, "simulator_c": 4,
              "simulator_steps": 5, "simulator_batch": 8, **LOGGING},
    "infobegan": {"iterations": 6, "batch_size": 4, "nz": 4, "nh": 8, "width": 4, "hidden": 16, "sim_c": 4,
                  "simulator_steps": 10, "simulator_batch": 8, **LOGGING},
    "labelgan": {"iterations": 6, "batch_size": 4, "nz": 4, "refiner_width": 4, "refiner_blocks": 1,
                 "critic_width": 4, "predictor_width": 4, "simulator_c": 4, "simulator_steps": 10,
                 "simulator_batch": 8, **LOGGING},
    "source-only": {"iterations": 2, "source_count": 64, "width": 4, "net": {"c": 4}, "simulator_steps": 10,
                    "simulator_batch": 8},
    "synthvaegan": {"iterations": 6, "batch_size": 8, "width": 4, "hidden": 16, "net": {"c": 4, "nz": 4},
                    "synth_steps": 10, "synth_batch": 8, "simulator_steps": 10, "simulator_batch": 8, **LOGGING},
    "renderbegan": {"iterations": 6, "batch_size": 4, "net": {"c": 4, "nz": 4, "nh": 8, "hidden": 16},
                    "simulator_steps": 10, "simulator_batch": 8, "content_steps": 5, "content_batch": 8, **LOGGING},
}


@dataclass
class Trained:
    """The bundles folder, and each method whose train or export failed with that command's output."""

    root: Path
    failures: dict[str, str]


def _flat_sets(options: dict[str, Any], prefix: str = "") -> list[str]:
    """{"net": {"c": 4}, "width": 4} → ["--set", "net.c=4", "--set", "width=4"] (the `--set` syntax)."""
    args: list[str] = []
    for key, value in options.items():
        if isinstance(value, dict):
            args += _flat_sets(value, f"{prefix}{key}.")
        else:
            args += ["--set", f"{prefix}{key}={value}"]
    return args


def _train_args(method: str, run_dir: Path) -> list[str]:
    """`labelforge train METHOD` arguments; renderbegan has no `--set`, so its options go in `--config`."""
    options = dict(TINY[method])
    args = ["train", method, "--domain", "digits", "--image-size", "8", "--iterations", str(options.pop("iterations")),
            "--device", "cpu", "--out", str(run_dir)]
    if method == "renderbegan":
        config = run_dir.parent / f"{method}.yaml"
        config.write_text(yaml.safe_dump(options))
        return [*args, "--config", str(config)]
    return [*args, *_flat_sets(options)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Train and export every method once; a failure is recorded for that method's test to report."""
    from service.cli import app

    tmp = tmp_path_factory.mktemp("method-bundles")
    root, runner, failures = tmp / "bundles", CliRunner(), {}
    handlers, level = logging.root.handlers[:], logging.root.level  # `train` installs its own log handler
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABELFORGE_CACHE_DIR", str(tmp / "cache"))
        try:
            for method in METHODS:
                if method not in TINY:  # never train a default-size config here
                    failures[method] = f"no tiny config for '{method}': add one to TINY"
                    continue
                run_dir = tmp / "runs" / method
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                for args in (_train_args(method, run_dir),
                             ["export", "--run", str(run_dir), "--out", str(root / method)]):
                    result = runner.invoke(app, args)
                    if result.exit_code != 0:
                        failures[method] = f"labelforge {' '.join(args)} → {result.exit_code}\n{result.output}" + (
                            f"\n{result.exception!r}" if result.exception else "")
                        break
        finally:
            logging.root.handlers[:] = handlers
            logging.root.setLevel(level)
    return Trained(root, failures)


@pytest.fixture(scope="module")
def bundles_dir(trained: Trained) -> Path:
    """Overrides the conftest's folder, so `embedded` serves exactly the freshly exported method bundles."""
    return trained.root


def test_every_method_has_a_tiny_config() -> None:
    assert set(TINY) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_method_bundle_makes_a_dataset_through_the_service(method: str, trained: Trained, embedded: Server,
                                                          tmp_path: Path) -> None:
    assert method not in trained.failures, trained.failures[method]
    raw = (trained.root / method / "manifest.json").read_bytes()
    manifest, sha = json.loads(raw), hashlib.sha256(raw).hexdigest()  # a bundle's sha is its manifest's
    label_dim, size = manifest["label_dim"], manifest["image_size"]
    assert (manifest["trainer"], manifest["domain"], size, manifest["channels"]) == (method, "digits", 8, 1)
    spec = {"name": f"{method}-set", "bundle": method, "count": COUNT, "shard_size": SHARD_SIZE, "seed": 5,
            "image": {"format": "png"}}
    with Client(embedded.url, embedded.keys[0]) as lf:
        listed = {m["name"]: m for m in lf.models()}
        assert method in listed, sorted(listed)
        assert (listed[method]["trainer"], listed[method]["sha"]) == (method, sha)
        assert listed[method]["layout"]["dim"] == label_dim
        job = lf.create_dataset(spec)
        assert job["bundle"] == method
        done = lf.wait(job["id"], timeout_s=90, progress=False)
        assert done["status"] == "succeeded" and done["progress"]["samples"] == {"done": COUNT, "total": COUNT}
        shards = lf.shards(job["id"])
        assert [s["file"] for s in shards] == [f"{method}-set-{i:06d}.tar" for i in range(2)]
        assert all(not s["presigned"] and s["url"].startswith(embedded.url) for s in shards)
        paths = lf.download_shards(job["id"], tmp_path / "shards")
    samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode())  # PNGs stay bytes
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(COUNT)]
    images = [Image.open(io.BytesIO(s["png"])) for s in samples]
    assert all((im.format, im.mode, im.size) == ("PNG", "L", (size, size)) for im in images)
    assert all(s["labels.npy"].shape == (label_dim,) for s in samples)
    assert all(s["json"]["index"] == int(s["__key__"]) for s in samples)
    with embedded.client() as http:
        card = http.get(f"/datasets/{job['id']}/card")
        assert card.status_code == 200, card.text
        markdown, card_images = card.json()["markdown"], card.json()["images"]
        assert f"generated by bundle `{method}` (sha256 `{sha[:16]}…" in markdown
        # unconditional generators (dcgan) must say their labels are not what the images show
        label_conditioned = (manifest.get("trainer_config") or {}).get("label_conditioned", True)
        assert ("Labels are not enforced" in markdown) == (not label_conditioned)
        assert set(card_images) == {"card.png", "histograms.png"}
        for url in card_images.values():
            png = http.get(url)
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            Image.open(io.BytesIO(png.content)).verify()
