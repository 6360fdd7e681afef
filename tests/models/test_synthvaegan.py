"""SYNTH-VAE-GAN (seed 003) on tiny CPU configs, and the seed's disentanglement figures for any model.

Trainer: net shapes, whitened independent attributes, the equalizing and exploratory regularizers,
losses that fall, exact resume, load_run → export → bundle → engine shard, and `labelforge eval`'s
code path on the run. Disentanglement: Δ′ and the correlation table on stand-in models whose answer
is known by construction.
"""

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

from models.domains.base import Domain, RealSplit
from models.evaluation import EvalConfig, EvalModel, PredictorConfig, from_run, run_evaluation
from models.evaluation.disentanglement import DisentanglementConfig, attributes_of, disentanglement
from models.layouts import DIGITS, FACES, sample_prior
from models.networks.synthvaegan import (
    Decoder,
    Discriminator,
    RealEncoder,
    SyntheticEncoder,
    SynthGenerator,
    SynthImagePredictor,
    SynthNetConfig,
    Whitening,
)
from models.trainers.run import load_run
from models.trainers.synthvaegan import (
    SynthVAEGANConfig,
    SynthVAEGANLoop,
    build_nets,
    equalizing_noise,
    evaluate_synth_encoder,
    fit_synth_encoder,
    lr_at,
    sample_independent_attributes,
    train_synthvaegan,
)
from tests.models.tiny_domain import TinyBlobDomain

torch.set_num_threads(1)

TINY = SynthVAEGANConfig(
    domain="tiny-blobs", image_size=8, batch_size=8, iterations=6, width=4, hidden=16, net={"c": 4, "nz": 4},
    synth_steps=10, synth_batch=8, simulator_steps=10, simulator_batch=8, log_every=2, sample_every=4,
    checkpoint_every=100, seed=3,
)
SNET = SynthNetConfig(image_size=8, channels=1, label_dim=DIGITS.dim, nz=4, width=4, hidden=16)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "sv"
    train_synthvaegan(TINY, run_dir, device="cpu", domain=TinyBlobDomain(8))
    return run_dir


# --- networks and the seed's ingredients ----------------------------------------------------------

@pytest.mark.parametrize("size", [8, 32])
def test_network_shapes_and_bundle_wrappers(size: int) -> None:
    cfg = replace(SNET, image_size=size, channels=3)
    torch.manual_seed(0)
    x = torch.rand(5, 3, size, size)
    m, log_b = SyntheticEncoder(cfg)(x)
    mu, logvar = RealEncoder(cfg)(x)
    assert m.shape == log_b.shape == (5, 16) and mu.shape == logvar.shape == (5, 4)
    dec = Decoder(cfg)
    images = dec(torch.randn(5, 16 + 4))
    assert images.shape == (5, 3, size, size) and images.min() >= 0 and images.max() <= 1
    assert Discriminator(cfg)(x).shape == (5,)
    with pytest.raises(ValueError, match="Decoder code"):
        dec(torch.randn(5, 16))

    white = Whitening.for_layout(DIGITS, 2.0)
    enc_s, enc_r = SyntheticEncoder(cfg), RealEncoder(cfg)
    out = SynthImagePredictor(enc_s, enc_r, white)(x)  # concat(z̃, l̃ in standardized units)
    torch.testing.assert_close(out[:, :4], enc_r(x)[0])
    torch.testing.assert_close(out[:, 4:], white.unwhiten(enc_s(x)[0]))
    labels, z = sample_prior(DIGITS, 5), torch.randn(5, 4)
    torch.testing.assert_close(SynthGenerator(dec, white)(z, labels), dec(torch.cat([white.whiten(labels), z], 1)))


def test_synthetic_attributes_are_independent_and_whitened() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = sample_independent_attributes(DIGITS, 20_000, 2.0, gen)  # [N, 16]
    cont = labels[:, 10:]
    assert cont.abs().max() <= 2.0 and torch.allclose(labels[:, :10].sum(1), torch.ones(len(labels)))
    w = Whitening.for_layout(DIGITS, 2.0).whiten(labels)
    assert w.mean(0).abs().max() < 0.05 and (w.std(0) - 1).abs().max() < 0.05  # every slot whitened
    corr = torch.corrcoef(w[:, 9:].T)  # last class slot + the 6 continuous attributes
    assert (corr - torch.eye(7)).abs().max() < 0.05  # independent, whatever the real data's statistics
    white = Whitening.for_layout(FACES, 2.0)
    x = torch.randn(4, FACES.dim)
    torch.testing.assert_close(white.unwhiten(white.whiten(x)), x)


