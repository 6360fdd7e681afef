"""LabelGAN (seed 001): nets, losses, exact resume, run → bundle → engine, evaluation and the mean-image experiment."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.evaluation import EvalConfig, EvalModel, PredictorConfig, from_run, run_evaluation
from models.evaluation.mean_image import MeanImageConfig, mean_image_experiment
from models.layouts import DIGITS, FACES, sample_prior
from models.networks.labelgan import Critic, LabelGANArch, LabelPredictor, LabelReader
from models.trainers.labelgan import (
    LabelGANConfig,
    LabelGANLoop,
    build_generator,
    build_nets,
    class_mean_images,
    gradient_penalty,
    prepare_source,
    train_labelgan,
    weighted_label_loss,
)
from models.trainers.run import load_run
from tests.models.test_evaluation import TinyDigits
from tests.models.tiny_domain import TinyBlobDomain

torch.set_num_threads(1)

TINY = LabelGANConfig(
    domain="tiny-blobs", image_size=8, batch_size=4, iterations=6, nz=4, refiner_width=4, refiner_blocks=1,
    critic_width=4, predictor_width=4, simulator_c=4, simulator_steps=10, simulator_batch=8, mean_per_class=4,
    log_every=2, sample_every=4, checkpoint_every=100, seed=3,
)
TINY_EVAL = EvalConfig(seed=3, gen_count=40, real_test_max=48, oracle_count=96, source_count=96,
                       predictor=PredictorConfig(width=8, feature_dim=16, epochs=6, batch_size=16, lr=1e-2),
                       kid_subsets=4, kid_subset_size=20, div_labels=3, div_noise=4, batch_size=32, sheet_columns=6)


def _arch(size: int, source: str = "simulator") -> LabelGANArch:
    return LabelGANArch(image_size=size, channels=1, label_dim=DIGITS.dim, nz=4, source=source, refiner_width=4,
                        refiner_blocks=2, critic_width=4, predictor_width=8)


# --- networks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "source"), [(8, "simulator"), (32, "simulator"), (16, "mean_image")])
def test_network_shapes_and_the_noise_channel(size: int, source: str) -> None:
    from models.networks import NetConfig

    arch = _arch(size, source)
    torch.manual_seed(0)
    G = build_generator(arch, DIGITS, NetConfig(image_size=size, channels=1, label_dim=DIGITS.dim, nz=4, c=4))
    G.source.requires_grad_(False)  # train mode (batch statistics): an untrained R's eval output may be all 0
    D = Critic(arch)
    P = LabelPredictor(arch, D.feature_channels)
    z, labels = torch.randn(5, 4), sample_prior(DIGITS, 5, torch.Generator().manual_seed(1))
    images = G(z, labels)
    assert images.shape == (5, 1, size, size) and images.min() >= 0 and images.max() <= 1
    assert D(images).shape == (5,)
    assert D.features(images).shape == (5, 8, size // 4, size // 4)  # the critic's SECOND conv (seed §4.1)
    assert P(D.features(images)).shape == (5, DIGITS.dim)
    out = LabelReader(D, P, nz=4)(images)
    assert out.shape == (5, 4 + DIGITS.dim) and torch.equal(out[:, :4], torch.zeros(5, 4))
    torch.testing.assert_close(G(z, labels), images)  # z → noise channel is deterministic
    assert not torch.allclose(G(torch.randn(5, 4), labels), images)  # and it matters
    with pytest.raises(ValueError, match="LabelGAN labels"):
        G(z, labels[:, :5])


def test_mean_image_source_starts_at_the_class_template_and_its_warp_bends_it() -> None:
    from models.networks import NetConfig

    arch = _arch(16, "mean_image")
    G = build_generator(arch, DIGITS, NetConfig(image_size=16, channels=1, label_dim=DIGITS.dim, nz=4))
    means = torch.rand(10, 1, 16, 16)
    G.source.templates.means.copy_(means)
    labels = torch.zeros(3, DIGITS.dim)
    labels[torch.arange(3), torch.tensor([2, 7, 7])] = 1
    z = torch.randn(3, 4)
    start = G.source_image(z, labels)  # the displacement net starts at zero: the identity warp
    torch.testing.assert_close(start, means[[2, 7, 7]], atol=1e-5, rtol=0)
    torch.nn.init.normal_(G.source.warp.net[2].weight, std=1.0)
    bent = G.source_image(z, labels)
    assert (bent - start).abs().mean() > 0.05 and not torch.allclose(bent[1], bent[2])  # per-sample warp


class BlobsWithClassMeans(TinyBlobDomain):
    """TinyBlobDomain whose real side knows ten class means (as the digits domain does)."""

    def real_class_means(self) -> torch.Tensor:
        return torch.linspace(0, 1, 10)[:, None, None, None].expand(10, self.channels, self.image_size,
                                                                     self.image_size).clone()


def test_mean_source_real_starts_from_the_domains_real_class_means(tmp_path: Path) -> None:
    """The seed's §5.1 setup: the templates ARE the real class means; 'simulator' averages renders instead."""
    domain = BlobsWithClassMeans(8)
    G, _ = prepare_source(replace(TINY, source="mean_image", mean_source="real"), domain, tmp_path)
    torch.testing.assert_close(G.source.templates.means, domain.real_class_means())
    G_sim, _ = prepare_source(replace(TINY, source="mean_image"), domain, tmp_path)
    torch.testing.assert_close(G_sim.source.templates.means, class_mean_images(domain, TINY.mean_per_class, TINY.seed))


