"""InfoBEGAN (seed 002) on tiny CPU configs: nets, MS-SSIM, losses, exact resume, run → bundle → engine
and evaluation, latent recovery (from runs and TorchScript bundles) and the `edit` command."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from models.evaluation.latent_recovery import (
    RECOVERY_LOSSES,
    RecoveryConfig,
    RecoveryModel,
    compare_losses,
    edit_images,
    edit_labels,
    model_from_bundle,
    model_from_run,
    parse_assignments,
    probe_sets,
    recover_latent,
    save_image,
)
from models.layouts import DIGITS, FACES, LayoutError, sample_prior
from models.networks import Simulator
from models.networks.infobegan import (
    BEGANDiscriminator,
    BEGANGenerator,
    InfoBEGANSizes,
    NoisePredictor,
    ms_ssim,
    ms_ssim_scales,
    recon_distance,
    ssim,
)
from models.trainers.infobegan import (
    InfoBEGANConfig,
    InfoBEGANLoop,
    build_nets,
    net_config,
    sizes_for,
    train_infobegan,
)
from models.trainers.run import load_run
from tests.models.test_evaluation import TINY as EVAL_TINY
from tests.models.test_evaluation import TinyDigits
from tests.models.tiny_domain import TinyBlobDomain

torch.set_num_threads(1)  # after the imports: test_evaluation sets 2 on import

TINY = InfoBEGANConfig(
    domain="tiny-blobs", image_size=8, batch_size=4, iterations=6, nz=4, nh=8, width=4, hidden=16, sim_c=4,
    simulator_steps=10, simulator_batch=8, log_every=2, sample_every=4, checkpoint_every=100, seed=3,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("infobegan") / "run"
    train_infobegan(TINY, run_dir, device="cpu", domain=TinyBlobDomain(8))
    return run_dir


@pytest.fixture(scope="module")
def tiny_bundle_path(tiny_run: Path) -> Path:
    from models.export import export_run

    return export_run(tiny_run, tiny_run.parent / "bundles" / "tiny-infobegan")


# --- networks and MS-SSIM --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [8, 32])
def test_networks_have_the_contract_shapes(size: int) -> None:
    sz = InfoBEGANSizes(image_size=size, channels=3, label_dim=400, nz=5, nh=6, width=4, hidden=8)
    z, labels = torch.randn(2, 5), torch.randn(2, 400)
    with torch.no_grad():
        images = BEGANGenerator(sz)(z, labels)
        recon, code = BEGANDiscriminator(sz)(images)
        predicted = NoisePredictor(sz)(images)
    assert images.shape == (2, 3, size, size) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert recon.shape == images.shape and code.shape == (2, 400)
    assert predicted.shape == (2, 5 + 400)
    with pytest.raises(ValueError, match="image_size: must be a power of two"):
        InfoBEGANSizes(image_size=24, channels=3, label_dim=4)


def test_ssim_matches_scikit_image_and_ms_ssim_ranks_degradations() -> None:
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=gen, dtype=torch.float64)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    ref = [structural_similarity(x[i].numpy(), noisy[i].numpy(), channel_axis=0, data_range=1.0,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False) for i in range(2)]
    torch.testing.assert_close(ssim(x, noisy), torch.tensor(ref, dtype=torch.float64))
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(2, dtype=torch.float64))
    noisier = (x + 0.4 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    assert (ms_ssim(x, noisier) < ms_ssim(x, noisy)).all() and (ms_ssim(x, noisy) < 1).all()
    assert [ms_ssim_scales(s) for s in (8, 16, 32, 64, 128, 256)] == [1, 2, 3, 4, 5, 5]
    inverted = (1 - x).float().requires_grad_(True)  # anti-correlated: clamped, not NaN
    recon_distance(inverted, x.float(), alpha=0.84).sum().backward()
    assert torch.isfinite(inverted.grad).all()


# --- training --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("step", "index"), [("d_step", 0), ("g_step", 1), ("p_step", 0)])
def test_each_update_lowers_its_loss_on_a_fixed_batch(tmp_path: Path, step: str, index: int) -> None:
    """D: its whole loss; P: its whole loss; G: its BEGAN energy E(G(z, l)) (its InfoGAN term only
    moves once Q reads labels, which an untrained Q does not)."""
    domain = TinyBlobDomain(8)
    cfg = replace(TINY, lr_d=3e-3, lr_g=3e-3, lr_p=3e-3)
    net = net_config(cfg, domain)
    nets = build_nets(cfg, sizes_for(cfg.__dict__, net), Simulator(net), domain.device)
    loop = InfoBEGANLoop(cfg, domain, nets, tmp_path)
    batch = loop.draw()
    losses = [float(getattr(loop, step)(batch)[index]) for _ in range(25)]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses


def test_interrupted_and_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path: Path) -> None:
    straight = train_infobegan(TINY, tmp_path / "a", device="cpu", domain=TinyBlobDomain(8))

    def sigterm_at_3(done: int, total: int, scalars: dict[str, float] | None) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_infobegan(TINY, tmp_path / "b", device="cpu", progress=sigterm_at_3, domain=TinyBlobDomain(8))
    assert (first["status"], first["iteration"]) == ("interrupted", 3)
    resumed = train_infobegan(TINY, tmp_path / "b", device="cpu", resume=True, domain=TinyBlobDomain(8))
    assert (resumed["status"], resumed["iteration"]) == ("completed", 6)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for name, state in a["models"].items():
        for key, value in state.items():
            assert torch.equal(value, b["models"][name][key]), f"{name}.{key}"
    assert torch.equal(a["k"], b["k"]) and straight["L_P"] == resumed["L_P"]


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="ae_alpha: must be in"):
        replace(TINY, ae_alpha=1.5).validate()
    with pytest.raises(ValueError, match="image_size: must be a power of two"):
        replace(TINY, image_size=12).validate()


def test_load_run_gives_the_standard_modules(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    assert (run.trainer, run.domain, run.layout, run.iteration) == ("infobegan", "tiny-blobs", "digits", 6)
    assert set(run.modules.parts) == {"generator", "discriminator", "predictor", "simulator"}
    assert all(not m.training for m in (run.generator, run.image_predictor, run.simulator))
    images = run.generator(torch.randn(3, 4), torch.randn(3, 16))
    assert images.shape == (3, 1, 8, 8)
    assert run.image_predictor(images).shape == (3, 4 + 16)  # the separate noise predictor P
    assert {"L_D", "L_G", "L_P", "E_real", "L_cycle", "k_t", "M_global"} <= set(run.metrics)
    lines = [json.loads(x) for x in (tiny_run / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines if "L_D" in x] == [2, 4, 6]
    assert (tiny_run / "samples" / "iter_0000004.png").exists()


def test_bundle_generates_predicts_and_feeds_the_engine(tiny_run: Path, tiny_bundle_path: Path,
                                                        tmp_path: Path) -> None:
    from models.engine import generate_dataset
    from models.runtime import Bundle
    from models.spec import parse_spec
    from worker.storage import LocalStorage

    bundle = Bundle.load(tiny_bundle_path, engine="onnx")
    assert bundle.manifest["trainer"] == "infobegan" and bundle.nz == 4
    z, labels = torch.randn(3, 4), sample_prior(DIGITS, 3, torch.Generator().manual_seed(0))
    run = load_run(tiny_run)
    with torch.no_grad():
        torch.testing.assert_close(bundle.generate(z, labels), run.generator(z, labels).clamp(0, 1),
                                   atol=1e-4, rtol=0)
    z_hat, l_hat = bundle.predict(bundle.generate(z, labels))
    assert z_hat.shape == (3, 4) and l_hat.shape == (3, 16)
    spec = parse_spec({"name": "ib", "bundle": "tiny-infobegan", "count": 6, "shard_size": 4, "seed": 1,
                       "labels": {"digit": {"fixed": 2}}})
    manifest = generate_dataset(spec, bundle, LocalStorage(tmp_path), "ds/")
    assert [s["count"] for s in manifest["shards"]] == [4, 2]


def test_evaluation_scores_an_infobegan_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.evaluation import from_run, run_evaluation

    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path / "cache"))
    domain = TinyDigits(image_size=8, seed=0)
    train_infobegan(replace(TINY, domain="tiny-digits", iterations=2), tmp_path / "run", device="cpu", domain=domain)
    report = run_evaluation(from_run(tmp_path / "run"), domain, EVAL_TINY, tmp_path / "eval" / "report.json",
                            mode="quick")
    assert report["model"]["trainer"] == "infobegan"
    assert {"gen_digit_acc", "pred_acc", "gap_closed"} <= set(report["summary"])
    assert (tmp_path / "eval" / "report.md").exists()


# --- latent recovery and editing -------------------------------------------------------------------

def blob_model(size: int = 16) -> RecoveryModel:
    """Recovery model whose 'generator' is the tiny blob renderer: differentiable in dx, dy, thickness,
    so the true latent of its images is known exactly."""
    domain = TinyBlobDomain(size)

    def render(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return domain.simulate(labels)[0]

    def predictor(images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(images), 2 + DIGITS.dim)

    return RecoveryModel(name="blobs", layout=DIGITS, nz=2, image_size=size, channels=1, generator=render,
                         simulator=lambda labels: domain.simulate(labels)[0], predictor=predictor,
                         features=lambda x: torch.nn.functional.avg_pool2d(x, 2))


def _class0_labels(n: int, seed: int) -> torch.Tensor:
    labels = sample_prior(DIGITS, n, torch.Generator().manual_seed(seed))
    labels[:, :10] = 0.0
    labels[:, 0] = 1.0  # class 0: the start's argmax, so position is carried by dx / dy alone
    return labels


@pytest.mark.parametrize("loss", RECOVERY_LOSSES)
def test_recovery_finds_the_position_labels_of_blob_images(loss: str) -> None:
    model = blob_model()
    labels = _class0_labels(6, seed=1)
    images = model.generator(torch.zeros(6, 2), labels)
    rec = recover_latent(model, images, RecoveryConfig(loss=loss, steps=60, lr=0.1, init="zero"))
    errors = (rec.labels - labels)[:, 14:16].abs()  # dx, dy in σ
    assert float(errors.mean()) < 0.15, (loss, errors)
    assert float(rec.mse.mean()) < 0.1 * float(images.var())


def test_edit_moves_the_blob_the_way_the_label_says() -> None:
    model = blob_model()
    images = model.generator(torch.zeros(4, 2), _class0_labels(4, seed=2))
    edited, rec = edit_images(model, images, {"dx": 0.06, "dy": 0.0}, RecoveryConfig(steps=60, lr=0.1, init="zero"))
    xs = torch.arange(16, dtype=torch.float32)

    def centre_x(img: torch.Tensor) -> torch.Tensor:
        w = img[:, 0].sum(1)  # [B, S] mass per column
        return (w * xs).sum(1) / w.sum(1)

    assert (centre_x(edited) - centre_x(rec.images) > 0.5).all()  # +1.5σ of dx ≈ +0.075 frac ≈ +1.2 px


def test_compare_losses_reports_every_loss_and_the_best() -> None:
    model = blob_model()
    probes = probe_sets(model, 6, seed=0)
    assert set(probes) == {"generated", "simulator"}
    images, labels = probes["generated"]
    result = compare_losses(model, images, labels, RecoveryConfig(steps=20, init="zero"))
    assert set(result["losses"]) == set(RECOVERY_LOSSES) and result["best"] in RECOVERY_LOSSES
    best = result["losses"][result["best"]]["label_error"]
    assert all(best <= row["label_error"] for row in result["losses"].values())
    assert {"digit_error_rate", "dx_rmse_sigma", "dx_mae", "label_error"} <= set(result["predictor"])


def test_labels_are_set_in_human_units_and_bad_fields_are_named() -> None:
    labels = torch.zeros(2, FACES.dim)
    out = edit_labels(labels, parse_assignments(["yaw_deg=20", "shape[3]=1.5"], FACES), FACES)
    assert torch.allclose(out[:, FACES["yaw_deg"].start], torch.tensor(20 / 30))
    assert torch.allclose(out[:, 3], torch.tensor(1.5)) and float(out[:, 4:398].abs().sum()) == 0
    digits = edit_labels(torch.zeros(1, DIGITS.dim), {"digit": 3}, DIGITS)
    assert int(digits[0, :10].argmax()) == 3 and float(digits[0, :10].sum()) == 1
    for items, field in ((["nose=1"], "nose"), (["shape=1"], "shape"), (["shape[199]=1"], "shape[199]"),
                         (["yaw_deg[0]=1"], "yaw_deg[0]")):
        with pytest.raises(LayoutError, match=field.replace("[", r"\[")):
            parse_assignments(items, FACES)
    with pytest.raises(ValueError, match="yaw_deg: 'left' is not a number"):
        parse_assignments(["yaw_deg=left"], FACES)
    with pytest.raises(LayoutError, match="digit: must be an integer class"):
        edit_labels(torch.zeros(1, DIGITS.dim), {"digit": 12}, DIGITS)


def test_recovery_through_a_torchscript_bundle_matches_the_run(tiny_run: Path, tiny_bundle_path: Path) -> None:
    from_bundle, from_run = model_from_bundle(tiny_bundle_path), model_from_run(tiny_run)
    images, _ = probe_sets(from_run, 4, seed=5)["generated"]
    cfg = RecoveryConfig(loss="features", steps=15)
    a, b = recover_latent(from_run, images, cfg), recover_latent(from_bundle, images, cfg)
    torch.testing.assert_close(a.labels, b.labels, atol=1e-4, rtol=1e-4)
    start = recover_latent(from_bundle, images, replace(cfg, steps=0))
    assert float(b.distance.sum()) < float(start.distance.sum())  # gradients reached the latent


# --- the `labelforge edit` command -----------------------------------------------------------------

def _edit_cli(*args: str):
    from service.commands.edit import edit_command

    app = typer.Typer()
    app.command()(edit_command)
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_edit_command_writes_the_edited_image(tiny_bundle_path: Path, tmp_path: Path) -> None:
    model = model_from_bundle(tiny_bundle_path)
    image, _ = probe_sets(model, 1, seed=0)["generated"]
    save_image(image[0], tmp_path / "in.png")
    result = _edit_cli(str(tmp_path / "in.png"), "--set", "digit=3", "--set", "rotation_deg=10", "--bundle",
                       str(tiny_bundle_path), "--steps", "5", "--out", str(tmp_path / "out.png"),
                       "--recon", str(tmp_path / "recon.png"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["set"] == {"digit": 3.0, "rotation_deg": 10.0} and report["model"] == "tiny-infobegan"
    assert set(report["recovered"]) == set(DIGITS.names)
    for name in ("out.png", "recon.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size == (8, 8) and img.mode == "L"


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "nose=1"], "nose: unknown field"),
    (["--set", "digit=3", "--loss", "l2"], "--loss: must be one of"),
    (["--set", "digit=3", "--run", "/nonexistent"], "--bundle/--run: give one, not both"),
])
def test_edit_command_names_the_bad_option(tiny_bundle_path: Path, tmp_path: Path, extra: list[str],
                                           message: str) -> None:
    Image.new("L", (8, 8)).save(tmp_path / "in.png")
    result = _edit_cli(str(tmp_path / "in.png"), "--bundle", str(tiny_bundle_path), "--out", str(tmp_path / "o.png"),
                       *extra)
    assert result.exit_code == 2 and message in " ".join(result.output.split())
