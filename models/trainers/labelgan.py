"""`labelgan` trainer: WGAN-GP critic + label predictor on its second conv + refiner generator (seed 001).

Phases of one run:
  1. source    — `source="simulator"`: the neural simulator S, fitted here or loaded from
                 `simulator_run` (RenderBEGAN's `prepare_simulator`); `source="mean_image"`: one mean
                 image per class, averaged over the domain's simulator renders (`mean_source="simulator"`,
                 no real label read) or over its real train images (`"real"`, the seed's §5.1: MNIST's
                 class means; the domain hands out only the K means, never per-image labels);
  2. GAN       — iterations of `critic_steps` critic updates (WGAN-GP, eq. 4.2), one predictor update
                 (L_P on generated images, eq. 4.4) and one generator update (L_G = −E D(G) + w_label L_P,
                 eq. 4.3), each its own Adam. Scalars accumulate on the device and are read at log steps.
L_P is the layout's per-part label loss (`models.losses.label_loss`: parts from `layout.parts`, never
hard-coded offsets) with an explicit weight per part (`part_weights`); the seed's public code instead
sliced faces labels 0:198 / 199:397 (dropping slots 198 and 397) and multiplied the angles by 100.
Resume is exact: weights, optimizer states, log accumulators and every RNG are checkpointed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from models.domains.base import Domain, get_domain
from models.layouts import LabelField, LabelLayout
from models.losses import label_loss
from models.networks import NetConfig
from models.networks.labelgan import (
    SOURCES,
    Critic,
    LabelGANArch,
    LabelGANGenerator,
    LabelPredictor,
    LabelReader,
    MeanImageSource,
    SimulatorSource,
)
from models.networks.simulator import Simulator
from models.trainers.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from models.trainers.common import (
    ProgressFn,
    non_finite,
    resolve_device,
    run_iterations,
    save_grid,
    write_scalars,
)
from models.trainers.registry import register_trainer
from models.trainers.renderbegan import RenderBEGANConfig, prepare_simulator
from models.trainers.run import RunModules, register_run_builder, write_options

log = logging.getLogger(__name__)

TRAINER = "labelgan"
MEAN_SOURCES = ("simulator", "real")
ARCH_FIELDS = ("source", "refiner_width", "refiner_blocks", "critic_width", "predictor_width", "warp_grid", "warp_max")


@dataclass
class LabelGANConfig:
    """Defaults = the seed (thesis §4, its MNIST notebook) and issue 9; deviations are commented."""

    domain: str = "digits"  # registered domain name
    domain_kwargs: dict[str, Any] = field(default_factory=dict)  # extra get_domain kwargs
    image_size: int = 32  # pixels (power of two ≥ 8)
    seed: int = 0
    source: str = "simulator"  # what R refines: "simulator" (S(l), §4.1) or "mean_image" (§5.1)
    nz: int = 10  # noise dims (§4.1: ten); drawn N(0, 1) like every bundle's z (seed: uniform [-1, 1])
    batch_size: int = 32  # B (seed notebook: 32)
    iterations: int = 20_000  # generator updates
    critic_steps: int = 5  # critic updates per generator update (issue 9, WGAN-GP; thesis text says 3)
    gp_lambda: float = 10.0  # gradient-penalty weight λ (§3.5)
    lr_d: float = 1e-4  # Adam lr of the critic (seed notebook)
    lr_g: float = 1e-4  # Adam lr of the generator
    lr_p: float = 1e-4  # Adam lr of the predictor
    betas: tuple[float, float] = (0.5, 0.9)  # Adam (β1, β2) (seed notebook, WGAN-GP)
    w_label: float = 1.0  # weight of L_P in L_G (eq. 4.3: 1)
    part_weights: dict[str, float] = field(default_factory=dict)  # per layout part in L_P; unnamed parts 1
    categorical_loss: str = "ce"  # "ce" on class logits, or "mse" on the one-hot (the seed's L2)
    # Weight of L_P on the domain's own renders of the P-step labels, added to P's update. 0 = the seed: P
    # learns only from G's images, so G and P can agree on a code the oracle cannot read (§6.1: labels
    # "encoded in the image"). > 0 anchors P's reading to what the renderer draws for each label, so G is
    # rewarded for drawing it. Not in the seed.
    predictor_renders: float = 0.0
    # Weight of L_P on G's own source images of the P-step (z, l) — S(l), or the warped class template —
    # added to P's update: with real class means (mean_source "real") that image is the one piece of real
    # appearance tied to a class. 0 = the seed. Not in the seed; on digits it did not hold the oracle's
    # reading better than the seed's loss (docs/methods/labelgan.md, session 8).
    predictor_sources: float = 0.0
    refiner_width: int = 32  # channels inside R (seed notebook: 28)
    refiner_blocks: int = 5  # ResNet blocks in R (§4.1.1: five; MNIST notebook: three)
    critic_width: int = 32  # channels of D's first conv, doubled per stride-2 conv (capped 8×)
    predictor_width: int = 64  # channels of P's four convs
    warp_grid: int = 2  # mean_image: control points per side of the displacement field
    warp_max: float = 1.0  # mean_image: largest displacement in half image sides (seed: tanh, 1)
    # mean_image: what the class templates average. "simulator": renders of each class (no real label is
    # read). "real": the domain's real train images of each class — the seed's setup (§5.1 averages MNIST's
    # training digits); only the K means leave the domain.
    mean_source: str = "simulator"
    mean_per_class: int = 256  # mean_image, mean_source "simulator": renders averaged per class
    simulator_run: str | None = None  # simulator: run dir with a trained S; None = fit S here
    simulator_c: int = 16  # simulator: base width of S when fitted here
    simulator_steps: int = 3000  # simulator: S fitting steps
    simulator_batch: int = 64  # simulator: labels per S fitting step
    simulator_lr: float = 1e-3  # simulator: Adam lr for S fitting
    log_every: int = 50  # iterations between logged scalars (the only host syncs)
    sample_every: int = 1000  # iterations between image grids
    checkpoint_every: int = 1000  # iterations between checkpoints

    def validate(self) -> None:
        """Raise ValueError naming the first bad field (layout-dependent checks run in `part_weight_map`)."""
        checks: list[tuple[bool, str, str]] = [
            (self.source in SOURCES, "source", f"must be one of {', '.join(SOURCES)}"),
            (self.batch_size >= 2, "batch_size", "must be ≥ 2 (BatchNorm in R needs a batch)"),
            (self.iterations >= 1, "iterations", "must be ≥ 1"),
            (self.critic_steps >= 1, "critic_steps", "must be ≥ 1"),
            (self.gp_lambda >= 0, "gp_lambda", "must be ≥ 0"),
            (min(self.lr_d, self.lr_g, self.lr_p) > 0, "lr_d/lr_g/lr_p", "must be > 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)"),
            (self.w_label >= 0, "w_label", "must be ≥ 0"),
            (self.predictor_renders >= 0, "predictor_renders", "must be ≥ 0"),
            (self.predictor_sources >= 0, "predictor_sources", "must be ≥ 0"),
            (all(w >= 0 for w in self.part_weights.values()), "part_weights", "weights must be ≥ 0"),
            (self.categorical_loss in ("ce", "mse"), "categorical_loss", "must be 'ce' or 'mse'"),
            (self.mean_source in MEAN_SOURCES, "mean_source", f"must be one of {', '.join(MEAN_SOURCES)}"),
            (self.mean_per_class >= 1, "mean_per_class", "must be ≥ 1"),
            (min(self.log_every, self.sample_every, self.checkpoint_every) >= 1,
             "log_every/sample_every/checkpoint_every", "must be ≥ 1"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"{name}: {why}")
        self.arch(channels=1, label_dim=1)  # sizes: LabelGANArch names the bad field

    def arch(self, channels: int, label_dim: int) -> LabelGANArch:
        return LabelGANArch(image_size=self.image_size, channels=channels, label_dim=label_dim, nz=self.nz,
                            **{k: getattr(self, k) for k in ARCH_FIELDS})


def part_weight_map(cfg: LabelGANConfig, layout: LabelLayout) -> dict[str, float]:
    """{part: weight} for every part of the layout; a name that is not a part is an error, not ignored."""
    parts = list(layout.part_slices())
    for name in cfg.part_weights:
        if name not in parts:
            raise ValueError(f"part_weights.{name}: unknown part; layout '{layout.name}' has {', '.join(parts)}")
    return {p: float(cfg.part_weights.get(p, 1.0)) for p in parts}


def weighted_label_loss(pred: torch.Tensor, labels: torch.Tensor, layout: LabelLayout, weights: dict[str, float],
                        categorical: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_P = Σ_part w_part · loss_part (eq. 4.4 per part); returns (total [], {part: unweighted loss []})."""
    _, parts = label_loss(pred, labels, layout, categorical)  # type: ignore[arg-type]
    total = torch.stack([weights[p] * loss for p, loss in parts.items()]).sum()
    return total, parts


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (§3.5): mean (‖∇ D(x̂)‖₂ − 1)² at x̂ = α x + (1 − α) x̃, α [B, 1, 1, 1] ~ U[0, 1]."""
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def class_field(layout: LabelLayout) -> LabelField:
    """The layout's one categorical field: what a mean image stands for."""
    cats = [f for f in layout.fields if f.kind == "categorical"]
    if len(cats) != 1:
        raise ValueError(f"source: 'mean_image' needs exactly one categorical label field; layout '{layout.name}' "
                         f"has {len(cats)}")
    return cats[0]