def test_mean_source_real_on_a_domain_without_classes_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mean_source: domain 'tiny-blobs' has no real classes"):
        train_labelgan(replace(TINY, source="mean_image", mean_source="real"), tmp_path / "run", device="cpu",
                       domain=TinyBlobDomain(8))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="mean_source: must be one of simulator, real"):
        replace(TINY, mean_source="mnist").validate()


# --- losses -----------------------------------------------------------------------------------------

def test_gradient_penalty_of_a_linear_critic_is_its_norm_minus_one_squared() -> None:
    real, fake, alpha = torch.rand(6, 1, 4, 4), torch.rand(6, 1, 4, 4), torch.rand(6, 1, 1, 1)
    a = torch.randn(16)
    for norm in (1.0, 3.0):
        w = a / a.norm() * norm

        def critic(x: torch.Tensor, w: torch.Tensor = w) -> torch.Tensor:
            return x.flatten(1) @ w

        assert float(gradient_penalty(critic, real, fake, alpha)) == pytest.approx((norm - 1) ** 2, abs=1e-5)


def test_label_loss_uses_the_layout_parts_and_explicit_part_weights() -> None:
    labels = sample_prior(FACES, 8, torch.Generator().manual_seed(0))
    pred = labels.clone()
    pred[:, FACES["yaw_deg"].start] += 1.0  # only yaw is off
    pred[:, FACES["shape"].stop - 1] += 2.0  # and the LAST shape slot (198), which the seed's 0:198 slice drops
    weights = {"shape": 1.0, "texture": 1.0, "angles": 100.0}
    total, parts = weighted_label_loss(pred, labels, FACES, weights, "ce")
    assert float(parts["texture"]) == 0.0
    assert float(parts["angles"]) == pytest.approx(0.5)  # one of two angle slots off by 1: MSE 0.5
    assert float(parts["shape"]) == pytest.approx(4.0 / 199)
    assert float(total) == pytest.approx(100 * 0.5 + 4.0 / 199)
    total0, _ = weighted_label_loss(pred, labels, FACES, {**weights, "angles": 0.0}, "ce")
    assert float(total0) == pytest.approx(4.0 / 199)


def test_each_loss_falls_on_a_tiny_fixed_batch(tmp_path: Path) -> None:
    """Critic: L_D falls and its Wasserstein estimate rises; predictor: L_P falls; generator (D, P fixed): L_G falls."""
    domain = TinyBlobDomain(8)
    cfg = replace(TINY, lr_d=1e-2, lr_p=1e-2, lr_g=1e-2)
    G, _ = prepare_source(cfg, domain, tmp_path)
    loop = LabelGANLoop(cfg, domain, build_nets(cfg, G, domain.device), tmp_path)
    batch = loop.draw()
    x, z, labels, alpha = batch["x0"], batch["dz0"], batch["dl0"], batch["a0"]
    d = [loop.d_step(x, z, labels, alpha) for _ in range(40)]
    assert float(d[-1][0]) < 0.1 * float(d[0][0])  # L_D = −W + λ GP
    assert float(d[-1][1]) > float(d[0][1]) + 0.5  # W
    lps = [float(loop.p_step(z, labels)[0]) for _ in range(40)]
    assert lps[-1] < 0.5 * lps[0]
    assert loop.p_step(z, labels)[1] == {}  # no anchor (the seed): P never sees renders or source images
    g = [loop.g_step(z, labels) for _ in range(40)]
    assert float(g[-1][0]) < float(g[0][0]) - 0.5  # L_G = −E D(G) + w_label L_P
    assert float(g[-1][1]) < float(g[0][1])  # the adversarial part


