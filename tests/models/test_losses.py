"""The RenderBEGAN losses: each one falls when optimised on a tiny fixed batch; k_t stays in [0, 1]."""

from __future__ import annotations

import torch

from models.layouts import DIGITS, FACES, sample_prior
from models.losses import (
    ae_loss,
    content_loss,
    label_loss,
    m_global,
    mask_background,
    noise_loss,
    update_k,
)
from models.networks import Discriminator, Generator, NetConfig, Predictor

torch.set_num_threads(1)
CFG = NetConfig(image_size=8, channels=1, label_dim=DIGITS.dim, nz=4, nh=8, c=4, hidden=16)


def _falls(loss_fn, params, steps: int = 40, lr: float = 3e-3) -> tuple[float, float]:
    opt = torch.optim.Adam(params, lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss_fn().item()


def test_autoencoder_loss_falls_for_the_discriminator() -> None:
    torch.manual_seed(0)
    d = Discriminator(CFG)
    d.eval()  # no dropout: a fixed batch, a deterministic objective
    x = torch.rand(4, 1, 8, 8)
    first, last = _falls(lambda: ae_loss(x, d(x)).mean(), d.parameters())
    assert last < 0.7 * first


def test_discriminator_loss_separates_real_from_fake() -> None:
    """L_D = L_d(x) − k L_d(G): D learns to reconstruct real images better than fakes."""
    torch.manual_seed(0)
    d = Discriminator(CFG).eval()
    x, fake = torch.rand(4, 1, 8, 8) * 0.2, torch.rand(4, 1, 8, 8)
    k = torch.tensor(0.3)
    first, last = _falls(lambda: ae_loss(x, d(x)).mean() - k * ae_loss(fake, d(fake)).mean(), d.parameters())
    assert last < first
    assert ae_loss(x, d(x)).mean() < ae_loss(fake, d(fake)).mean()


def test_predictor_loss_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    p = Predictor(CFG).eval()
    h = torch.randn(8, CFG.nh)
    z = torch.randn(8, CFG.nz)
    labels = sample_prior(DIGITS, 8, torch.Generator().manual_seed(0))

    def lp() -> torch.Tensor:
        z_p, l_p = p.split(p(h))
        return noise_loss(z_p, z) + label_loss(l_p, labels, DIGITS)[0]

    first, last = _falls(lp, p.parameters())
    assert last < 0.5 * first


def test_generator_loss_with_content_term_falls() -> None:
    torch.manual_seed(0)
    g = Generator(CFG)
    d = Discriminator(CFG).eval().requires_grad_(False)
    z, labels = torch.randn(4, CFG.nz), sample_prior(DIGITS, 4, torch.Generator().manual_seed(1))
    sim = torch.rand(4, 1, 8, 8)
    mask = (torch.rand(4, 1, 8, 8) > 0.5).float()

    def lg() -> torch.Tensor:
        fake = g(z, labels)
        return ae_loss(fake, d(fake)).mean() + 0.1 * content_loss(mask_background(fake, sim, mask), sim)

    first, last = _falls(lg, g.parameters())
    assert last < 0.7 * first


def test_label_loss_reports_every_part_and_is_zero_for_a_perfect_regression() -> None:
    labels = sample_prior(FACES, 5, torch.Generator().manual_seed(0))
    total, parts = label_loss(labels.clone(), labels, FACES)
    assert set(parts) == {"shape", "texture", "angles"}
    assert total.item() == 0.0
    worse = labels.clone()
    worse[:, FACES["yaw_deg"].slice] += 1.0
    _, parts = label_loss(worse, labels, FACES)
    assert parts["angles"].item() > 0 and parts["shape"].item() == 0.0


def test_categorical_field_uses_cross_entropy_or_mse() -> None:
    labels = sample_prior(DIGITS, 6, torch.Generator().manual_seed(0))
    logits = labels.clone()
    logits[:, :10] *= 20.0  # confident, correct logits
    ce = label_loss(logits, labels, DIGITS, "ce")[1]["digit"].item()
    mse = label_loss(logits, labels, DIGITS, "mse")[1]["digit"].item()
    assert ce < 1e-6 < mse


def test_k_stays_in_unit_interval_and_follows_the_equilibrium() -> None:
    k = torch.tensor(0.0)
    real, fake = torch.tensor(1.0), torch.tensor(0.1)
    for _ in range(3000):  # generator losing: γ L(x) > L(G) drives k up until clamped at 1
        k = update_k(k, real, fake, gamma=0.7, lambda_k=1e-3)
        assert 0.0 <= k.item() <= 1.0
    assert k.item() == 1.0
    for _ in range(3000):
        k = update_k(k, real * 0.1, fake * 10, gamma=0.7, lambda_k=1e-2)
        assert 0.0 <= k.item() <= 1.0
    assert k.item() == 0.0


def test_m_global_is_zero_only_at_equilibrium_with_perfect_reconstruction() -> None:
    assert m_global(torch.tensor(0.0), torch.tensor(0.0), 0.7).item() == 0.0
    at_eq = m_global(torch.tensor(1.0), torch.tensor(0.7), 0.7).item()
    off_eq = m_global(torch.tensor(1.0), torch.tensor(0.1), 0.7).item()
    assert abs(at_eq - 1.0) < 1e-6 and off_eq > at_eq


def test_mask_background_keeps_generated_object_and_simulated_background() -> None:
    gen, sim = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    out = mask_background(gen, sim, mask)
    assert out[0, :, 0, 0].eq(1).all() and out[0, :, 0, 1].eq(0).all()


def test_label_aware_content_net_learns_labels_through_photometric_randomization() -> None:
    from models.content import LabelAwareConfig, LabelAwareNet, photometric_randomize, train_label_aware
    from tests.models.tiny_domain import TinyBlobDomain

    domain = TinyBlobDomain(8)
    gen = torch.Generator().manual_seed(123)
    labels = domain.sample_labels(64, gen)
    images, masks = domain.simulate(labels)
    shaken = photometric_randomize(images, masks, gen)
    assert shaken.shape == images.shape and 0 <= shaken.min() and shaken.max() <= 1
    assert (shaken - images).abs().mean() > 0.05  # appearance really changes

    torch.manual_seed(0)
    untrained = LabelAwareNet(1, 8, DIGITS.dim).eval()
    trained = train_label_aware(domain, LabelAwareConfig(steps=60, batch_size=32, lr=3e-3), seed=0)
    assert not any(p.requires_grad for p in trained.parameters())  # frozen for L_c
    with torch.no_grad():
        before = label_loss(untrained(shaken), labels, DIGITS)[1]["pose"].item()
        after = label_loss(trained(shaken), labels, DIGITS)[1]["pose"].item()
    assert after < 0.8 * before


def test_vgg_content_upsampling_sets_the_feature_grid_and_grey_images_work() -> None:
    """×7 is the thesis's ImageNet-scale input; ×1 is the cheap variant a CPU ablation uses."""
    from models.content import VGGContent

    grey = torch.rand(2, 1, 16, 16)
    assert VGGContent(upsample=7.0)(grey).shape == (2, 512, 14, 14)  # 16·7 = 112 px → /8 after three pools
    assert VGGContent(upsample=1.0)(grey).shape == (2, 512, 2, 2)


def test_label_aware_content_compares_the_label_read_out_or_the_feature_map(tmp_path) -> None:
    """`label_aware_layer`: `labels` gives L_c D numbers per image, `features` the spatial map before the
    read-out (4w channels at S/4), from the same cached net; an unknown layer names the field."""
    import pytest

    from models.content import LabelAwareConfig, build_content_features
    from tests.models.tiny_domain import TinyBlobDomain

    domain = TinyBlobDomain(8)
    kw = {"seed": 0, "cache_path": tmp_path / "content.pt", "label_aware": LabelAwareConfig(steps=2, batch_size=4,
                                                                                          width=8)}
    x = torch.rand(3, domain.channels, 8, 8)
    labels_net = build_content_features("label-aware", domain, **kw)
    features_net = build_content_features("label-aware", domain, layer="features", **kw)  # reuses the cache
    assert labels_net is not None and features_net is not None
    assert labels_net(x).shape == (3, domain.layout.dim)
    assert features_net(x).shape == (3, 32, 2, 2)
    assert torch.equal(labels_net.head(features_net(x)), labels_net(x))  # the read-out of that very map
    with pytest.raises(ValueError, match="label_aware_layer: must be one of labels, features"):
        build_content_features("label-aware", domain, layer="logits", **kw)
