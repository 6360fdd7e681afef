"""Shapes and contracts of the RenderBEGAN networks at every supported size (tiny widths, CPU)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.networks import Discriminator, Generator, NetConfig, Predictor, Simulator
from models.networks.layers import MinibatchStd, PixelNorm, assert_shape

torch.set_num_threads(1)


def tiny(size: int, channels: int = 3) -> NetConfig:
    return NetConfig(image_size=size, channels=channels, label_dim=16, nz=4, nh=8, c=4, hidden=16)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_every_network_has_the_documented_shapes(size: int) -> None:
    torch.manual_seed(0)
    cfg = tiny(size)
    z, labels = torch.randn(3, cfg.nz), torch.randn(3, cfg.label_dim)
    x = torch.rand(3, cfg.channels, size, size)
    sim = Simulator(cfg)(labels)
    assert sim.shape == (3, 3, size, size)
    assert sim.min() >= 0 and sim.max() <= 1  # sigmoid output
    assert Generator(cfg)(z, labels).shape == (3, 3, size, size)
    d = Discriminator(cfg)
    h = d.encode(x)
    assert h.shape == (3, cfg.nh)
    assert d.decode(h).shape == x.shape
    assert d(x).shape == x.shape
    p = Predictor(cfg)
    z_p, l_p = p.split(p(h))
    assert z_p.shape == (3, cfg.nz) and l_p.shape == (3, cfg.label_dim)


def test_widths_decrease_linearly_from_4c_to_c_like_the_thesis() -> None:
    assert NetConfig(image_size=32, c=32).widths() == [128, 96, 64, 32]  # Fig. 3.6 / 3.9 at 32×32
    assert NetConfig(image_size=8, c=32).widths() == [128, 32]
    assert NetConfig(image_size=128).n_up == 5


@pytest.mark.parametrize("bad", [{"image_size": 48}, {"image_size": 4}, {"image_size": 256}, {"c": 0},
                                 {"dropout_p": 1.0}, {"g_input": "tiled"}])
def test_bad_net_config_names_the_field(bad: dict[str, object]) -> None:
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        NetConfig(**bad)  # type: ignore[arg-type]


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="net.chanels"):
        NetConfig.from_dict({"chanels": 3})


@pytest.mark.parametrize("g_input", ["stack", "dense"])
def test_generator_uses_both_noise_and_label(g_input: str) -> None:
    torch.manual_seed(0)
    cfg = replace(tiny(16), g_input=g_input)
    g = Generator(cfg)
    z, labels = torch.randn(2, cfg.nz), torch.randn(2, cfg.label_dim)
    base = g(z, labels)
    assert not torch.allclose(base, g(torch.randn(2, cfg.nz), labels))
    assert not torch.allclose(base, g(z, torch.randn(2, cfg.label_dim)))


def test_eval_mode_encoding_does_not_depend_on_the_rest_of_the_batch() -> None:
    """MinibatchStd uses its tracked statistic in eval mode, so a served predictor is per-sample."""
    torch.manual_seed(0)
    cfg = tiny(16)
    d = Discriminator(cfg)
    d(torch.rand(8, 3, 16, 16))  # train mode: updates the running statistic
    d.eval()
    x = torch.rand(4, 3, 16, 16)
    alone = d.encode(x[:1])
    together = d.encode(x)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)


def test_minibatch_std_adds_a_channel_that_sees_batch_variation() -> None:
    layer = MinibatchStd()
    same = layer(torch.ones(4, 2, 3, 3))
    varied = layer(torch.randn(4, 2, 3, 3))
    assert same.shape == (4, 3, 3, 3)
    assert same[:, 2].max() < 1e-3 < varied[:, 2].min()


def test_pixel_norm_gives_unit_rms_features() -> None:
    out = PixelNorm()(torch.randn(2, 5, 4, 4) * 7)
    torch.testing.assert_close(out.pow(2).mean(dim=1), torch.ones(2, 4, 4), rtol=1e-4, atol=1e-4)


def test_assert_shape_names_the_tensor() -> None:
    with pytest.raises(ValueError, match="Generator z"):
        Generator(tiny(8))(torch.randn(2, 5), torch.randn(2, 16))
    assert_shape(torch.zeros(2, 3), (None, 3))


@pytest.mark.parametrize(("g_input", "distinct"), [("stack", False), ("dense", True)])
def test_generator_seed_is_the_same_at_every_position_only_when_stacked(g_input: str, distinct: bool) -> None:
    """Why `dense` exists: a stacked (z, l) gives all 16 positions of the 4×4 seed the same features."""
    torch.manual_seed(0)
    g = Generator(replace(tiny(16), g_input=g_input))
    seeds: list[torch.Tensor] = []
    g.decoder.blocks[0].register_forward_hook(lambda _m, inputs, _out: seeds.append(inputs[0]))
    g(torch.randn(2, g.cfg.nz), torch.randn(2, g.cfg.label_dim))
    seed = seeds[0]  # [B, Nz+D, 4, 4]
    assert seed.shape[-2:] == (4, 4)
    assert (not torch.allclose(seed, seed[:, :, :1, :1].expand_as(seed))) == distinct