@pytest.mark.parametrize(("option", "scalar"), [("predictor_renders", "L_P_sim"), ("predictor_sources", "L_P_src")])
def test_each_predictor_anchor_teaches_p_to_read_its_images(tmp_path: Path, option: str, scalar: str) -> None:
    """An anchor adds its weight × L_P on its own images of the P-step labels to P's update (against a G–P
    private code): the domain's renders (predictor_renders) or G's source images (predictor_sources, here
    the warped class templates). The anchor's loss is logged under its name and falls on a fixed batch."""
    domain = TinyBlobDomain(8)
    cfg = replace(TINY, lr_p=1e-2, source="mean_image", **{option: 1.0})
    G, _ = prepare_source(cfg, domain, tmp_path)
    loop = LabelGANLoop(cfg, domain, build_nets(cfg, G, domain.device), tmp_path)
    batch = loop.draw()
    z, labels = batch["pz"], batch["pl"]
    images = domain.simulate(labels)[0] if option == "predictor_renders" else G.source_image(z, labels)
    with torch.no_grad():
        before = weighted_label_loss(loop.nets.P(loop.nets.D.features(images)), labels,
                                     domain.layout, loop.weights, cfg.categorical_loss)[0]
    anchored = [loop.p_step(z, labels)[1] for _ in range(100)]
    assert set(anchored[0]) == {scalar}
    assert float(anchored[0][scalar]) == pytest.approx(float(before), rel=1e-5)  # it is P's loss on those images
    assert float(anchored[-1][scalar]) < 0.5 * float(anchored[0][scalar])
    loop.iteration_step()
    assert scalar in loop.flush_scalars()


# --- training runs ----------------------------------------------------------------------------------