def test_equalizing_noise_is_small_on_some_images_and_large_on_others() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.full((400, 1, 16, 16), 0.5)
    per_image = (equalizing_noise(x, 0.2, gen) - x).flatten(1).std(1)  # ≈ |σ_i|, σ_i ~ N(0, 0.2)
    assert per_image.min() < 0.02 and per_image.max() > 0.4
    assert per_image.mean() == pytest.approx(0.2 * math.sqrt(2 / math.pi), rel=0.1)
    assert torch.equal(equalizing_noise(x, 0.0, gen), x)


def test_exploratory_regularizer_widens_the_attribute_code(tmp_path: Path) -> None:
    domain = TinyBlobDomain(8)
    enc, white = SyntheticEncoder(SNET).eval(), Whitening.for_layout(DIGITS, 2.0)
    loop = SynthVAEGANLoop(TINY, domain, build_nets(TINY, SNET, torch.nn.Identity(), enc, white, domain.device),
                           tmp_path)
    x = domain.real_train().images[:32]
    eps = torch.randn(32, 16, generator=torch.Generator().manual_seed(2))
    z_all, m = loop.attribute_code(x, eps, torch.ones(32))
    z_none, _ = loop.attribute_code(x, eps, torch.zeros(32))
    torch.testing.assert_close(z_all - m, TINY.sigma_explore * eps)  # σ(l) replaced by σ_explore = 2
    with torch.no_grad():
        b = enc(x)[1].exp()  # E_s's Laplace scale: its own σ(l) = √2·b when not exploring
    torch.testing.assert_close(z_none - m, math.sqrt(2) * b * eps)
    draws = torch.stack([loop.draw()["explore"] for _ in range(400)])  # p = 0.01 per image
    assert 0.003 < float(draws.mean()) < 0.02


def test_learning_rate_drops_by_four_at_one_and_two_thirds() -> None:
    cfg = replace(TINY, iterations=30, lr=1e-3)
    assert [lr_at(cfg, i) for i in (0, 9, 10, 19, 20, 29)] == [1e-3, 1e-3, 2.5e-4, 2.5e-4, 6.25e-5, 6.25e-5]


# --- losses move the right way ----------------------------------------------------------------------

def test_synthetic_encoder_learns_the_attributes(tmp_path: Path) -> None:
    domain = TinyBlobDomain(8)
    cfg = replace(TINY, synth_steps=150, synth_batch=32, synth_lr=3e-3, log_every=50)
    white = Whitening.for_layout(DIGITS, cfg.attribute_range)
    torch.manual_seed(0)
    enc = SyntheticEncoder(replace(SNET, width=8, hidden=32))
    before = evaluate_synth_encoder(cfg, domain, enc, white)["synth_L1_heldout"]
    after = fit_synth_encoder(cfg, domain, enc, white, tmp_path)["synth_L1_heldout"]
    assert after < 0.8 * before
    assert [json.loads(x)["iteration"] for x in (tmp_path / "log.jsonl").read_text().splitlines()] == [50, 100, 150]


def test_vae_gan_losses_fall_on_a_fixed_batch(tmp_path: Path) -> None:
    domain = TinyBlobDomain(8)
    cfg = replace(TINY, batch_size=16, iterations=1000, lr=2e-3)
    enc, white = SyntheticEncoder(SNET).eval().requires_grad_(False), Whitening.for_layout(DIGITS, 2.0)
    loop = SynthVAEGANLoop(cfg, domain, build_nets(cfg, SNET, torch.nn.Identity(), enc, white, domain.device),
                           tmp_path)
    batch = loop.draw()
    first = []
    for i in range(80):
        loop.step(batch)
        if i == 0:
            first = loop.flush_scalars()
    last = loop.flush_scalars()  # means over iterations 2..80
    loop.step(batch)
    end = loop.flush_scalars()
    assert end["L_r"] < 0.6 * first["L_r"]  # reconstruction
    assert last["L_D"] < min(first["L_D"], math.log(4))  # D tells real from reconstructed (chance: log 4)


# --- runs: resume, load, export, engine, evaluation -------------------------------------------------

