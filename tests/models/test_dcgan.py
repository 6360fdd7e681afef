"""The `dcgan` trainer (seed 004) and its probe: nets, losses, exact resume, run → bundle → eval/engine,
the linear probe on real digits and the latent-arithmetic sheet. Tiny CPU configs throughout."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from models.evaluation.dcgan_probe import (
    ArithmeticConfig,
    ProbeConfig,
    arithmetic_sheet,
    class_mean,
    linear_probe,
    probe_run,
)
from models.networks.dcgan import DCGANDiscriminator, DCGANGenerator, DCGANNetConfig, init_weights
from models.trainers import load_run
from models.trainers.dcgan import DCGANConfig, d_loss, fit_ridge, g_loss, train_dcgan
from tests.models.tiny_domain import TinyBlobDomain

torch.set_num_threads(1)

TINY = DCGANConfig(domain="tiny-blobs", image_size=8, batch_size=8, iterations=6, nz=4, ngf=4, ndf=4, head_count=64,
                   simulator_c=4, simulator_steps=5, simulator_batch=8, log_every=2, sample_every=4,
                   checkpoint_every=100, seed=3)
DIGITS8 = replace(TINY, domain="digits", iterations=30, batch_size=32, nz=8, ngf=8, ndf=16, head_count=256,
                  log_every=10, sample_every=30)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short DCGAN run on the real digits domain at 8×8 (shared by the run/bundle/eval/probe tests)."""
    run_dir = tmp_path_factory.mktemp("dcgan") / "digits8"
    train_dcgan(DIGITS8, run_dir, device="cpu")
    return run_dir


# --- networks and losses ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [8, 32, 64])
def test_networks_have_the_seed_architecture_and_shapes(size: int) -> None:
    arch = DCGANNetConfig(image_size=size, channels=3, nz=100, ngf=8, ndf=8)
    G, D = DCGANGenerator(arch), DCGANDiscriminator(arch)
    images = G(torch.randn(5, 100))
    assert images.shape == (5, 3, size, size) and float(images.detach().abs().max()) <= 1.0  # tanh
    assert D(images).shape == (5,)
    assert D.features(images).shape == (5, arch.feature_dim())
    if size == 64:  # the seed's 64×64 net: 8·ngf at 4×4 halving to ngf; D mirrors it
        assert arch.g_widths() == [64, 32, 16, 8] and arch.d_widths() == [8, 16, 32, 64]
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.stages[0])  # no BN on D's input layer


def test_d_and_g_losses_fall_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    arch = DCGANNetConfig(image_size=8, channels=1, nz=4, ngf=8, ndf=8)
    G, D = DCGANGenerator(arch), DCGANDiscriminator(arch)
    init_weights(G)
    init_weights(D)
    real = TinyBlobDomain(8).real_train().images[:16] * 2 - 1
    z = torch.randn(16, 4)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))  # 10× the seed's: a short test
    with torch.no_grad():
        fake = G(z)
    d_losses = []
    for _ in range(30):
        loss = d_loss(D(real), D(fake))
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        d_losses.append(float(loss.detach()))
    assert d_losses[-1] < 0.8 * d_losses[0]
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    g_losses = []
    for _ in range(30):
        loss = g_loss(D(G(z)))
        opt_g.zero_grad()
        loss.backward(inputs=list(G.parameters()))
        opt_g.step()
        g_losses.append(float(loss.detach()))
    assert g_losses[-1] < 0.8 * g_losses[0]


def test_ridge_head_recovers_a_linear_map_and_ignores_dead_features() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 20, generator=gen) * torch.linspace(0.1, 10, 20)  # scales differ: standardization
    x[:, 5] = 3.0  # a dead feature (constant) must not produce NaN
    w = torch.randn(20, 3, generator=gen)
    y = x @ w + 2.0 + 0.01 * torch.randn(300, 3, generator=gen)
    fit = fit_ridge(x, y, 0.2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = fit.head(x)
    assert torch.isfinite(pred).all()
    assert float(((pred - y) ** 2).mean() / y.var()) < 1e-3
    assert fit.ratio <= 1e-2  # nearly noise-free: the held-out split picks a small λ


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="label_conditioned: DCGAN is unconditional"):
        replace(TINY, label_conditioned=True).validate()
    with pytest.raises(ValueError, match="betas: must be two values"):
        replace(TINY, betas=(0.5, 1.5)).validate()


# --- training: exact resume -------------------------------------------------------------------------