def _states(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return {f"{m}.{k}": v for m, sd in ckpt["models"].items() for k, v in sd.items()}


@pytest.mark.parametrize("anchors", [{}, {"predictor_renders": 1.0, "predictor_sources": 0.5}])
def test_interrupted_and_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path: Path, anchors: dict[str, float]) -> None:
    cfg = replace(TINY, **anchors)
    straight = train_labelgan(cfg, tmp_path / "a", device="cpu", domain=TinyBlobDomain(8))

    def sigterm_at_3(done: int, total: int, scalars: dict[str, float] | None) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_labelgan(cfg, tmp_path / "b", device="cpu", progress=sigterm_at_3, domain=TinyBlobDomain(8))
    assert first["status"] == "interrupted" and first["iteration"] == 3
    resumed = train_labelgan(cfg, tmp_path / "b", device="cpu", resume=True, domain=TinyBlobDomain(8))
    assert resumed["status"] == "completed" and resumed["iteration"] == 6
    a, b = _states(tmp_path / "a"), _states(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["L_G"] == resumed["L_G"] and straight["L_D"] == resumed["L_D"]


@pytest.fixture(scope="module", params=["simulator", "mean_image"])
def tiny_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / f"lg-{request.param}"
    train_labelgan(replace(TINY, source=request.param, iterations=4), run_dir, device="cpu", domain=TinyBlobDomain(8))
    return run_dir


def test_load_run_gives_the_standard_modules(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    options = json.loads((tiny_run / "training_options.json").read_text())
    assert (run.trainer, run.layout, run.iteration, run.net.nz) == ("labelgan", "digits", 4, 4)
    assert options["critic_steps"] == 5 and options["gp_lambda"] == 10.0 and options["betas"] == [0.5, 0.9]
    assert {"L_D", "W", "GP", "L_G", "L_P", "L_P/digit", "L_P/pose", "diversity"} <= set(run.metrics)
    assert set(run.modules.parts) == {"generator", "critic", "predictor", "simulator"}
    assert all(not m.training for m in (run.generator, run.image_predictor, run.simulator))
    labels = sample_prior(DIGITS, 5, torch.Generator().manual_seed(0))
    images = run.generator(torch.randn(5, 4), labels)
    assert images.shape == (5, 1, 8, 8) and run.image_predictor(images).shape == (5, 4 + 16)
    assert run.simulator(labels).shape == (5, 1, 8, 8)
    assert (tiny_run / "samples" / "iter_0000004.png").exists()


def test_export_bundle_runs_in_both_engines_and_the_engine_writes_a_shard(tiny_run: Path, tmp_path: Path) -> None:
    import webdataset as wds

    from models.engine import generate_dataset
    from models.export import export_run
    from models.runtime import Bundle
    from models.spec import parse_spec
    from worker.storage import LocalStorage

    out = export_run(tiny_run, tmp_path / "bundle")
    ts, ox = Bundle.load(out, engine="torchscript"), Bundle.load(out, engine="onnx")
    assert ts.manifest["trainer"] == "labelgan" and ts.manifest["trainer_config"]["source"] in ("simulator",
                                                                                                "mean_image")
    labels = sample_prior(DIGITS, 5, torch.Generator().manual_seed(1))  # batch 5 ≠ the export's batch 2
    z = torch.randn(5, 4)
    a, b = ts.generate(z, labels), ox.generate(z, labels)
    assert a.shape == (5, 1, 8, 8) and (a - b).abs().max() <= 1e-4
    for x, y in zip(ts.predict(a), ox.predict(a), strict=True):
        assert (x - y).abs().max() <= 1e-4
    zp, lp = ox.predict(a)
    assert zp.shape == (5, 4) and lp.shape == (5, 16)
    spec = parse_spec({"name": "lg", "bundle": "lg", "count": 6, "shard_size": 6, "seed": 1,
                       "image": {"format": "png"}, "labels": {"digit": {"fixed": 4}}})
    store = LocalStorage(tmp_path / "store")
    manifest = generate_dataset(spec, ox, store, "")
    url = str(store.local_path(manifest["shards"][0]["file"]))
    samples = list(wds.WebDataset([url], shardshuffle=False).decode("rgb"))
    assert len(samples) == 6 and all(s["cls"] == 4 and s["png"].shape[:2] == (8, 8) for s in samples)


# --- evaluation and the mean-image experiment ---------------------------------------------------------

def test_evaluation_and_mean_image_experiment_run_end_to_end_on_a_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path / "cache"))
    domain = TinyDigits(image_size=16, seed=0)
    cfg = replace(TINY, domain="tiny-digits", image_size=16, source="mean_image", iterations=3)
    train_labelgan(cfg, tmp_path / "run", device="cpu", domain=domain)
    model = from_run(tmp_path / "run")
    report = run_evaluation(model, domain, TINY_EVAL, tmp_path / "eval" / "report.json", mode="quick",
                            mean_image=True)  # `labelforge eval --mean-image`
    assert 0.0 <= report["summary"]["gen_digit_acc"] <= 1.0 and (tmp_path / "eval" / "digit_noise_grid.png").exists()
    figures = report["details"]["figures"]
    assert 0.0 <= figures["mean_image_acc"] <= 1.0
    assert figures["mean_image_fail_rate"] == pytest.approx(1 - figures["mean_image_acc"])
    target = next(t for t in report["targets"] if t["name"] == "mean_image_acc")
    assert target["threshold"] == 0.98 and target["value"] == figures["mean_image_acc"]
    assert (tmp_path / "eval" / "mean_image.png").exists()
    assert "(mean_image.png)" in (tmp_path / "eval" / "report.md").read_text()
    result = mean_image_experiment(model, domain, tmp_path / "again", MeanImageConfig(per_class=8, sheet_rows=3),
                                   eval_cfg=TINY_EVAL)  # the oracle comes from the evaluation's cache
    assert result.target["threshold"] == 0.98 and result.sheet.exists()


def _bar_reader(images: torch.Tensor) -> torch.Tensor:
    """A perfect oracle for TinyDigits' simulator bars: the class is the brightest row."""
    out = torch.zeros(len(images), DIGITS.dim)
    out[:, :10] = -1e3
    rows = images.mean(dim=(1, 3)).argmax(dim=1)  # [B]
    out[torch.arange(len(images)), rows] = 1.0
    return out