@torch.no_grad()
def class_mean_images(domain: Domain, per_class: int, seed: int) -> torch.Tensor:
    """[K, C, S, S]: the mean of `per_class` simulator renders of each class, other labels from the prior.

    The seed averages MNIST's labeled training digits; here the real side has no labels for training,
    so the class templates come from the simulator side (what a user of the method has labels for).
    """
    cls = class_field(domain.layout)
    gen = torch.Generator(device=domain.device).manual_seed(seed)
    means = []
    for k in range(cls.size):
        labels = domain.sample_labels(per_class, gen)  # [n, D]
        labels[:, cls.slice] = 0
        labels[:, cls.start + k] = 1
        means.append(domain.simulate(labels)[0].float().mean(dim=0))  # [C, S, S]
    return torch.stack(means)


def real_class_means(domain: Domain) -> torch.Tensor:
    """The domain's real class means, or a ValueError naming `mean_source` where it has none."""
    means = domain.real_class_means()
    if means is None:
        raise ValueError(f"mean_source: domain '{domain.name}' has no real classes to average; use 'simulator'")
    return means


def class_templates(cfg: LabelGANConfig, domain: Domain) -> torch.Tensor:
    """[K, C, S, S]: the mean-image variant's starting images, from `cfg.mean_source`."""
    if cfg.mean_source == "simulator":
        return class_mean_images(domain, cfg.mean_per_class, cfg.seed)
    return real_class_means(domain)


