"""`labelforge generate / predict / export` as a user runs them: exit codes and messages."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


def write_spec(tmp_path: Path, **over: object) -> Path:
    spec = {"name": "cli-ds", "bundle": "tiny-digits", "count": 12, "shard_size": 5, "seed": 2,
            "labels": {"digit": {"fixed": 4}}, **over}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_generate_writes_a_dataset_and_a_shard_range(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    out = tmp_path / "out"
    args = ["generate", str(write_spec(tmp_path)), "--out", str(out), "--bundles-dir", str(tiny_bundle_dir.parent)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "card.md", "card.png", "cli-ds-000000.tar", "cli-ds-000001.tar", "cli-ds-000002.tar",
        "histograms.png", "manifest.json"]
    part = tmp_path / "part"
    result = runner.invoke(app, [*args[:2], "--out", str(part), *args[4:], "--shards", "1:3"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in part.iterdir() if p.suffix == ".tar") == ["cli-ds-000001.tar", "cli-ds-000002.tar"]
    assert not (part / "manifest.json").exists()  # a sub-range is a worker's job, not a finished dataset
    assert (part / "cli-ds-000002.tar").read_bytes() == (out / "cli-ds-000002.tar").read_bytes()


@pytest.mark.parametrize(
    ("over", "extra_args", "needle"),
    [
        ({"labels": {"yaw_deg": {"fixed": 1}}}, [], "labels.yaw_deg: unknown field"),
        ({"count": 0}, [], "count"),
        ({"bundle": "faces-xl"}, [], "bundle: unknown bundle 'faces-xl'"),
        ({}, ["--shards", "2:9"], "--shards"),
    ],
)
def test_generate_bad_input_exits_2_naming_the_field(tmp_path: Path, tiny_bundle_dir: Path, over: dict,
                                                     extra_args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["generate", str(write_spec(tmp_path, **over)), "--out", str(tmp_path / "o"),
                                 "--bundles-dir", str(tiny_bundle_dir.parent), *extra_args])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_predict_prints_named_fields(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    out = tmp_path / "out"
    runner.invoke(app, ["generate", str(write_spec(tmp_path)), "--out", str(out), "--bundles-dir",
                        str(tiny_bundle_dir.parent), "--shards", "0:1"])
    with tarfile.open(out / "cli-ds-000000.tar") as tar:
        tar.extract("000000000.jpg", tmp_path)
    result = runner.invoke(app, ["predict", str(tmp_path / "000000000.jpg"), "--bundle", str(tiny_bundle_dir), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert set(answer) >= {"digit", "rotation_deg", "thickness", "bundle_sha"} and 0 <= answer["digit"] <= 9
    bad = runner.invoke(app, ["predict", str(tmp_path / "missing.png"), "--bundle", str(tiny_bundle_dir)])
    assert bad.exit_code == 2 and "missing.png" in bad.output


def test_export_placeholder_and_bad_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "--placeholder", "nonsense", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "no placeholder recipe for 'nonsense'" in result.output
    result = runner.invoke(app, ["export", "--run", str(tmp_path / "no-run"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "--run" in result.output