def test_mean_image_experiment_measures_what_the_oracle_reads(tmp_path: Path) -> None:
    """A model that draws the requested class scores 1; one that always draws a 3 scores 0.1 (3's column: 1)."""
    domain = TinyDigits(image_size=16)

    def model(draws: str) -> EvalModel:
        def generate(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            if draws == "three":
                labels = torch.zeros_like(labels)
                labels[:, 3] = 1
            return domain.simulate(labels)[0]

        return EvalModel(name=draws, source="test", path="-", domain="tiny-digits", layout=DIGITS, nz=4,
                         image_size=16, channels=1, generate=generate, predict=_bar_reader)

    cfg = MeanImageConfig(per_class=5, sheet_rows=2, mean_per_class=4)
    good = mean_image_experiment(model("requested"), domain, tmp_path, cfg, oracle=_bar_reader, prefix="good_")
    assert good.figures["mean_image_acc"] == 1.0 and good.target["pass"]
    bad = mean_image_experiment(model("three"), domain, tmp_path, cfg, oracle=_bar_reader, prefix="bad_")
    assert bad.figures["mean_image_acc"] == pytest.approx(0.1) and not bad.target["pass"]
    assert bad.figures["mean_image_acc/3"] == 1.0 and bad.figures["mean_image_acc/4"] == 0.0
    assert bad.figures["mean_image_cycle_acc"] == pytest.approx(0.1)
    sheet = np.asarray(Image.open(bad.sheet))
    assert sheet.shape[0] == 3 * (48 + 14 + 2) + 2 and sheet.shape[1] == 10 * (48 + 2) + 2  # means + 2 rows
    red = (sheet[..., 0] > 200) & (sheet[..., 1] < 80)
    assert red.any() and not (np.asarray(Image.open(good.sheet))[..., 0] > 200)[
        (np.asarray(Image.open(good.sheet))[..., 1] < 80)].any()  # wrong readings are captioned red, only there


def test_class_mean_images_of_the_digits_domain() -> None:
    from models.domains import get_domain

    means = class_mean_images(get_domain("digits", image_size=8), per_class=32, seed=0)
    assert means.shape == (10, 1, 8, 8) and 0 <= float(means.min()) and float(means.max()) <= 1
    dist = torch.cdist(means.flatten(1), means.flatten(1))
    assert float(dist[~torch.eye(10, dtype=torch.bool)].min()) > 0.1  # every class has its own template


# --- configuration errors -----------------------------------------------------------------------------

@pytest.mark.parametrize(("over", "message"), [
    ({"source": "photo"}, "source: must be one of"),
    ({"critic_steps": 0}, "critic_steps: must be ≥ 1"),
    ({"part_weights": {"digit": -1.0}}, "part_weights: weights must be ≥ 0"),
    ({"predictor_renders": -0.5}, "predictor_renders: must be ≥ 0"),
    ({"refiner_width": 1}, "refiner_width"),
])
def test_bad_config_names_the_field(over: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(TINY, **over).validate()


def test_unknown_part_and_mean_image_without_classes_fail_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="part_weights.angles: unknown part; layout 'digits' has digit, pose, stroke"):
        train_labelgan(replace(TINY, part_weights={"angles": 100.0}), tmp_path / "x", domain=TinyBlobDomain(8))
    from tests.models.test_evaluation import TinyFaces

    with pytest.raises(ValueError, match="needs exactly one categorical label field; layout 'faces' has 0"):
        train_labelgan(replace(TINY, source="mean_image", domain="tiny-faces"), tmp_path / "y",
                       domain=TinyFaces(image_size=8))


def test_cli_refuses_the_mean_image_source_on_a_domain_without_classes_and_writes_nothing(tmp_path: Path) -> None:
    """faces-m has no class field to take templates of: exit 2 naming `source`, no empty run directory left."""
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, [
        "train", "labelgan", "--config", "configs/labelgan-faces-m.yaml", "--out", str(tmp_path / "x"),
        "--device", "cpu", "--set", "source=mean_image", "--set", "image_size=8",
        "--set", "domain_kwargs={real_train_count: 8, real_test_count: 4}"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "source: 'mean_image' needs exactly one categorical label field" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
