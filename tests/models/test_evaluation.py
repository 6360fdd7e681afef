"""Evaluation: metric arithmetic with known answers, the baseline cache, and a tiny end-to-end report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.domains.base import Domain, RealSplit
from models.evaluation import EvalConfig, EvalModel, PredictorConfig, metrics, run_evaluation
from models.evaluation.predictors import LabelCNN, cache_path, cached_predictor, train_predictor
from models.layouts import DIGITS, FACES, LabelLayout, sample_prior

torch.set_num_threads(2)

DIS_KEYS = {"delta_prime_off", "attr_corr_abs_mean"}  # seed 003's Δ′ and mean |attribute correlation|
DIGITS_KEYS = {"gen_digit_acc", "gen_digit_acc_ceiling", "pred_acc", "source_only_acc", "oracle_acc", "gap_closed",
               *DIS_KEYS}
FACES_KEYS = {"gen_yaw_mae_deg", "gen_pitch_mae_deg", "gen_shape10_rmse", "prior_shape10_rmse",
              "pred_yaw_mae_deg", "pred_pitch_mae_deg", "source_only_yaw_mae_deg", "oracle_yaw_mae_deg",
              "gap_closed", "kid_gen_real", "kid_sim_real", *DIS_KEYS}


# --- metrics with known answers -------------------------------------------------------------------

def test_kid_matches_hand_computed_value() -> None:
    # k(a, b) = (a·b + 1)³ on 1-d features {0, 1} vs {0, 1}: k_xx off-diagonal = 1, so each within-set
    # term is 1; the cross term averages (1 + 1 + 1 + 8) / 4. MMD² = 1 + 1 − 2 · 11/4 = −3.5.
    x = torch.tensor([[0.0], [1.0]])
    mean, _ = metrics.kid(x, x.clone(), subsets=3, subset_size=2)
    assert mean == pytest.approx(-3.5)


def test_kid_is_near_zero_for_identical_distributions_and_positive_for_shifted_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    feats, other = torch.randn(400, 16, generator=gen), torch.randn(400, 16, generator=gen)
    same, same_std = metrics.kid(feats, other, subsets=20, subset_size=200)
    shifted, shifted_std = metrics.kid(feats, other + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3  # unbiased: zero up to subset noise
    assert shifted > 0.5 and shifted > 10 * shifted_std
    assert shifted > 20 * abs(same)


def test_gap_closed_arithmetic() -> None:
    assert metrics.gap_closed(source=10.0, ours=4.0, oracle=2.0) == pytest.approx(0.75)
    assert metrics.gap_closed(source=0.6, ours=0.9, oracle=1.0, higher_is_better=True) == pytest.approx(0.75)
    assert metrics.gap_closed(source=10.0, ours=12.0, oracle=2.0) == pytest.approx(-0.25)  # worse than source
    assert math.isnan(metrics.gap_closed(source=3.0, ours=1.0, oracle=3.0))


def test_angle_mae_is_in_degrees_from_the_layout_scale() -> None:
    target = sample_prior(FACES, 32, torch.Generator().manual_seed(1))
    pred = target.clone()
    pred[:, FACES["yaw_deg"].start] += 0.1  # 0.1 σ of yaw = 3°
    pred[:, FACES["pitch_deg"].start] -= 0.2  # 0.2 σ of pitch = 3°
    assert metrics.field_mae(pred, target, FACES["yaw_deg"]) == pytest.approx(0.1 * FACES["yaw_deg"].scale)
    assert metrics.field_mae(pred, target, FACES["pitch_deg"]) == pytest.approx(0.2 * FACES["pitch_deg"].scale)
    assert metrics.field_mae(pred, target, FACES["yaw_deg"]) == pytest.approx(3.0)


def test_shape_rmse_uses_only_the_first_components() -> None:
    target = torch.zeros(4, FACES.dim)
    pred = target.clone()
    pred[:, :10] = 2.0  # the first 10 shape coefficients off by 2σ
    pred[:, 10:199] = 100.0  # later ones ignored by shape10
    assert metrics.field_rmse(pred, target, FACES["shape"], first=10) == pytest.approx(2.0)


def test_class_accuracy_reads_the_argmax_of_the_categorical_field() -> None:
    target = torch.zeros(4, DIGITS.dim)
    target[torch.arange(4), torch.tensor([0, 1, 2, 3])] = 1
    pred = torch.zeros(4, DIGITS.dim)
    pred[torch.arange(4), torch.tensor([0, 1, 5, 3])] = 3.0  # logits; one wrong
    pred[:, 10:] = 50.0  # continuous fields must not leak into the class
    assert metrics.class_accuracy(pred, target, DIGITS["digit"]) == pytest.approx(0.75)


def test_diversity_flags_a_generator_that_ignores_noise() -> None:
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(64, 8, generator=gen)
    per_label = torch.randn(6, 1, 8, generator=gen)
    ignores_z = per_label.expand(6, 5, 8)  # [L, K, F]: same features whatever z
    uses_z = per_label + 0.5 * torch.randn(6, 5, 8, generator=gen)
    gen_feats = torch.randn(64, 8, generator=gen)
    assert metrics.diversity(ignores_z, gen_feats, real).collapse
    healthy = metrics.diversity(uses_z, gen_feats, real)
    assert not healthy.collapse and 0.2 < healthy.z_spread < 1.0
    assert metrics.diversity(uses_z, gen_feats * 0.01, real).collapse  # everything looks alike


# --- baseline predictor and its cache -------------------------------------------------------------

def _bar_images(classes: torch.Tensor, size: int = 8) -> torch.Tensor:
    """One bright row per class (row = class % size): trivially learnable 1-channel images."""
    images = torch.zeros(len(classes), 1, size, size)
    images[torch.arange(len(classes)), 0, classes % size] = 1.0
    return images


def test_predictor_learns_and_the_cache_returns_the_same_network(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path))
    classes = torch.arange(8).repeat(16)  # [128]
    labels = torch.zeros(len(classes), DIGITS.dim)
    labels[torch.arange(len(classes)), classes] = 1
    cfg = PredictorConfig(image_size=8, channels=1, label_dim=DIGITS.dim, width=8, feature_dim=16, epochs=8,
                          batch_size=16, max_shift=0, lr=1e-2)
    built: list[LabelCNN] = []

    def build() -> LabelCNN:
        built.append(train_predictor(_bar_images(classes), labels, DIGITS, ("digit",), cfg))
        return built[-1]

    net, cached = cached_predictor("oracle", "bars", cfg, {"n": 128}, build)
    assert not cached and len(built) == 1
    with torch.no_grad():
        acc = metrics.class_accuracy(net(_bar_images(classes)), labels, DIGITS["digit"])
    assert acc > 0.9
    again, cached = cached_predictor("oracle", "bars", cfg, {"n": 128}, build)
    assert cached and len(built) == 1
    with torch.no_grad():
        torch.testing.assert_close(again(_bar_images(classes)), net(_bar_images(classes)))
    assert cache_path("oracle", "bars", cfg, {"n": 64}) != cache_path("oracle", "bars", cfg, {"n": 128})


# --- end to end on tiny stand-in domains and models ----------------------------------------------

def _blob(pos: torch.Tensor, size: int) -> torch.Tensor:
    """pos [B, 2] in about [-1, 1] → Gaussian blob images [B, 1, S, S] centred there."""
    axis = torch.linspace(-1, 1, size)
    dy = (axis[None, :, None] - 0.5 * pos[:, 1, None, None]) ** 2  # [B, S, 1]
    dx = (axis[None, None, :] - 0.5 * pos[:, 0, None, None]) ** 2  # [B, 1, S]
    return torch.exp(-(dx + dy) / 0.08)[:, None]


class TinyFaces(Domain):
    """Blob at (yaw, pitch), brightness from shape[0], on grey; the 'real' side adds colour and noise."""

    name = "tiny-faces"
    layout = FACES
    channels = 3

    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_prior(FACES, n, generator)

    def _draw(self, labels: torch.Tensor) -> torch.Tensor:
        blob = _blob(labels[:, 398:400], self.image_size) * (0.7 + 0.1 * labels[:, :1, None, None])
        return blob.expand(-1, 3, -1, -1)

    def simulate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        blob = self._draw(labels)
        return (0.5 + blob).clamp(0, 1) * 0.8, (blob[:, :1] > 0.2).float()

    def _real(self, n: int, gen: torch.Generator) -> RealSplit:
        labels = sample_prior(FACES, n, gen)
        tint = torch.rand(n, 3, 1, 1, generator=gen)
        images = (tint * 0.6 + self._draw(labels) * tint + 0.1 * torch.randn(n, 3, self.image_size,
                                                                             self.image_size, generator=gen))
        return RealSplit(images.clamp(0, 1), labels)

    def real_train(self) -> RealSplit:
        return RealSplit(self._real(64, torch.Generator().manual_seed(100)).images)

    def real_test(self) -> RealSplit:
        return self._real(48, torch.Generator().manual_seed(101))

    def real_labeled_for_eval(self, n: int, generator: torch.Generator) -> RealSplit:
        """Evaluation only: labeled real-side images for the oracle."""
        return self._real(n, generator)


class TinyDigits(Domain):
    """Class = bright row; the 'real' side is blurred and dimmer. Only `digit` is known for real images."""

    name = "tiny-digits"
    layout = DIGITS
    channels = 1

    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_prior(DIGITS, n, generator)

    def simulate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = _bar_images(labels[:, :10].argmax(1), self.image_size)
        return images, (images > 0).float()

    def _real(self, n: int, gen: torch.Generator) -> RealSplit:
        classes = torch.randint(0, 10, (n,), generator=gen)
        images = F.avg_pool2d(_bar_images(classes, self.image_size), 3, 1, 1) * 2
        labels = torch.zeros(n, DIGITS.dim)
        labels[torch.arange(n), classes] = 1
        return RealSplit(images.clamp(0, 1), labels)

    def real_train(self) -> RealSplit:
        return RealSplit(self._real(64, torch.Generator().manual_seed(100)).images)

    def real_test(self) -> RealSplit:
        return self._real(48, torch.Generator().manual_seed(101))

    def real_labeled_for_eval(self, n: int, generator: torch.Generator) -> RealSplit:
        return self._real(n, generator)

    def pose_real(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return images.clone()  # a bar has no pose


def _tiny_model(layout: LabelLayout, channels: int, size: int, nz: int = 4) -> EvalModel:
    """Random (untrained) G and predictor with the right interface: the report must still be complete."""
    torch.manual_seed(0)
    gen_net = nn.Sequential(nn.Linear(nz + layout.dim, channels * size * size), nn.Sigmoid())
    pred_net = nn.Linear(channels * size * size, layout.dim)

    def generate(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return gen_net(torch.cat([z, labels], 1)).view(-1, channels, size, size)

    def predict(images: torch.Tensor) -> torch.Tensor:
        return pred_net(images.flatten(1))

    return EvalModel(name="tiny", source="test", path="-", domain="tiny", layout=layout, nz=nz,
                     image_size=size, channels=channels, generate=generate, predict=predict)


TINY = EvalConfig(seed=3, gen_count=40, real_test_max=48, oracle_count=96, source_count=96,
                  predictor=PredictorConfig(width=8, feature_dim=16, epochs=6, batch_size=16, lr=1e-2),
                  kid_subsets=4, kid_subset_size=20, div_labels=3, div_noise=4, batch_size=32, sheet_columns=6,
                  dis_pairs=8)


@pytest.mark.parametrize(("domain_cls", "size", "keys", "sheet"),
                         [(TinyFaces, 8, FACES_KEYS, "yaw_sweep.png"),
                          (TinyDigits, 16, DIGITS_KEYS, "digit_noise_grid.png")])
def test_eval_end_to_end_writes_a_complete_report(tmp_path: Path, monkeypatch, domain_cls, size, keys,
                                                  sheet) -> None:
    monkeypatch.setenv("LABELFORGE_CACHE_DIR", str(tmp_path / "cache"))
    domain = domain_cls(image_size=size, seed=0)
    model = _tiny_model(domain.layout, domain.channels, size)
    out = tmp_path / "eval" / "report.json"
    heard: list[tuple[str, int, int]] = []
    run_evaluation(model, domain, TINY, out, mode="quick", progress=lambda *event: heard.append(event))

    # a long evaluation is visible: every baseline step, then each later phase, in order
    steps = TINY.predictor.epochs * -(-TINY.source_count // TINY.predictor.batch_size)
    assert ("source baseline (96 images): training", steps, steps) in heard
    assert ("oracle baseline (96 images): training", steps, steps) in heard
    phases = [what for what, _, _ in heard if not what.startswith(("source", "oracle"))]
    assert phases == ["generating 40 images", "scoring fidelity, predictor, KID and diversity",
                      "measuring disentanglement (Δ′)"]

    report = json.loads(out.read_text())
    assert set(report["summary"]) == keys
    assert all(isinstance(v, float) and math.isfinite(v) for v in report["summary"].values())
    if "gen_digit_acc_ceiling" in keys:  # real digits of the requested class read better than a random G's images
        assert report["summary"]["gen_digit_acc_ceiling"] > report["summary"]["gen_digit_acc"] + 0.3
    assert {t["name"] for t in report["targets"]} >= {"gap_closed", "domain_gap_ratio"}
    assert isinstance(report["collapse"], bool) and isinstance(report["domain_gap_ok"], bool)
    assert report["details"]["counts"]["generated"] == TINY.gen_count
    md = out.with_suffix(".md").read_text()
    for name in ("sim_gen_real.png", sheet):
        assert (out.parent / name).stat().st_size > 0 and f"]({name})" in md
    assert "## Disentanglement (seed 003), read by the model's own predictor" in md
    assert not report["details"]["baselines"]["oracle_cached"]

    again = run_evaluation(model, domain, TINY, tmp_path / "again.json", mode="quick")  # baselines from cache
    assert again["details"]["baselines"]["oracle_cached"] and again["details"]["baselines"]["source_cached"]
    assert again["summary"] == report["summary"]  # seeded: same figures
    assert (tmp_path / "again_sim_gen_real.png").exists()  # non-default names get a prefix


def test_eval_refuses_a_model_of_the_wrong_size(tmp_path: Path) -> None:
    domain = TinyDigits(image_size=16)
    with pytest.raises(ValueError, match="does not match"):
        run_evaluation(_tiny_model(DIGITS, 1, 8), domain, TINY, tmp_path / "r.json")


# --- evaluation-only labeled real pools of the built-in domains ---------------------------------

def test_digits_oracle_pool_is_the_train_split_with_its_true_classes() -> None:
    from sklearn.datasets import load_digits

    from models.domains import get_domain
    from models.evaluation.pools import real_labeled_pool

    domain = get_domain("digits", image_size=8)  # 8 px: bilinear resize is the identity, pixels are exact
    pool = real_labeled_pool(domain, 0, seed=0)
    data = load_digits()
    originals = torch.as_tensor(data.images, dtype=torch.float32).flatten(1) / 16  # [1797, 64]
    nearest = torch.cdist(pool.images.float().flatten(1) / 255, originals).min(dim=1)  # uint8 pool
    assert len(pool.images) == 1297 and float(nearest.values.max()) < 0.01
    classes = torch.as_tensor(data.target)[nearest.indices]
    assert torch.equal(pool.labels[:, :10].argmax(1), classes)
    test = domain.real_test().images.cpu().flatten(1)  # no test digit is in the oracle's pool
    assert float(torch.cdist(test, pool.images.float().flatten(1) / 255).min()) > 0.05


def test_faces_m_oracle_pool_is_labeled_and_disjoint_from_the_test_split(tmp_path: Path) -> None:
    from models.domains import get_domain
    from models.evaluation.pools import real_labeled_pool

    domain = get_domain("faces-m", image_size=16, real_train_count=4, real_test_count=8, cache_dir=tmp_path)
    pool = real_labeled_pool(domain, 8, seed=0)
    assert pool.images.shape == (8, 3, 16, 16) and pool.labels.shape == (8, FACES.dim)
    test_labels = domain.real_test().labels.cpu()
    assert float(torch.cdist(pool.labels, test_labels).min()) > 1.0  # different faces, not the test ones
    again = real_labeled_pool(domain, 8, seed=0)
    torch.testing.assert_close(again.images, pool.images)  # seeded
    # the oracle learns from photo renders as they are: same pixel statistics as the real test split
    # (the pool once came back thresholded to 0/255, and the "oracle" read real yaw worse than a constant)
    test = (domain.real_test().images.cpu() * 255).round()
    assert pool.images.unique().numel() > 100
    assert abs(pool.images.float().mean() - test.mean()) < 25 and abs(pool.images.float().std() - test.std()) < 20
