"""`infobegan` trainer (seed 002): BEGAN with an InfoGAN code head and a separate noise predictor.

Phases of one run:
  1. simulator — RenderBEGAN's neural S (for the bundle only), from `simulator_run` or fitted here;
  2. GAN       — per iteration one D step, one G step, one P step, each with its own Adam, then k_t:
     D: L_D = E(x) − k_t E(G(z, l)) + w_info L_l(Q(G(z, l)), l) + w_sim L_l(Q(render(l)), l)
     G: L_G = E(G(z, l)) + w_info L_l(Q(G(z, l)), l)                       (InfoGAN's λ I term)
     P: L_P = L_z + L_l on P(G(z, l)) + w_cycle d(G(P(G(z, l))), G(z, l)) + w_cycle_real d(G(P(x)), x)
   where E(v) = recon_distance(v, D(v), ae_alpha) is BEGAN's energy with MS-SSIM mixed in (§3.3.9)
   and d = recon_distance(·, ·, p_alpha) is the predictor's MS-SSIM image loss (§3.3).
Deviation from the seed: it learns codes unsupervised on CelebA; here the codes must *mean* the
layout's labels (yaw in degrees, digit class), so Q is also supervised on labeled renders
(`w_sim`, semi-supervised InfoGAN) — see docs/methods/infobegan.md.
Resume is exact: models, optimizers, k_t, the log accumulators and every RNG are checkpointed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.domains.base import Domain, get_domain
from models.losses import label_loss, m_global, noise_loss, update_k
from models.networks import NetConfig, Simulator
from models.networks.infobegan import (
    BEGANDiscriminator,
    BEGANGenerator,
    InfoBEGANSizes,
    NoisePredictor,
    code_to_labels,
    recon_distance,
)
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
from models.trainers.renderbegan import prepare_simulator, simulator_view
from models.trainers.run import RunModules, build_module, register_run_builder, write_options

log = logging.getLogger(__name__)

SCALARS = ("L_D", "L_G", "L_P", "E_real", "E_fake", "L_info", "L_sim", "L_z", "L_l", "L_cycle", "L_cycle_real",
           "k_t", "M_global")


@dataclass
class InfoBEGANConfig:
    """Defaults follow the seed where it names a value (λ = 1, lr 1e-4, latent 64) and BEGAN elsewhere."""

    domain: str = "faces-m"  # registered domain name
    domain_kwargs: dict[str, Any] = field(default_factory=dict)  # extra get_domain kwargs
    image_size: int = 32  # pixels (power of two ≥ 8)
    seed: int = 0
    iterations: int = 50_000
    batch_size: int = 64  # seed's search: {8, 64, 128, 512}; "batch size largely affects quality"
    nz: int = 64  # noise dims (seed: latent {64, 128})
    nh: int = 64  # D's embedding h (BEGAN: 64)
    width: int = 64  # BEGAN filter count n
    hidden: int = 256  # hidden FC width of Q and of P's head
    lr_d: float = 1e-4  # seed's search: {1e-4, 2e-4}
    lr_g: float = 1e-4
    lr_p: float = 1e-4
    beta1: float = 0.5  # Adam β1 (BEGAN/DCGAN)
    beta2: float = 0.999
    gamma: float = 0.5  # BEGAN diversity ratio γ (BEGAN's default)
    lambda_k: float = 1e-3  # BEGAN's k_t gain
    k_init: float = 0.0
    ae_alpha: float = 0.84  # MS-SSIM share of D's reconstruction energy (0 = BEGAN's L1; 0.84 = Zhao et al.)
    p_alpha: float = 0.84  # MS-SSIM share of P's image-cycle distance
    w_info: float = 1.0  # InfoGAN λ on the code recovered from G's images (seed: "typically 1")
    w_sim: float = 1.0  # Q's supervision on labeled renders (our deviation: pins codes to the layout)
    w_cycle: float = 1.0  # P: G(P(G(z, l))) vs G(z, l)
    w_cycle_real: float = 0.5  # P: G(P(x)) vs real x (§3.3.3: P must invert real images to edit them)
    categorical_loss: str = "ce"  # categorical label slices: "ce" on logits or "mse" on one-hot
    simulator_run: str | None = None  # run dir with a trained S; None = fit S in this run
    simulator_steps: int = 5000  # S fitting steps when simulator_run is None
    simulator_batch: int = 64
    simulator_lr: float = 1e-3
    sim_c: int = 32  # S's base width (RenderBEGAN's NetConfig.c)
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks: list[tuple[bool, str, str]] = [
            (self.batch_size >= 2, "batch_size", "must be ≥ 2"),
            (self.iterations >= 1, "iterations", "must be ≥ 1"),
            (min(self.lr_d, self.lr_g, self.lr_p) > 0, "lr_d/lr_g/lr_p", "must be > 0"),
            (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, "beta1/beta2", "must be in [0, 1)"),
            (0.0 <= self.gamma <= 1.0, "gamma", "must be in [0, 1]"),
            (0.0 <= self.k_init <= 1.0, "k_init", "must be in [0, 1]"),
            (0.0 <= self.ae_alpha <= 1.0, "ae_alpha", "must be in [0, 1]"),
            (0.0 <= self.p_alpha <= 1.0, "p_alpha", "must be in [0, 1]"),
            (min(self.w_info, self.w_sim, self.w_cycle, self.w_cycle_real) >= 0, "w_info/w_sim/w_cycle/w_cycle_real",
             "must be ≥ 0"),
            (self.categorical_loss in ("ce", "mse"), "categorical_loss", "must be 'ce' or 'mse'"),
            (min(self.log_every, self.sample_every, self.checkpoint_every) >= 1,
             "log_every/sample_every/checkpoint_every", "must be ≥ 1"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"{name}: {why}")
        InfoBEGANSizes(self.image_size, 1, 1, self.nz, self.nh, self.width, self.hidden)  # names a bad size


def sizes_for(options: dict[str, Any], net: NetConfig) -> InfoBEGANSizes:
    """G/D/P sizes from a config (or `training_options.json`) and the bundle-facing NetConfig."""
    return InfoBEGANSizes(net.image_size, net.channels, net.label_dim, net.nz, int(options["nh"]),
                          int(options["width"]), int(options["hidden"]))


@dataclass
class Nets:
    S: torch.nn.Module
    G: BEGANGenerator
    D: BEGANDiscriminator
    P: NoisePredictor
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    opt_p: torch.optim.Adam


def build_nets(cfg: InfoBEGANConfig, sz: InfoBEGANSizes, sim: torch.nn.Module, dev: torch.device) -> Nets:
    torch.manual_seed(cfg.seed)  # G/D/P init is the same whether S was loaded or fitted
    G, D, P = BEGANGenerator(sz).to(dev), BEGANDiscriminator(sz).to(dev), NoisePredictor(sz).to(dev)
    betas = (cfg.beta1, cfg.beta2)
    return Nets(S=sim, G=G, D=D, P=P, opt_g=torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas),
                opt_d=torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas),
                opt_p=torch.optim.Adam(P.parameters(), lr=cfg.lr_p, betas=betas))


class InfoBEGANLoop:
    """The GAN phase: data draws, the D / G / P steps, k_t, logging, grids and checkpoints."""

    def __init__(self, cfg: InfoBEGANConfig, domain: Domain, nets: Nets, run_dir: Path):
        self.cfg, self.domain, self.nets, self.run_dir = cfg, domain, nets, run_dir
        self.dev = domain.device
        self.layout = domain.layout
        self.pool = domain.real_train().images.to(self.dev, torch.float32)  # [N, C, S, S]
        self.gen = torch.Generator(device=self.dev).manual_seed(cfg.seed + 1)  # z, l and real indices
        self.k = torch.tensor(cfg.k_init, device=self.dev)
        self.acc = torch.zeros(len(SCALARS), device=self.dev)  # running sums since the last log
        self.acc_n = 0
        self.iteration = 0
        self.metrics: dict[str, float] = {}
        fixed = torch.Generator(device=self.dev).manual_seed(cfg.seed + 2)  # grids only
        self.fixed_l = domain.sample_labels(8, fixed)  # [8, D]
        self.fixed_z = torch.randn(2, 8, cfg.nz, generator=fixed, device=self.dev)  # [2, 8, nz]

    def _labels_loss(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return label_loss(pred, labels, self.layout, self.cfg.categorical_loss)[0]  # type: ignore[arg-type]

    def draw(self) -> dict[str, torch.Tensor]:
        """Every random input of one iteration, from the data generator in a fixed order."""
        b, nz, gen = self.cfg.batch_size, self.cfg.nz, self.gen
        out: dict[str, torch.Tensor] = {}
        for step in ("d", "g", "p"):
            out[f"{step}z"] = torch.randn(b, nz, generator=gen, device=self.dev)  # [B, nz]
            out[f"{step}l"] = self.domain.sample_labels(b, gen)  # [B, D]
        for step in ("d", "p"):
            idx = torch.randint(0, self.pool.shape[0], (b,), generator=gen, device=self.dev)
            out[f"{step}x"] = self.pool[idx]  # [B, C, S, S]
        with torch.no_grad():
            out["sim"] = self.domain.simulate(out["dl"])[0].float()  # labeled renders for Q
        return out

    def energy(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BEGAN energy E(v) [B] (D's reconstruction distance) and Q's code reading [B, D]."""
        recon, code = self.nets.D(v)
        return recon_distance(v, recon, self.cfg.ae_alpha), code

    def d_step(self, b: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        n, cfg = self.nets, self.cfg
        with torch.no_grad():
            fake = n.G(b["dz"], b["dl"])
        e_real = self.energy(b["dx"])[0].mean()
        e_fake, code_fake = self.energy(fake)
        e_fake = e_fake.mean()
        l_info = self._labels_loss(code_fake, b["dl"])
        l_sim = self._labels_loss(n.D.code(n.D.encode(b["sim"])), b["dl"])
        loss = e_real - self.k * e_fake + cfg.w_info * l_info + cfg.w_sim * l_sim
        n.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        n.opt_d.step()
        return [loss.detach(), e_real.detach(), l_sim.detach()]

    def g_step(self, b: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        n, cfg = self.nets, self.cfg
        e_fake, code = self.energy(n.G(b["gz"], b["gl"]))
        e_fake = e_fake.mean()
        l_info = self._labels_loss(code, b["gl"])
        loss = e_fake + cfg.w_info * l_info
        n.opt_g.zero_grad(set_to_none=True)
        loss.backward(inputs=list(n.G.parameters()))
        n.opt_g.step()
        return [loss.detach(), e_fake.detach(), l_info.detach()]

    def p_step(self, b: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """P learns to invert G: latent regression on G's images plus MS-SSIM image cycles through frozen G."""
        n, cfg, nz = self.nets, self.cfg, self.cfg.nz
        with torch.no_grad():
            fake = n.G(b["pz"], b["pl"])
        out = n.P(fake)
        lz = noise_loss(out[:, :nz], b["pz"])
        ll = self._labels_loss(out[:, nz:], b["pl"])
        cycle = recon_distance(self.regenerate(out), fake, cfg.p_alpha).mean()
        cycle_real = recon_distance(self.regenerate(n.P(b["px"])), b["px"], cfg.p_alpha).mean()
        loss = lz + ll + cfg.w_cycle * cycle + cfg.w_cycle_real * cycle_real
        n.opt_p.zero_grad(set_to_none=True)
        loss.backward(inputs=list(n.P.parameters()))
        n.opt_p.step()
        return [loss.detach(), lz.detach(), ll.detach(), cycle.detach(), cycle_real.detach()]

    def regenerate(self, out: torch.Tensor) -> torch.Tensor:
        """G(P's z̃, P's l̃ with categorical logits softmaxed): P's reading turned back into an image."""
        nz = self.cfg.nz
        return self.nets.G(out[:, :nz], code_to_labels(out[:, nz:], self.layout))

    def iteration_step(self) -> None:
        b = self.draw()
        l_d, e_real, l_sim = self.d_step(b)
        l_g, e_fake, l_info = self.g_step(b)
        l_p, lz, ll, cyc, cyc_real = self.p_step(b)
        mg = m_global(e_real, e_fake, self.cfg.gamma)
        self.k = update_k(self.k, e_real, e_fake, self.cfg.gamma, self.cfg.lambda_k)
        values = [l_d, l_g, l_p, e_real, e_fake, l_info, l_sim, lz, ll, cyc, cyc_real, self.k, mg]
        self.acc.add_(torch.stack([v.float() for v in values]))
        self.acc_n += 1
        self.iteration += 1

    def flush_scalars(self) -> dict[str, float]:
        """Average the accumulated scalars (the one host sync of a log interval) and reset them."""
        values = (self.acc / max(self.acc_n, 1)).tolist()
        self.acc.zero_()
        self.acc_n = 0
        return dict(zip(SCALARS, values, strict=True))

    @torch.no_grad()
    def sample_grid(self, writer: Any | None) -> None:
        """Rows: S(l), G(z1, l), G(z2, l), real x, G(P(x)) (P's recovery of the real images)."""
        n = self.nets
        real = self.pool[:8]
        recovered = self.regenerate(n.P(real))  # P has no dropout/normalisation: train and eval modes agree
        rows = [n.S(self.fixed_l), n.G(self.fixed_z[0], self.fixed_l), n.G(self.fixed_z[1], self.fixed_l), real,
                recovered]
        grid = save_grid(rows, self.run_dir / "samples" / f"iter_{self.iteration:07d}.png")
        if writer is not None:
            writer.add_image("samples", grid, self.iteration)

    def state(self) -> dict[str, Any]:
        n = self.nets
        return {
            "trainer": "infobegan",
            "iteration": self.iteration,
            "models": {"simulator": n.S.state_dict(), "generator": n.G.state_dict(),
                       "discriminator": n.D.state_dict(), "predictor": n.P.state_dict()},
            "optimizers": {"generator": n.opt_g.state_dict(), "discriminator": n.opt_d.state_dict(),
                           "predictor": n.opt_p.state_dict()},
            "k": self.k, "acc": self.acc, "acc_n": self.acc_n,
            "rng": capture_rng({"data": self.gen}),
            "metrics": self.metrics,
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        n = self.nets
        for key, module in (("generator", n.G), ("discriminator", n.D), ("predictor", n.P), ("simulator", n.S)):
            module.load_state_dict(ckpt["models"][key])
        for key, opt in (("generator", n.opt_g), ("discriminator", n.opt_d), ("predictor", n.opt_p)):
            opt.load_state_dict(ckpt["optimizers"][key])
        self.k = ckpt["k"].to(self.dev)
        self.acc = ckpt["acc"].to(self.dev)
        self.acc_n = int(ckpt["acc_n"])
        self.iteration = int(ckpt["iteration"])
        self.metrics = dict(ckpt["metrics"])
        restore_rng(ckpt["rng"], {"data": self.gen})

    def save(self) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state())

    def log_interval(self, tick: float, writer: Any | None) -> dict[str, float]:
        n_iter = self.acc_n
        scalars = self.flush_scalars()
        scalars["ms_per_iter"] = 1000.0 * (time.perf_counter() - tick) / max(n_iter, 1)
        self.metrics = scalars
        write_scalars(self.run_dir, writer, self.iteration, scalars)
        error = non_finite(scalars, self.iteration)
        if error is not None:
            self.save()
            raise error
        return scalars

    def run(self, progress: ProgressFn | None = None) -> str:
        """Train to `cfg.iterations`; returns "completed" or "interrupted"; raises TrainingCollapsed."""
        return run_iterations(self, self.run_dir, progress)


def net_config(cfg: InfoBEGANConfig, domain: Domain) -> NetConfig:
    """The bundle-facing sizes (nz, label_dim, image_size, channels) plus S's width and D's nh/hidden."""
    return NetConfig(image_size=cfg.image_size, channels=domain.channels, label_dim=domain.layout.dim, nz=cfg.nz,
                     nh=cfg.nh, c=cfg.sim_c, hidden=cfg.hidden)


@register_trainer("infobegan", config=InfoBEGANConfig)
def train_infobegan(
    cfg: InfoBEGANConfig,
    run_dir: Path,
    device: str = "auto",
    resume: bool = False,
    progress: ProgressFn | None = None,
    domain: Domain | None = None,
) -> dict[str, Any]:
    """Train InfoBEGAN into `run_dir`; returns {"status", "iteration", "run_dir", **latest scalars}."""
    cfg.validate()
    dev = domain.device if domain is not None else resolve_device(device)
    torch.manual_seed(cfg.seed)
    if domain is None:
        domain = get_domain(cfg.domain, image_size=cfg.image_size, seed=cfg.seed, device=dev, **cfg.domain_kwargs)
    if domain.image_size != cfg.image_size:
        raise ValueError(f"image_size: {cfg.image_size} does not match the domain's {domain.image_size}")
    net = net_config(cfg, domain)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("phase 1/2: simulator S")
    sim, sim_net = prepare_simulator(simulator_view(cfg), domain, net, run_dir)
    options = {**asdict(cfg), "trainer": "infobegan", "layout": domain.layout.name, "net": net.to_dict()}
    if sim_net != net:
        options["simulator_net"] = sim_net.to_dict()
    write_options(run_dir, options)
    log.info("phase 2/2: GAN training to iteration %d", cfg.iterations)
    loop = InfoBEGANLoop(cfg, domain, build_nets(cfg, sizes_for(options, net), sim, dev), run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        loop.load_state(load_checkpoint(ckpt_path, dev))
        log.info("resumed from iteration %d", loop.iteration)
    status = loop.run(progress)
    return {"status": status, "iteration": loop.iteration, "run_dir": str(run_dir), **loop.metrics}


@register_run_builder("infobegan")
def infobegan_modules(options: dict[str, Any], states: dict[str, Any], net: NetConfig, device: str) -> RunModules:
    """G; S; the image predictor is the separate noise predictor P (images → concat(z̃, l̃)); D with Q."""
    sz = sizes_for(options, net)
    sim_net = NetConfig.from_dict(options.get("simulator_net", options["net"]))
    simulator = build_module(Simulator, sim_net, states["simulator"], device)
    assert simulator is not None
    parts = {name: m for name, m in (
        ("generator", build_module(lambda _: BEGANGenerator(sz), net, states.get("generator"), device)),
        ("discriminator", build_module(lambda _: BEGANDiscriminator(sz), net, states.get("discriminator"), device)),
        ("predictor", build_module(lambda _: NoisePredictor(sz), net, states.get("predictor"), device)),
        ("simulator", simulator)) if m is not None}
    return RunModules(generator=parts.get("generator"), simulator=simulator, image_predictor=parts.get("predictor"),
                      parts=parts)
