"""`labelforge eval`: clear errors with exit code 2, and (slow) a quick evaluation of a tiny bundle on real digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    ([], "exactly one"),
    (["--run", "a", "--bundle", "b"], "exactly one"),
    (["--run", "does-not-exist"], "--run"),
    (["--run", "r", "--attach"], "--attach: only a --bundle"),
])
def test_eval_rejects_bad_sources_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["eval", *[str(tmp_path / a) if not a.startswith("--") else a for a in args]])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_mean_image_on_a_layout_without_one_class_field_fails_before_evaluating() -> None:
    bundle = Path(__file__).resolve().parents[2] / "bundles" / "faces-m"  # shipped; its layout has no class
    result = runner.invoke(app, ["eval", "--bundle", str(bundle), "--mean-image", "--device", "cpu"])
    assert result.exit_code == 2
    assert "--mean-image" in result.output and "categorical" in result.output
    assert "Traceback" not in result.output


def test_eval_names_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--run", str(tmp_path)])
    assert result.exit_code == 2
    assert "--run" in result.output and "training_options.json" in result.output


@pytest.mark.slow  # trains both baselines on real digits: ~10 s alone, a minute on a busy CPU
def test_eval_quick_on_a_tiny_bundle_writes_report_and_page(tiny_bundle_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "eval" / "report.json"
    result = runner.invoke(app, ["eval", "--bundle", str(tiny_bundle_dir), "--quick", "--out", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["summary"]) == {"gen_digit_acc", "pred_acc", "source_only_acc", "oracle_acc", "gap_closed",
                                      "delta_prime_off", "attr_corr_abs_mean"}
    assert all(math.isfinite(v) for v in report["summary"].values())
    assert report["summary"]["oracle_acc"] > 0.8  # the oracle really learned the real digits
    assert report["domain_gap_ok"] is True  # source-only error ≥ 3× the oracle's (issue 4)
    manifest = json.loads((tiny_bundle_dir / "manifest.json").read_text())
    assert report["model"]["trainer_config"] == manifest["trainer_config"]  # what `results --vary` reads
    assert (out.parent / "digit_noise_grid.png").exists() and out.with_suffix(".md").exists()