def _states(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    flat = {f"{m}.{k}": v for m, sd in ckpt["models"].items() for k, v in sd.items()}
    for opt, sd in ckpt["optimizers"].items():
        for pid, st in sd["state"].items():
            flat.update({f"opt.{opt}.{pid}.{k}": v for k, v in st.items()})
    return flat


def test_interrupted_and_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path: Path) -> None:
    straight = train_dcgan(TINY, tmp_path / "a", device="cpu", domain=TinyBlobDomain(8))

    def sigterm_at_3(done: int, total: int, scalars: dict[str, float] | None) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_dcgan(TINY, tmp_path / "b", device="cpu", progress=sigterm_at_3, domain=TinyBlobDomain(8))
    assert (first["status"], first["iteration"]) == ("interrupted", 3)
    resumed = train_dcgan(TINY, tmp_path / "b", device="cpu", resume=True, domain=TinyBlobDomain(8))
    assert (resumed["status"], resumed["iteration"]) == ("completed", 6)
    a, b = _states(tmp_path / "a"), _states(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key in ("L_D", "L_G", "D_x", "D_G_z1", "D_G_z2", "head_label_val_mse"):
        assert straight[key] == resumed[key], key


# --- the run as RunModules, as a bundle, in the evaluation and the engine ----------------------------

def test_load_run_gives_an_unconditional_generator_and_a_d_feature_predictor(digits_run: Path) -> None:
    run = load_run(digits_run)
    assert (run.trainer, run.domain, run.layout, run.iteration) == ("dcgan", "digits", "digits", 30)
    assert run.config["label_conditioned"] is False and run.config["lr_g"] == 2e-4
    assert (run.net.nz, run.net.image_size, run.net.channels, run.net.label_dim) == (8, 8, 1, 16)
    assert {"L_D", "L_G", "D_x", "D_G_z2", "head_label_val_mse", "head_noise_val_mse"} <= set(run.metrics)
    assert all(math.isfinite(v) for v in run.metrics.values())
    z = torch.randn(6, 8)
    l1, l2 = torch.zeros(6, 16), torch.randn(6, 16)
    images = run.generator(z, l1)
    assert images.shape == (6, 1, 8, 8) and float(images.detach().min()) >= 0.0 and float(images.detach().max()) <= 1.0
    assert torch.equal(images, run.generator(z, l2))  # labels do not reach the image
    assert run.image_predictor(images).shape == (6, 8 + 16)
    assert run.simulator(l2).shape == (6, 1, 8, 8)
    logged = [json.loads(x) for x in (digits_run / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logged if "L_D" in x] == [10, 20, 30]
    assert [x["iteration"] for x in logged if x.get("phase") == "head"] == [30]
    assert (digits_run / "samples" / "iter_0000030.png").exists()


def test_exported_bundle_generates_predicts_says_unconditional_and_feeds_the_engine(digits_run: Path,
                                                                                    tmp_path: Path) -> None:
    from models.engine import generate_dataset
    from models.export import export_run
    from models.runtime import Bundle
    from models.spec import parse_spec
    from worker.storage import LocalStorage

    path = export_run(digits_run, tmp_path / "bundles" / "dcgan-digits8")
    onnx, ts = Bundle.load(path, engine="onnx"), Bundle.load(path, engine="torchscript")
    assert onnx.manifest["trainer"] == "dcgan" and onnx.manifest["trainer_config"]["label_conditioned"] is False
    z, labels = torch.randn(5, 8), torch.randn(5, 16)
    images = onnx.generate(z, labels)
    torch.testing.assert_close(images, ts.generate(z, labels), atol=1e-4, rtol=0)
    torch.testing.assert_close(images, onnx.generate(z, torch.zeros(5, 16)), atol=1e-6, rtol=0)
    torch.testing.assert_close(images, load_run(digits_run).generator(z, labels), atol=1e-4, rtol=0)
    z_hat, l_hat = onnx.predict(images)
    assert z_hat.shape == (5, 8) and l_hat.shape == (5, 16)
    torch.testing.assert_close(ts.predict(images)[1], l_hat, atol=1e-3, rtol=1e-3)

    spec = parse_spec({"name": "dc", "bundle": "dcgan-digits8", "count": 12, "shard_size": 5, "seed": 1,
                       "image": {"format": "png"}, "labels": {"digit": {"fixed": 3}}})
    store = LocalStorage(tmp_path / "store")
    manifest = generate_dataset(spec, onnx, store, "ds/")
    assert [s["count"] for s in manifest["shards"]] == [5, 5, 2]
    urls = [str(store.local_path("ds/" + s["file"])) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb"))
    assert len(samples) == 12 and all(s["cls"] == 3 and s["png"].shape == (8, 8, 3) for s in samples)


def test_evaluation_runs_end_to_end_on_the_run(digits_run: Path, tmp_path: Path, monkeypatch) -> None:
    from models.domains import get_domain
    from models.evaluation import EvalConfig, PredictorConfig, from_run, run_evaluation

    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = EvalConfig(seed=0, gen_count=40, real_test_max=60, oracle_count=96, source_count=96,
                     predictor=PredictorConfig(width=8, feature_dim=16, epochs=2, batch_size=64),
                     kid_subsets=4, kid_subset_size=20, div_labels=3, div_noise=4, batch_size=32, sheet_columns=6)
    report = run_evaluation(from_run(digits_run), get_domain("digits", image_size=8), cfg, tmp_path / "report.json",
                            mode="quick")
    assert report["model"]["trainer"] == "dcgan"
    assert {"gen_digit_acc", "pred_acc", "oracle_acc", "gap_closed"} <= set(report["summary"])
    assert all(0.0 <= report["summary"][k] <= 1.0 for k in ("gen_digit_acc", "pred_acc", "oracle_acc"))
    assert (tmp_path / "digit_noise_grid.png").exists()


# --- the probe: D features vs raw pixels, latent arithmetic ----------------------------------------

def test_linear_probe_selects_on_the_train_split_only() -> None:
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data[:600], data.target[:600]
    cfg = ProbeConfig(c_grid=(1e-2, 1.0), folds=3)
    honest = linear_probe(x[:400], y[:400], x[400:], y[400:], cfg)
    shuffled = linear_probe(x[:400], y[:400], x[400:], np.random.default_rng(0).permutation(y[400:]), cfg)
    assert honest["test_acc"] > 0.75 and honest["dim"] == 64
    # test labels only enter the final score: the chosen C and the CV figure cannot depend on them
    assert (shuffled["C"], shuffled["cv_acc"]) == (honest["C"], honest["cv_acc"])
    assert shuffled["test_acc"] < 0.5


def _toy_generate(z: torch.Tensor) -> torch.Tensor:
    """z [B, 16] → 1×4×4 images in [0, 1]: pixel j = sigmoid(z_j)."""
    return torch.sigmoid(z).view(-1, 1, 4, 4)


def _toy_read(images: torch.Tensor) -> torch.Tensor:
    """Class = the brightest of the first 4 pixels (a stand-in oracle over 4 classes)."""
    return (20 * images.flatten(1)[:, :4]).softmax(1)


def test_arithmetic_sheet_decodes_mean_a_minus_b_plus_c(tmp_path: Path) -> None:
    cfg = ArithmeticConfig(triples=((0, 1, 2), (3, 7, 1)), count=200, per_class=3, variants=4, jitter=0.25, seed=5)
    out = arithmetic_sheet(_toy_generate, _toy_read, 16, cfg, tmp_path / "sheet.png")
    first, missing = out["triples"]
    assert "skipped" in missing and "class 7" in missing["skipped"]  # the toy oracle has 4 classes
    assert sum(out["generated_read_as"]) == 200 and len(out["generated_read_as"]) == 4
    # recompute the first triple by hand from the same seeded draws
    from models.evaluation.pools import derived_seed

    z = torch.randn(200, 16, generator=torch.Generator().manual_seed(derived_seed(5, "dcgan-arithmetic")))
    probs = _toy_read(_toy_generate(z))
    means = [class_mean(z, probs, c, 3)[0] for c in (0, 1, 2)]
    expected = _toy_read(_toy_generate((means[0] - means[1] + means[2])[None])).argmax(1).item()
    assert first["result_read_as"][0] == expected and len(first["result_read_as"]) == 4
    with Image.open(tmp_path / "sheet.png") as img:  # 1 row; 3 × (3 + mean + blank) + 4 results = 19 cells
        assert img.size == (2 + 19 * (64 + 2), 2 + 64 + 2)
    with pytest.raises(ValueError, match="class 9: only 0 of"):
        class_mean(z, probs, 9, 3)


def test_probe_run_scores_d_features_and_pixels_on_real_digits(digits_run: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    from models.evaluation import EvalConfig, PredictorConfig

    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path / "cache"))
    evaluation = EvalConfig(seed=0, oracle_count=0, predictor=PredictorConfig(width=8, feature_dim=16, epochs=2))
    arithmetic = ArithmeticConfig(triples=((1, 0, 7),), count=300)
    report = probe_run(digits_run, tmp_path / "probe", probe=ProbeConfig(c_grid=(1e-2,), folds=2),
                       evaluation=evaluation, arithmetic=arithmetic)
    lp = report["linear_probe"]
    assert (lp["train_count"], lp["test_count"], lp["field"]) == (1297, 500, "digit")  # train split / test split
    assert lp["raw_pixels"]["dim"] == 64 and lp["d_features"]["dim"] == 16 * 16
    assert lp["raw_pixels"]["test_acc"] > 0.9  # linear SVM on 8×8 real digits
    assert 0.1 < lp["d_features"]["test_acc"] <= 1.0
    saved = json.loads((tmp_path / "probe" / "dcgan_probe.json").read_text())
    assert saved["linear_probe"]["d_features"] == lp["d_features"]
    sheet = report["latent_arithmetic"]
    assert sum(sheet["generated_read_as"]) == 300 and len(sheet["triples"]) == 1
    assert sheet["png"] is None or (tmp_path / "probe" / sheet["png"]).exists()
