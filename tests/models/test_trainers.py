"""Trainers end to end on tiny CPU configs: exact resume, load_run, simulator fitting, collapse stop, CLI."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from models.trainers import get_trainer, list_trainers, load_run, register_trainer
from models.trainers.common import TrainingCollapsed
from models.trainers.renderbegan import RenderBEGANConfig, train_renderbegan
from models.trainers.simulator import SimulatorConfig, evaluate_simulator, train_simulator
from tests.models.tiny_domain import TinyBlobDomain

torch.set_num_threads(1)

TINY = RenderBEGANConfig(
    domain="tiny-blobs", image_size=8, batch_size=4, iterations=6, net={"c": 4, "nz": 4, "nh": 8, "hidden": 16},
    simulator_steps=10, simulator_batch=8, content_steps=5, content_batch=8, log_every=2, sample_every=4,
    checkpoint_every=100, seed=3,
)


def _states(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    flat = {f"{m}.{k}": v for m, sd in ckpt["models"].items() for k, v in sd.items()}
    flat["k"] = ckpt["k"]
    return flat


def test_registry_knows_both_trainers_and_refuses_duplicates() -> None:
    assert {"renderbegan", "simulator"} <= set(list_trainers())
    assert get_trainer("renderbegan") is train_renderbegan
    with pytest.raises(ValueError, match="registered twice"):
        register_trainer("renderbegan")(lambda: None)
    with pytest.raises(ValueError, match="unknown trainer 'nope'"):
        get_trainer("nope")


def test_interrupted_and_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path: Path) -> None:
    straight = train_renderbegan(TINY, tmp_path / "a", device="cpu", domain=TinyBlobDomain(8))
    assert straight["status"] == "completed"

    def sigterm_at_3(done: int, total: int, scalars: dict[str, float] | None) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal path: handler → flag → checkpoint

    first = train_renderbegan(TINY, tmp_path / "b", device="cpu", progress=sigterm_at_3, domain=TinyBlobDomain(8))
    assert first == {**first, "status": "interrupted", "iteration": 3}
    resumed = train_renderbegan(TINY, tmp_path / "b", device="cpu", resume=True, domain=TinyBlobDomain(8))
    assert resumed["status"] == "completed" and resumed["iteration"] == 6

    a, b = _states(tmp_path / "a"), _states(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["L_G"] == resumed["L_G"]  # logged scalars too (accumulators are checkpointed)


def _interrupted_at_3(run_dir: Path) -> None:
    def sigterm_at_3(done: int, total: int, scalars: dict[str, float] | None) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    train_renderbegan(TINY, run_dir, device="cpu", progress=sigterm_at_3, domain=TinyBlobDomain(8))


def test_init_from_with_the_same_config_continues_exactly_like_resume(tmp_path: Path) -> None:
    train_renderbegan(TINY, tmp_path / "straight", device="cpu", domain=TinyBlobDomain(8))
    _interrupted_at_3(tmp_path / "source")
    cfg = replace(TINY, init_from=str(tmp_path / "source"))
    result = train_renderbegan(cfg, tmp_path / "continued", device="cpu", domain=TinyBlobDomain(8))
    assert result["status"] == "completed" and result["iteration"] == 6
    a, b = _states(tmp_path / "straight"), _states(tmp_path / "continued")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    options = json.loads((tmp_path / "continued" / "training_options.json").read_text())
    assert options["init_from"] == str(tmp_path / "source")
    assert options["simulator_run"] == str(tmp_path / "source")  # S and content net come from the source run
    assert options["content_run"] == str(tmp_path / "source")


def test_init_from_applies_the_new_config_and_keeps_the_history_in_the_log(tmp_path: Path) -> None:
    _interrupted_at_3(tmp_path / "source")
    cfg = replace(TINY, init_from=str(tmp_path / "source"), w_c=0.5, lr_g=3e-4, iterations=8)
    train_renderbegan(cfg, tmp_path / "tuned", device="cpu", domain=TinyBlobDomain(8))
    ckpt = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 8
    assert [g["lr"] for g in ckpt["optimizers"]["generator"]["param_groups"]] == [3e-4]  # not the source's 1e-4
    lines = [json.loads(x) for x in (tmp_path / "tuned" / "log.jsonl").read_text().splitlines()]
    marker = next(x for x in lines if x.get("phase") == "init_from")
    assert marker["iteration"] == 3 and marker["changed"] == {"w_c": 0.5, "lr_g": 3e-4}
    assert [x["iteration"] for x in lines if "L_D" in x] == [2, 4, 6, 8]  # the source's line at 2, then its own
    assert load_run(tmp_path / "tuned").config["w_c"] == 0.5


def test_init_from_refuses_a_bad_source_before_writing_anything(tmp_path: Path) -> None:
    _interrupted_at_3(tmp_path / "source")
    with pytest.raises(ValueError, match="iterations: 3 must exceed init_from's iteration 3"):
        train_renderbegan(replace(TINY, init_from=str(tmp_path / "source"), iterations=3), tmp_path / "x",
                          device="cpu", domain=TinyBlobDomain(8))
    wider = replace(TINY, init_from=str(tmp_path / "source"), net={**TINY.net, "c": 8})
    with pytest.raises(ValueError, match="init_from: the generator in .* does not fit this config's net"):
        train_renderbegan(wider, tmp_path / "y", device="cpu", domain=TinyBlobDomain(8))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(ValueError, match="init_from: no checkpoint.pt in"):
        replace(TINY, init_from=str(tmp_path)).validate()


def test_load_run_returns_working_eval_modules_and_the_run_files(tmp_path: Path) -> None:
    train_renderbegan(TINY, tmp_path / "r", device="cpu", domain=TinyBlobDomain(8))
    run = load_run(tmp_path / "r")
    assert (run.trainer, run.domain, run.layout, run.iteration) == ("renderbegan", "tiny-blobs", "digits", 6)
    assert run.net.image_size == 8 and run.net.channels == 1 and run.net.label_dim == 16
    assert run.config["w_c"] == 0.1 and run.config["iterations"] == 6
    assert {"L_D", "L_G", "L_P", "L_c", "L_z", "k_t", "M_global", "L_l/digit"} <= set(run.metrics)
    assert 0.0 <= run.metrics["k_t"] <= 1.0
    assert set(run.modules.parts) == {"generator", "discriminator", "predictor", "simulator"}
    assert all(not m.training for m in (run.generator, run.image_predictor, run.simulator))
    z, labels = torch.randn(5, 4), torch.randn(5, 16)
    images = run.generator(z, labels)
    assert images.shape == (5, 1, 8, 8) and torch.isfinite(images).all()
    assert run.image_predictor(images).shape == (5, 4 + 16)
    assert run.simulator(labels).shape == (5, 1, 8, 8)
    lines = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines if "L_D" in x] == [2, 4, 6]
    assert (tmp_path / "r" / "samples" / "iter_0000004.png").exists()
    assert any((tmp_path / "r" / "tb").iterdir())


def test_simulator_trainer_learns_the_renderer(tmp_path: Path) -> None:
    domain = TinyBlobDomain(8)
    cfg = SimulatorConfig(domain="tiny-blobs", image_size=8, c=8, steps=150, batch_size=16, lr=3e-3, eval_count=32,
                          log_every=50, checkpoint_every=100)
    result = train_simulator(cfg, tmp_path / "sim", device="cpu", domain=domain)
    run = load_run(tmp_path / "sim")
    torch.manual_seed(0)
    from models.networks import Simulator

    untrained, _, _ = evaluate_simulator(domain, Simulator(run.net), 32, 0)
    assert result["sim_psnr_db"] > untrained["sim_psnr_db"] + 3.0
    assert result["sim_ssim"] > untrained["sim_ssim"]
    assert run.trainer == "simulator" and run.generator is None and run.image_predictor is None
    assert (tmp_path / "sim" / "samples" / "contact_sheet.png").exists()


def test_collapse_detection_stops_with_a_clear_message_and_keeps_a_checkpoint(tmp_path: Path) -> None:
    cfg = replace(TINY, collapse_warmup=0, diversity_min=1e9)  # any G counts as collapsed
    with pytest.raises(TrainingCollapsed, match="mode collapse at iteration 2"):
        train_renderbegan(cfg, tmp_path / "c", device="cpu", domain=TinyBlobDomain(8))
    assert load_run(tmp_path / "c").iteration == 2


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="content: must be one of"):
        replace(TINY, content="vgg19").validate()
    with pytest.raises(ValueError, match="label_aware_layer: must be one of labels, features"):
        replace(TINY, label_aware_layer="logits").validate()


# --- CLI (real digits domain, 8×8) ------------------------------------------------------------------

def _cli(*args: str):
    from service.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_trains_simulator_then_renderbegan_end_to_end(tmp_path: Path) -> None:
    sim = _cli("train", "simulator", "--domain", "digits", "--image-size", "8", "--steps", "5", "--batch-size", "8",
               "--out", str(tmp_path / "sim"), "--device", "cpu")
    assert sim.exit_code == 0, sim.output
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("net: {c: 4, nz: 4, nh: 8, hidden: 16}\nlog_every: 1\ncontent_steps: 3\ncontent_batch: 8\n")
    args = ["train", "renderbegan", "--domain", "digits", "--image-size", "8", "--batch-size", "4", "--iterations",
            "2", "--config", str(cfg), "--simulator", str(tmp_path / "sim"), "--out", str(tmp_path / "rb"),
            "--device", "cpu"]
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "rb")
    assert run.domain == "digits" and run.iteration == 2 and run.net.c == 4
    again = _cli(*args)  # same --out without --resume: a numbered directory, the first run untouched
    assert again.exit_code == 0 and (tmp_path / "rb-1" / "checkpoint.pt").exists()
    more = _cli("train", "renderbegan", "--out", str(tmp_path / "rb"), "--resume", "--iterations", "3",
                "--device", "cpu")
    assert more.exit_code == 0, more.output
    assert load_run(tmp_path / "rb").iteration == 3


def test_cli_dry_run_prints_resolved_config(tmp_path: Path) -> None:
    result = _cli("train", "renderbegan", "--domain", "digits", "--iterations", "7", "--dry-run")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["iterations"] == 7 and data["domain"] == "digits" and data["w_c"] == 0.1 and data["batch_size"] == 24


def test_cli_set_reaches_any_field_and_merges_into_the_config_files_net(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("net: {c: 16, nz: 8}\nw_c: 0.1\n")
    result = _cli("train", "renderbegan", "--domain", "digits", "--config", str(cfg), "--set", "w_c=0.3",
                  "--set", "net.g_input=dense", "--set", "content=vgg16", "--set", "vgg_upsample=1", "--set", "lr_d=1e-4",
                  "--dry-run")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["w_c"] == 0.3 and data["content"] == "vgg16" and data["vgg_upsample"] == 1
    assert data["lr_d"] == 1e-4  # YAML 1.1 reads 1e-4 as a string; a float field takes it as the number
    assert data["net"] == {"c": 16, "nz": 8, "g_input": "dense"}  # one nested field set, the file's others kept


def test_cli_config_takes_another_runs_options_to_vary_it() -> None:
    """The committed feature-map run's own options file as --config, one option changed: the natural way to
    continue a run under a new w_c (with init_from); a file of another trainer is refused, naming both."""
    root = Path(__file__).resolve().parents[2]
    options = root / "checkpoints" / "digits-features-cpu" / "training_options.json"
    result = _cli("train", "renderbegan", "--config", str(options), "--set", "w_c=0.1", "--dry-run")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["w_c"] == 0.1 and data["label_aware_layer"] == "features" and data["net"]["c"] == 16
    assert data["simulator_run"] == "checkpoints/digits-cpu" and "trainer" not in data
    other = root / "checkpoints" / "labelgan-digits-realmeans-cpu" / "training_options.json"
    refused = _cli("train", "renderbegan", "--config", str(other), "--dry-run")
    assert refused.exit_code == 2
    assert "holds the options of a 'labelgan' run, not a renderbegan one" in " ".join(refused.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--content", "vgg19"], "content: must be one of"),
        (["--domain", "nope", "--iterations", "1"], "unknown domain 'nope'"),
        (["--resume"], "training_options.json is missing"),
        (["--vgg-weights", "/nonexistent.pth", "--content", "vgg16"], "vgg_weights: no such file"),
        (["--set", "vgg_upsample=0", "--iterations", "1"], "vgg_upsample: must be > 0"),
        (["--set", "content_run=/nonexistent", "--iterations", "1"], "content_run: no content_label_aware.pt"),
        (["--set", "w_c"], "--set: 'w_c' is not key=value"),
        (["--set", "w_c=abc"], "w_c: must be a number, got 'abc'"),
        (["--set", "iterations=2.5"], "iterations: must be an integer, got 2.5"),
        (["--set", "cuda_graph=maybe"], "cuda_graph: must be true or false, got 'maybe'"),
        (["--set", "simulator_run=3"], "simulator_run: must be a string (or null), got 3"),
        (["--set", "lr_d=1e-4", "--set", "w_c=[1]"], "w_c: must be a number, got [1]"),
        (["--set", "domain_kwargs=3"], "domain_kwargs: must be a mapping {key: value}, got 3"),
        (["--set", "betas=0.5"], "betas: must be a list, got 0.5"),
    ],
)
def test_cli_bad_option_gives_clear_message_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = _cli("train", "renderbegan", "--out", str(tmp_path / "x"), "--device", "cpu", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()  # refused before any run directory or file is written


def test_bf16_autocast_path_agrees_with_the_fp32_reference(tmp_path: Path) -> None:
    """The speed flag must not change what is computed beyond bf16 rounding (issue 7)."""
    cfg = replace(TINY, iterations=2, log_every=2)
    ref = train_renderbegan(cfg, tmp_path / "fp32", device="cpu", domain=TinyBlobDomain(8))
    fast = train_renderbegan(replace(cfg, amp="bf16"), tmp_path / "bf16", device="cpu", domain=TinyBlobDomain(8))
    for key in ("L_D", "L_G", "L_P"):
        assert abs(fast[key] - ref[key]) <= 0.05 * abs(ref[key]) + 1e-3, key


def test_digits_content_loss_sees_the_whole_digit_not_only_its_strokes(tmp_path: Path) -> None:
    """Masking L_c to the stroke pixels (right for faces) would let a uniform white G pass as any digit."""
    from models.domains import get_domain
    from models.losses import mask_background
    from models.networks import Simulator
    from models.trainers.renderbegan import RenderBEGANLoop, build_nets, resolve_net

    domain = get_domain("digits", image_size=16)
    sim, mask = domain.simulate(domain.sample_labels(16, torch.Generator().manual_seed(0)))
    blob = torch.ones_like(sim)
    # the degenerate case: under the stroke mask a blank white image is (almost) the rendered digit
    assert (mask_background(blob, sim, mask) - sim).abs().mean() < 0.1 * (blob - sim).abs().mean()
    assert domain.mask_content is False and TinyBlobDomain(8).mask_content is True
    cfg = replace(TINY, domain="digits", image_size=16)
    net = resolve_net(cfg, domain)
    loop = RenderBEGANLoop(cfg, domain, build_nets(cfg, net, Simulator(net), domain.device), torch.nn.Identity(),
                           tmp_path)
    assert torch.equal(loop.draw()["gmask"], torch.ones(cfg.batch_size, 1, 16, 16))