def build_generator(arch: LabelGANArch, layout: LabelLayout, net: NetConfig) -> LabelGANGenerator:
    """G around its source: a fresh (to be loaded/fitted) S, or empty class templates (to be filled/loaded)."""
    if arch.source == "simulator":
        source: torch.nn.Module = SimulatorSource(Simulator(net))
    else:
        cls = class_field(layout)
        source = MeanImageSource(arch, cls.size, cls.start)
    return LabelGANGenerator(arch, source)


def bundle_simulator(G: LabelGANGenerator) -> torch.nn.Module:
    """labels → image for the bundle: S itself, or the class templates of the mean-image variant."""
    src = G.source
    if isinstance(src, SimulatorSource):
        return src.simulator
    assert isinstance(src, MeanImageSource)
    return src.templates


@dataclass
class Nets:
    G: LabelGANGenerator
    D: Critic
    P: LabelPredictor
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    opt_p: torch.optim.Adam


SCALARS = ("L_D", "W", "GP", "L_G", "L_adv", "L_P", "L_P_G")


class LabelGANLoop:
    """The GAN phase: data draws, critic / predictor / generator steps, logging, grids, checkpoints."""

    def __init__(self, cfg: LabelGANConfig, domain: Domain, nets: Nets, run_dir: Path):
        self.cfg, self.domain, self.nets, self.run_dir = cfg, domain, nets, run_dir
        self.dev = domain.device
        self.layout = domain.layout
        self.weights = part_weight_map(cfg, self.layout)
        self.pool = domain.real_train().images.to(self.dev, torch.float32)  # [N, C, S, S]
        self.gen = torch.Generator(device=self.dev).manual_seed(cfg.seed + 1)  # z, l, α, real indices
        # P's anchors: (scalar, weight); a zero-weight anchor is neither computed nor logged, so the
        # accumulator of a checkpoint from before an anchor existed still fits on resume
        self.anchors = [(name, w) for name, w in (("L_P_sim", cfg.predictor_renders),
                                                  ("L_P_src", cfg.predictor_sources)) if w > 0]
        self.names = [*SCALARS, *(name for name, _ in self.anchors), *(f"L_P/{p}" for p in self.weights)]
        self.acc = torch.zeros(len(self.names), device=self.dev)
        self.acc_n = 0
        self.iteration = 0
        self.metrics: dict[str, float] = {}
        self.g_params = [p for p in nets.G.parameters() if p.requires_grad]
        self.real_std = self.pool.std(dim=0).mean().clamp_min(1e-6)
        fixed = torch.Generator(device=self.dev).manual_seed(cfg.seed + 2)  # grids and diversity only
        self.fixed_l = domain.sample_labels(8, fixed)  # [8, D]
        self.fixed_z = torch.randn(2, 8, cfg.nz, generator=fixed, device=self.dev)  # [2, 8, nz]

    # --- data -----------------------------------------------------------------------------------
    def draw(self) -> dict[str, torch.Tensor]:
        """Every random input of one iteration, from the data generator in a fixed order."""
        cfg, gen, dev, b = self.cfg, self.gen, self.dev, self.cfg.batch_size
        out: dict[str, torch.Tensor] = {}
        for i in range(cfg.critic_steps):
            out[f"x{i}"] = self.pool[torch.randint(0, self.pool.shape[0], (b,), generator=gen, device=dev)]
            out[f"dz{i}"] = torch.randn(b, cfg.nz, generator=gen, device=dev)
            out[f"dl{i}"] = self.domain.sample_labels(b, gen)
            out[f"a{i}"] = torch.rand(b, 1, 1, 1, generator=gen, device=dev)
        for step in ("p", "g"):
            out[f"{step}z"] = torch.randn(b, cfg.nz, generator=gen, device=dev)
            out[f"{step}l"] = self.domain.sample_labels(b, gen)
        return out

    # --- update steps ---------------------------------------------------------------------------
    def d_step(self, x: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """L_D = E D(x̃) − E D(x) + λ GP for θ_D (eq. 4.2, minimised); returns (L_D, W estimate, GP)."""
        n = self.nets
        with torch.no_grad():
            fake = n.G(z, labels)
        w = n.D(x).mean() - n.D(fake).mean()
        gp = gradient_penalty(n.D, x, fake, alpha)
        loss = -w + self.cfg.gp_lambda * gp
        n.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        n.opt_d.step()
        return loss.detach(), w.detach(), gp.detach()

    def anchor_images(self, name: str, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The images an anchor teaches P to read as `labels`: the domain's renders (L_P_sim) or G's source
        images S(l) / warped class templates (L_P_src)."""
        if name == "L_P_sim":
            return self.domain.simulate(labels)[0]
        return self.nets.G.source_image(z, labels)

    def p_step(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                                      dict[str, torch.Tensor]]:
        """L_P on P(D.features(G(z, l))) for θ_P only (eq. 4.4), plus each anchor's weight × L_P on its images
        of the same labels; returns (L_P on G's images, {anchor: L_P on its images}, parts)."""
        n, cfg = self.nets, self.cfg
        with torch.no_grad():
            h = n.D.features(n.G(z, labels))
        loss, parts = weighted_label_loss(n.P(h), labels, self.layout, self.weights, cfg.categorical_loss)
        total, anchored = loss, {}
        for name, weight in self.anchors:
            with torch.no_grad():
                h_anchor = n.D.features(self.anchor_images(name, z, labels))
            anchored[name], _ = weighted_label_loss(n.P(h_anchor), labels, self.layout, self.weights,
                                                    cfg.categorical_loss)
            total = total + weight * anchored[name]
        n.opt_p.zero_grad(set_to_none=True)
        total.backward()
        n.opt_p.step()
        return loss.detach(), {k: v.detach() for k, v in anchored.items()}, {k: v.detach() for k, v in parts.items()}

    def g_step(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """L_G = −E D(G(z, l)) + w_label L_P for θ_G (eq. 4.3); D and P stay fixed."""
        n, cfg = self.nets, self.cfg
        fake = n.G(z, labels)
        adv = -n.D(fake).mean()
        lp, _ = weighted_label_loss(n.P(n.D.features(fake)), labels, self.layout, self.weights, cfg.categorical_loss)
        loss = adv + cfg.w_label * lp
        n.opt_g.zero_grad(set_to_none=True)
        loss.backward(inputs=self.g_params)
        n.opt_g.step()
        return loss.detach(), adv.detach(), lp.detach()

    def iteration_step(self) -> None:
        b = self.draw()
        for i in range(self.cfg.critic_steps):
            l_d, w, gp = self.d_step(b[f"x{i}"], b[f"dz{i}"], b[f"dl{i}"], b[f"a{i}"])
        l_p, anchored, parts = self.p_step(b["pz"], b["pl"])
        l_g, adv, lp_g = self.g_step(b["gz"], b["gl"])
        values = [l_d, w, gp, l_g, adv, l_p, lp_g, *(anchored[name] for name, _ in self.anchors),
                  *(parts[p] for p in self.weights)]
        self.acc.add_(torch.stack([v.float() for v in values]))
        self.acc_n += 1
        self.iteration += 1

    # --- logging and samples --------------------------------------------------------------------
    def flush_scalars(self) -> dict[str, float]:
        values = (self.acc / max(self.acc_n, 1)).tolist()
        self.acc.zero_()
        self.acc_n = 0
        return dict(zip(self.names, values, strict=True))

    @torch.no_grad()
    def diversity(self) -> float:
        """Pixel std of G over the two fixed z at each of 8 fixed labels, relative to the real pool's std."""
        G = self.nets.G.eval()
        out = torch.stack([G(self.fixed_z[i], self.fixed_l) for i in range(2)])  # [2, 8, C, S, S]
        self.nets.G.train()
        return float(out.std(dim=0).mean() / self.real_std)

    @torch.no_grad()
    def sample_grid(self, writer: Any | None) -> None:
        """Rows: source image (S(l) or warped mean), G(z1, l), G(z2, l), real images; G in eval mode."""
        G = self.nets.G.eval()
        rows = [G.source_image(self.fixed_z[0], self.fixed_l), G(self.fixed_z[0], self.fixed_l),
                G(self.fixed_z[1], self.fixed_l), self.pool[:8]]
        self.nets.G.train()
        grid = save_grid(rows, self.run_dir / "samples" / f"iter_{self.iteration:07d}.png")
        if writer is not None:
            writer.add_image("samples", grid, self.iteration)

    # --- checkpoint -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        n = self.nets
        return {
            "trainer": TRAINER,
            "iteration": self.iteration,
            "models": {"generator": n.G.state_dict(), "critic": n.D.state_dict(), "predictor": n.P.state_dict()},
            "optimizers": {"generator": n.opt_g.state_dict(), "critic": n.opt_d.state_dict(),
                           "predictor": n.opt_p.state_dict()},
            "acc": self.acc,
            "acc_n": self.acc_n,
            "rng": capture_rng({"data": self.gen}),
            "metrics": self.metrics,
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        n = self.nets
        for key, module in (("generator", n.G), ("critic", n.D), ("predictor", n.P)):
            module.load_state_dict(ckpt["models"][key])
        for key, opt in (("generator", n.opt_g), ("critic", n.opt_d), ("predictor", n.opt_p)):
            opt.load_state_dict(ckpt["optimizers"][key])
        self.acc = ckpt["acc"].to(self.dev)
        self.acc_n = int(ckpt["acc_n"])
        self.iteration = int(ckpt["iteration"])
        self.metrics = dict(ckpt["metrics"])
        restore_rng(ckpt["rng"], {"data": self.gen})

    def save(self) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state())

    # --- the loop -------------------------------------------------------------------------------
    def log_interval(self, tick: float, writer: Any | None) -> dict[str, float]:
        n_iter = self.acc_n
        scalars = self.flush_scalars()
        scalars["diversity"] = self.diversity()
        scalars["ms_per_iter"] = 1000.0 * (time.perf_counter() - tick) / max(n_iter, 1)
        self.metrics = scalars
        write_scalars(self.run_dir, writer, self.iteration, scalars)
        error = non_finite(scalars, self.iteration)
        if error is not None:
            self.save()
            raise error
        return scalars

    def run(self, progress: ProgressFn | None = None) -> str:
        """Train to `cfg.iterations`; returns "completed" or "interrupted"; raises TrainingCollapsed on NaN."""
        for m in (self.nets.G, self.nets.D, self.nets.P):
            m.train()
        return run_iterations(self, self.run_dir, progress)


def prepare_source(cfg: LabelGANConfig, domain: Domain, run_dir: Path) -> tuple[LabelGANGenerator, NetConfig]:
    """Phase 1: G with its source ready (S fitted/loaded and frozen, or the class means computed) and the
    bundle-facing NetConfig (S's sizes with this run's nz)."""
    layout, dev = domain.layout, domain.device
    arch = cfg.arch(domain.channels, layout.dim)
    net = NetConfig(image_size=cfg.image_size, channels=domain.channels, label_dim=layout.dim, nz=cfg.nz,
                    c=cfg.simulator_c)
    if cfg.source == "simulator":
        rb = RenderBEGANConfig(domain=cfg.domain, image_size=cfg.image_size, seed=cfg.seed,
                               simulator_run=cfg.simulator_run, simulator_steps=cfg.simulator_steps,
                               simulator_batch=cfg.simulator_batch, simulator_lr=cfg.simulator_lr)
        sim, sim_net = prepare_simulator(rb, domain, net, run_dir)
        net = replace(sim_net, nz=cfg.nz)
        torch.manual_seed(cfg.seed)  # G/D/P init is the same whether S was loaded or fitted
        G = LabelGANGenerator(arch, SimulatorSource(sim))
    else:
        torch.manual_seed(cfg.seed)
        G = build_generator(arch, layout, net)
        means = class_templates(cfg, domain)
        assert isinstance(G.source, MeanImageSource)  # build_generator's source without a simulator
        G.source.templates.means.copy_(means)
    return G.to(dev), net


def build_nets(cfg: LabelGANConfig, G: LabelGANGenerator, dev: torch.device) -> Nets:
    D = Critic(G.arch).to(dev)
    P = LabelPredictor(G.arch, D.feature_channels).to(dev)
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    return Nets(G=G, D=D, P=P,
                opt_g=torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=cfg.lr_g, betas=betas),
                opt_d=torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas),
                opt_p=torch.optim.Adam(P.parameters(), lr=cfg.lr_p, betas=betas))


@register_trainer(TRAINER, config=LabelGANConfig)
def train_labelgan(
    cfg: LabelGANConfig,
    run_dir: Path,
    device: str = "auto",
    resume: bool = False,
    progress: ProgressFn | None = None,
    domain: Domain | None = None,
) -> dict[str, Any]:
    """Train LabelGAN into `run_dir`; returns {"status", "iteration", "run_dir", **latest scalars}."""
    cfg.validate()
    dev = domain.device if domain is not None else resolve_device(device)
    torch.manual_seed(cfg.seed)
    if domain is None:
        domain = get_domain(cfg.domain, image_size=cfg.image_size, seed=cfg.seed, device=dev, **cfg.domain_kwargs)
    part_weight_map(cfg, domain.layout)  # unknown part names fail before any work
    if cfg.source == "mean_image":  # a layout without one class field, or a domain without real classes,
        class_field(domain.layout)  # fails before any work
        if cfg.mean_source == "real":
            real_class_means(domain)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("phase 1/2: source '%s'", cfg.source)
    G, net = prepare_source(cfg, domain, run_dir)
    options = {**asdict(cfg), "betas": list(cfg.betas), "trainer": TRAINER, "layout": domain.layout.name,
               "net": net.to_dict()}
    write_options(run_dir, options)
    log.info("phase 2/2: WGAN-GP training to iteration %d", cfg.iterations)
    loop = LabelGANLoop(cfg, domain, build_nets(cfg, G, dev), run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        loop.load_state(load_checkpoint(ckpt_path, dev))
        log.info("resumed from iteration %d", loop.iteration)
    status = loop.run(progress)
    return {"status": status, "iteration": loop.iteration, "run_dir": str(run_dir), **loop.metrics}


@register_run_builder(TRAINER)
def _labelgan_modules(options: dict[str, Any], states: dict[str, Any], net: NetConfig, device: str) -> RunModules:
    """G (with S or the class templates inside), the bundle simulator, and D's first two convs + P as reader."""
    from models.layouts import get_layout

    known = {f.name for f in fields(LabelGANConfig)}
    cfg = LabelGANConfig(**{k: v for k, v in options.items() if k in known})
    arch = cfg.arch(net.channels, net.label_dim)
    G = build_generator(arch, get_layout(options["layout"]), net)
    G.load_state_dict(states["generator"])
    D = Critic(arch)
    P = LabelPredictor(arch, D.feature_channels)
    D.load_state_dict(states["critic"])
    P.load_state_dict(states["predictor"])
    G, D, P = G.to(device).eval(), D.to(device).eval(), P.to(device).eval()
    sim = bundle_simulator(G)  # type: ignore[arg-type]
    reader = LabelReader(D, P, net.nz).eval()  # type: ignore[arg-type]
    return RunModules(generator=G, simulator=sim, image_predictor=reader,
                      parts={"generator": G, "critic": D, "predictor": P, "simulator": sim})

