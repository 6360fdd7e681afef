"""The `source-only` trainer: the no-adaptation baseline packaged as a bundle (real digits domain, 8×8)."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from models.domains import get_domain
from models.export import export_run
from models.runtime import Bundle
from models.trainers import load_run


def _train(out: Path, *extra: str):
    from service.cli import app

    args = ["train", "source-only", "--domain", "digits", "--image-size", "8", "--iterations", "6", "--set",
            "simulator_steps=20", "--set", "source_count=1024", "--set", "width=8", "--set", "net.c=4",
            "--out", str(out), "--device", "cpu", *extra]
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_source_only_run_exports_a_bundle_whose_predictor_reads_its_own_images(tmp_path: Path,
                                                                              monkeypatch) -> None:
    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path / "cache"))
    result = _train(tmp_path / "so")
    assert result.exit_code == 0, result.output
    assert "source-only 6/6" in result.output  # not a terminal: a plain progress line instead of a live bar
    run = load_run(tmp_path / "so")
    assert run.trainer == "source-only" and run.iteration == 6
    from service.cli import app

    evaluated = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "so"), "--quick", "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    # not a terminal (a log file, nohup): plain progress lines as the work happens, not silence until the end
    assert "oracle baseline" in evaluated.output and "training: " in evaluated.output
    bundle = Bundle.load(export_run(tmp_path / "so", tmp_path / "bundle"))
    assert bundle.manifest["trainer"] == "source-only"
    # the eval report written by `labelforge eval --run` travels into the bundle's manifest
    summary = bundle.manifest["evaluation"]["summary"]
    assert summary["source_only_acc"] > 0 and abs(summary["gap_closed"]) < 1.0
    gen = torch.Generator().manual_seed(0)
    from models.layouts import DIGITS, sample_prior

    labels = sample_prior(DIGITS, 64, generator=gen)
    z1, z2 = torch.randn(64, bundle.nz, generator=gen), torch.randn(64, bundle.nz, generator=gen)
    images = bundle.generate(z1, labels)
    # G(z, l) = S(l): the noise changes nothing, the images are the simulator's
    assert torch.allclose(images, bundle.generate(z2, labels), atol=1e-6)
    assert torch.allclose(images, run.simulator(labels).clamp(0, 1), atol=1e-4)
    z_hat, _ = bundle.predict(images)
    assert torch.count_nonzero(z_hat) == 0  # the baseline has no noise estimate
    # trained on renderer images, it reads the class of fresh renders well above chance (10 %)
    renders, _ = get_domain("digits", image_size=8).simulate(labels)
    _, l_hat = bundle.predict(renders)
    acc = (l_hat[:, :10].argmax(1) == labels[:, :10].argmax(1)).float().mean().item()
    assert acc >= 0.3, acc


def test_source_only_bad_setting_names_the_field(tmp_path: Path) -> None:
    result = _train(tmp_path / "bad", "--set", "source_count=1")
    assert result.exit_code == 2
    assert "source_count: must be ≥ 2" in result.output


def test_a_folder_holding_only_a_fitted_simulator_is_reused(tmp_path: Path) -> None:
    """`simulator_run` may name a folder with just `simulator.pt` (how checkpoints/faces-m-cpu ships S)."""
    import shutil

    assert _train(tmp_path / "first").exit_code == 0
    (tmp_path / "s_only").mkdir()
    shutil.copy(tmp_path / "first" / "simulator.pt", tmp_path / "s_only" / "simulator.pt")
    result = _train(tmp_path / "second", "--set", f"simulator_run={tmp_path / 's_only'}")
    assert result.exit_code == 0, result.output
    first, second = load_run(tmp_path / "first").simulator, load_run(tmp_path / "second").simulator
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True))
    wrong = _train(tmp_path / "third", "--set", f"simulator_run={tmp_path / 's_only'}", "--set", "net.c=8")
    assert wrong.exit_code == 2 and "does not fit this config's net" in wrong.output