def _states(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    flat = {f"{m}.{k}": v for m, sd in ckpt["models"].items() for k, v in sd.items()}
    for opt, sd in ckpt["optimizers"].items():
        flat.update({f"{opt}.{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()})
    return flat


def test_interrupted_and_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path: Path) -> None:
    straight = train_synthvaegan(TINY, tmp_path / "a", device="cpu", domain=TinyBlobDomain(8))
    assert straight["status"] == "completed" and straight["iteration"] == 6

    def sigterm_at_3(done: int, total: int, scalars: dict[str, float] | None) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_synthvaegan(TINY, tmp_path / "b", device="cpu", progress=sigterm_at_3, domain=TinyBlobDomain(8))
    assert first["status"] == "interrupted" and first["iteration"] == 3
    resumed = train_synthvaegan(TINY, tmp_path / "b", device="cpu", resume=True, domain=TinyBlobDomain(8))
    assert resumed["status"] == "completed" and resumed["iteration"] == 6
    a, b = _states(tmp_path / "a"), _states(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["L_G"] == resumed["L_G"] and straight["L_D"] == resumed["L_D"]


def test_load_run_export_bundle_and_generate_a_shard(tiny_run: Path, tmp_path: Path) -> None:
    from models.engine import generate_dataset
    from models.export import export_run
    from models.runtime import Bundle
    from models.spec import parse_spec
    from worker.storage import LocalStorage

    run = load_run(tiny_run)
    assert (run.trainer, run.domain, run.layout, run.iteration) == ("synthvaegan", "tiny-blobs", "digits", 6)
    assert {"L_G", "L_r", "L_l", "L_g", "L_D", "z_da_std"} <= set(run.metrics)
    assert {"simulator", "synth_encoder", "real_encoder", "decoder", "discriminator"} <= set(run.modules.parts)
    z, labels = torch.randn(5, 4), sample_prior(DIGITS, 5)
    images = run.generator(z, labels)
    assert images.shape == (5, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert (tiny_run / "synth_encoder.pt").exists() and (tiny_run / "samples" / "iter_0000004.png").exists()

    bundle_dir = export_run(tiny_run, tmp_path / "bundles" / "sv-digits")
    for engine in ("onnx", "torchscript"):
        bundle = Bundle.load(bundle_dir, engine=engine)
        assert bundle.manifest["trainer"] == "synthvaegan" and bundle.nz == 4
        torch.testing.assert_close(bundle.generate(z, labels), images, atol=1e-4, rtol=0)
        z_hat, l_hat = bundle.predict(images)
        with torch.no_grad():
            ref = run.image_predictor(images)
        torch.testing.assert_close(torch.cat([z_hat, l_hat], 1), ref, atol=1e-4, rtol=1e-4)

    spec = parse_spec({"name": "sv-t", "bundle": "sv-digits", "count": 6, "shard_size": 6, "seed": 1,
                       "image": {"format": "png"}, "labels": {"digit": {"fixed": 3}}})
    store = LocalStorage(tmp_path / "store")
    manifest = generate_dataset(spec, Bundle.load(bundle_dir), store, "")
    samples = list(wds.WebDataset([str(store.local_path(manifest["shards"][0]["file"]))],
                                  shardshuffle=False).decode("rgb"))
    assert len(samples) == 6 and all(s["json"]["labels"]["digit"] == 3 for s in samples)
    assert all(np.argmax(s["labels.npy"][:10]) == 3 for s in samples)


def test_evaluation_and_disentanglement_run_on_the_trained_run(tiny_run: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path / "cache"))
    model = from_run(tiny_run)
    domain = TinyBlobDomain(8)
    cfg = EvalConfig(seed=3, gen_count=40, real_test_max=48, oracle_count=64, source_count=64,
                     predictor=PredictorConfig(width=8, feature_dim=16, epochs=2, batch_size=16),
                     kid_subsets=4, kid_subset_size=20, div_labels=3, div_noise=4, batch_size=32, sheet_columns=6)
    report = run_evaluation(model, domain, cfg, tmp_path / "eval" / "report.json", mode="quick")
    assert report["model"]["trainer"] == "synthvaegan" and math.isfinite(report["summary"]["kid_gen_real"])

    dis = disentanglement(model, domain, DisentanglementConfig(pairs=16))
    assert dis.delta_prime.shape == (7, 7) and dis.corr.shape == (6, 6)
    assert all(math.isfinite(v) for v in dis.figures.values())
    assert "## Disentanglement" in dis.markdown() and json.dumps(dis.as_dict())


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="p_explore: must be in"):
        replace(TINY, p_explore=1.5).validate()
    with pytest.raises(ValueError, match="attribute_range"):
        replace(TINY, attribute_range=0.0).validate()


# --- Δ′ and the correlation table on stand-ins with known answers ----------------------------------

class VectorDomain(Domain):
    """Images ARE label vectors (16 values as a 1×4×4 image). Real test labels: one-hot classes and
    continuous slots standardized exactly (mean 0, std 1), with thickness = 0.8·rotation + 0.6·noise."""

    name = "vector"
    layout = DIGITS
    channels = 1

    def __init__(self) -> None:
        super().__init__(image_size=4)
        gen = torch.Generator().manual_seed(7)
        labels = sample_prior(DIGITS, 400, gen)
        labels[:, 11] = 0.8 * labels[:, 10] + 0.6 * labels[:, 11]
        cont = labels[:, 10:]
        labels[:, 10:] = (cont - cont.mean(0)) / cont.std(0)
        self.labels = labels

    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_prior(DIGITS, n, generator)

    def simulate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = labels.view(-1, 1, 4, 4)
        return images, torch.ones_like(images)

    def real_train(self) -> RealSplit:
        return RealSplit(self.labels.view(-1, 1, 4, 4))

    def real_test(self) -> RealSplit:
        return RealSplit(self.labels.view(-1, 1, 4, 4), self.labels)


def _vector_model(mix: torch.Tensor, nz: int = 2) -> EvalModel:
    """G writes the label vector with its 6 continuous slots mixed by `mix` [6, 6]; P reads pixels back."""

    def generate(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = labels.clone()
        out[:, 10:] = labels[:, 10:] @ mix.T
        return out.view(-1, 1, 4, 4)

    return EvalModel(name="vec", source="test", path="-", domain="vector", layout=DIGITS, nz=nz, image_size=4,
                     channels=1, generate=generate, predict=lambda images: images.flatten(1))


def test_a_disentangled_model_has_the_identity_as_delta_prime() -> None:
    dis = disentanglement(_vector_model(torch.eye(6)), VectorDomain(), DisentanglementConfig(pairs=64))
    assert dis.attributes == ["digit", "rotation_deg", "thickness", "scale", "slant", "dx", "dy"]
    torch.testing.assert_close(dis.delta_prime, torch.eye(7))
    fig = dis.figures
    assert fig["dis_delta_prime_off"] == 0 and fig["dis_delta_prime_on"] == 1 and fig["dis_contrast"] == math.inf
    torch.testing.assert_close(dis.delta[1:, 1:], 2.0 * torch.eye(6))  # a 2σ step read in real-σ units


def test_delta_prime_measures_how_much_a_change_leaks_into_other_attributes() -> None:
    mix = torch.eye(6)
    mix[1, 0] = 0.5  # changing rotation also moves what is read as thickness, by half as much
    mix[3, 2] = -0.25  # changing scale moves slant the opposite way, by a quarter
    dis = disentanglement(_vector_model(mix), VectorDomain(), DisentanglementConfig(pairs=64))
    dp = dis.delta_prime
    assert dp[1, 2] == pytest.approx(0.5) and dp[3, 4] == pytest.approx(0.25)
    assert dp[2, 1] == 0 and dp.diagonal().min() == 1
    fig = dis.figures
    assert fig["dis_delta_prime_off"] == pytest.approx(0.75 / 42)  # two leaks among 7·6 off-diagonal cells
    assert fig["dis_contrast"] == math.inf  # median row: nothing leaks
    md = dis.markdown()
    assert "| `rotation_deg` | 0.00 | 1.00 | 0.50 |" in md


def test_correlation_table_reads_real_images_and_the_truth_is_the_reference() -> None:
    domain = VectorDomain()
    dis = disentanglement(_vector_model(torch.eye(6)), domain, DisentanglementConfig(pairs=8))
    cont = domain.labels[:, 10:].numpy().astype(np.float64)
    expected = torch.tensor(np.corrcoef(cont.T), dtype=torch.float32)
    torch.testing.assert_close(dis.corr, expected, atol=1e-5, rtol=0)
    assert dis.corr[0, 1] == pytest.approx(0.8, abs=0.05) and dis.corr_truth is not None
    torch.testing.assert_close(dis.corr_truth, expected, atol=1e-5, rtol=0)
    off = ~torch.eye(6, dtype=torch.bool)
    assert dis.figures["dis_corr_abs_mean"] == pytest.approx(float(expected[off].abs().mean()), abs=1e-5)
    oracle = disentanglement(_vector_model(torch.eye(6)), domain, DisentanglementConfig(pairs=8),
                             reader=lambda images: images.flatten(1), reader_name="oracle")
    assert set(oracle.figures) == {f"dis_oracle_{k[4:]}" for k in dis.figures}


def test_a_generator_that_ignores_labels_has_no_response_and_undefined_delta_prime() -> None:
    model = _vector_model(torch.eye(6))
    model.generate = lambda z, labels: torch.zeros(len(z), 1, 4, 4)
    fig = disentanglement(model, VectorDomain(), DisentanglementConfig(pairs=8)).figures
    assert fig["dis_target_response"] == 0 and math.isnan(fig["dis_delta_prime_off"])


def test_faces_attributes_are_the_angles_and_the_leading_components() -> None:
    names = [a.name for a in attributes_of(FACES, 2)]
    assert names == ["shape[0]", "shape[1]", "texture[0]", "texture[1]", "yaw_deg", "pitch_deg"]
    assert [a.slot for a in attributes_of(FACES, 2)] == [0, 1, 199, 200, 398, 399]
