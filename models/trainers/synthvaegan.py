"""`synthvaegan` trainer: SYNTH-VAE-GAN (seed 003) — attributes adapted from the synthetic domain.

Phases of one run:
  1. simulator — the bundle's neural simulator S, fitted or reused exactly as RenderBEGAN does;
  2. synthetic encoder E_s (seed Fig. 2 top) — L1 regression of *whitened, independent* attributes
     from renderer images: every attribute drawn independently, uniform (maximum entropy) on a
     finite range, whatever the real data's statistics; the equalizing regularizer adds per-pixel
     noise n ~ N(0, σ) with σ ~ N(0, σ_std) drawn per image. Saved as `synth_encoder.pt`, then frozen;
  3. VAE-GAN (seed Fig. 2 bottom, eqs. 1–4) on the unlabeled real images: latent concat(z_da, z_r)
     with z_da = m + σ(l)·ε from the frozen E_s (σ(l) replaced by σ_explore for a fraction p_explore
     of images: the exploratory regularizer) and z_r from the VAE encoder E_r;
     L_G = α·L1(x, r) + β·KL-term(z_r) − γ·log D(r) for E_r and the decoder (L1 and KL both per pixel),
     L_D = −log(1 − D(r)) − log D(x) for D; pixel noise on the inputs of E_r and D; Adam, learning
     rate ÷4 at 1/3 and 2/3 of the iterations; gradient-norm clipping.
Checkpoints every `checkpoint_every` iterations, at the end and on SIGTERM; resume is exact (model and
optimizer states, the log accumulators and every RNG, the data generator included).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from models.domains.base import Domain, get_domain
from models.layouts import LabelLayout
from models.networks import NetConfig, Simulator
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
from models.trainers.renderbegan import prepare_simulator, resolve_net, simulator_view
from models.trainers.run import RunModules, append_log, build_module, register_run_builder, write_options

log = logging.getLogger(__name__)

NAME = "synthvaegan"
SYNTH_FILE = "synth_encoder.pt"
SCALARS = ("L_G", "L_r", "L_l", "L_g", "L_D", "D_real", "D_fake", "z_da_std", "explored")


@dataclass
class SynthVAEGANConfig:
    """Defaults = the seed's §"Training Details" where it gives a value; comments mark our choices."""

    domain: str = "faces-m"  # registered domain name
    domain_kwargs: dict[str, Any] = field(default_factory=dict)  # extra get_domain kwargs
    image_size: int = 32  # pixels (power of two 8..128)
    seed: int = 0
    net: dict[str, Any] = field(default_factory=dict)  # NetConfig overrides: nz (= residual dims), S's widths
    width: int = 32  # base channels of E_s, E_r, decoder and D (ours: the seed gives no architecture)
    hidden: int = 256  # FC width of the encoder / D heads (ours)
    # phase 2: synthetic encoder on whitened, independent attributes
    attribute_range: float = 2.0  # continuous attributes ~ U(−r, r) in standardized units (ours: ±2σ of the prior)
    synth_steps: int = 5000  # E_s regression steps (fresh renders each step)
    synth_batch: int = 64
    synth_lr: float = 5e-4
    sigma_std: float = 0.15  # equalizing regularizer: σ ~ N(0, sigma_std) per image (ours: no value in the seed)
    # phase 3: VAE-GAN
    batch_size: int = 64  # seed
    iterations: int = 50_000
    lr: float = 5e-4  # seed: Adam, initial 0.0005
    lr_decay: float = 0.25  # seed: ÷4 at 1/3 and again at 2/3 of training
    beta1: float = 0.5  # Adam β1 (ours: DCGAN's; not in the seed)
    beta2: float = 0.999
    alpha: float = 1.0  # seed α: reconstruction L1
    beta: float = 8.0  # seed β: latent (KL) term, divided by the pixel count like eq. 1 (docs/methods/synthvaegan.md)
    gamma: float = 0.03  # seed γ: generator term −log D(r)
    input_noise: float = 0.1  # σ of pixel noise into E_r and D (seed: 0.2, on [−1, 1] pixels; ours are [0, 1])
    p_explore: float = 0.01  # seed: probability that an image's σ(l) are all replaced …
    sigma_explore: float = 2.0  # seed: … by σ_explore = 2
    grad_clip: float = 1.0  # max gradient norm per update (seed: "gradient clipping", no value)
    simulator_run: str | None = None  # run dir with a trained S; None = this run's simulator.pt or fit it
    simulator_steps: int = 5000
    simulator_batch: int = 64
    simulator_lr: float = 1e-3
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks: list[tuple[bool, str, str]] = [
            (self.batch_size >= 2, "batch_size", "must be ≥ 2"),
            (self.synth_batch >= 2, "synth_batch", "must be ≥ 2"),
            (self.iterations >= 1, "iterations", "must be ≥ 1"),
            (self.synth_steps >= 0, "synth_steps", "must be ≥ 0"),
            (min(self.lr, self.synth_lr, self.simulator_lr) > 0, "lr/synth_lr/simulator_lr", "must be > 0"),
            (0 < self.lr_decay <= 1, "lr_decay", "must be in (0, 1]"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1/beta2", "must be in [0, 1)"),
            (min(self.alpha, self.beta, self.gamma) >= 0, "alpha/beta/gamma", "must be ≥ 0"),
            (self.attribute_range > 0, "attribute_range", "must be > 0"),
            (min(self.sigma_std, self.input_noise) >= 0, "sigma_std/input_noise", "must be ≥ 0"),
            (0 <= self.p_explore <= 1, "p_explore", "must be in [0, 1]"),
            (self.sigma_explore > 0, "sigma_explore", "must be > 0"),
            (self.grad_clip > 0, "grad_clip", "must be > 0"),
            (min(self.width, self.hidden) >= 1, "width/hidden", "must be ≥ 1"),
            (min(self.log_every, self.sample_every, self.checkpoint_every) >= 1,
             "log_every/sample_every/checkpoint_every", "must be ≥ 1"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"{name}: {why}")


# --- phase 2: synthetic encoder ---------------------------------------------------------------------

def sample_independent_attributes(layout: LabelLayout, n: int, attribute_range: float,
                                  gen: torch.Generator) -> torch.Tensor:
    """[n, D] standardized labels, every field drawn independently from a maximum-entropy law on its
    range: continuous slots U(−r, r), categorical fields a uniform class (one-hot)."""
    dev = gen.device
    out = (torch.rand(n, layout.dim, generator=gen, device=dev) * 2.0 - 1.0) * attribute_range
    for f in layout.fields:
        if f.kind == "categorical":
            cls = torch.randint(0, f.size, (n,), generator=gen, device=dev)
            out[:, f.slice] = F.one_hot(cls, f.size).to(out.dtype)
    return out


def equalizing_noise(x: torch.Tensor, sigma_std: float, gen: torch.Generator) -> torch.Tensor:
    """x + n with n ~ N(0, σ) per pixel and σ ~ N(0, sigma_std) per image (seed: equalizing regularizer):
    some images get almost no noise (subtle attributes stay visible), others a lot (only strong ones do)."""
    sigma = torch.randn(x.shape[0], 1, 1, 1, generator=gen, device=x.device) * sigma_std  # [B, 1, 1, 1]
    return x + sigma * torch.randn(x.shape, generator=gen, device=x.device)


def synth_loss(enc: SyntheticEncoder, images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 regression of whitened attributes, Laplace NLL of the scale head on the detached error)."""
    m, log_b = enc(images)
    l1 = (m - target).abs().mean()
    nll = ((m.detach() - target).abs() * torch.exp(-log_b) + log_b).mean()
    return l1, nll


def fit_synth_encoder(cfg: SynthVAEGANConfig, domain: Domain, enc: SyntheticEncoder, white: Whitening,
                      run_dir: Path) -> dict[str, float]:
    """Phase 2: E_s on fresh renders of independent uniform attributes; returns held-out L1 figures."""
    dev = domain.device
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 11)
    opt = torch.optim.Adam(enc.parameters(), lr=cfg.synth_lr, betas=(cfg.beta1, cfg.beta2))
    enc.train()
    for step in range(1, cfg.synth_steps + 1):
        labels = sample_independent_attributes(domain.layout, cfg.synth_batch, cfg.attribute_range, gen)
        with torch.no_grad():
            images = equalizing_noise(domain.simulate(labels)[0].float(), cfg.sigma_std, gen)
        l1, nll = synth_loss(enc, images, white.whiten(labels))
        opt.zero_grad(set_to_none=True)
        (l1 + nll).backward()
        opt.step()
        if step % cfg.log_every == 0:
            append_log(run_dir, {"phase": "synth_encoder", "iteration": step, "synth_L1": float(l1.detach()),
                                 "synth_nll": float(nll.detach())})
    enc.eval()
    return evaluate_synth_encoder(cfg, domain, enc, white)


@torch.no_grad()
def evaluate_synth_encoder(cfg: SynthVAEGANConfig, domain: Domain, enc: SyntheticEncoder,
                           white: Whitening, n: int = 256) -> dict[str, float]:
    """Held-out L1 (whitened units) of E_s on clean renders of independent attributes."""
    gen = torch.Generator(device=domain.device).manual_seed(cfg.seed + 12)
    labels = sample_independent_attributes(domain.layout, n, cfg.attribute_range, gen)
    m, _ = enc(domain.simulate(labels)[0].float())
    return {"synth_L1_heldout": float((m - white.whiten(labels)).abs().mean())}


def prepare_synth_encoder(cfg: SynthVAEGANConfig, domain: Domain, snet: SynthNetConfig,
                          run_dir: Path) -> tuple[SyntheticEncoder, Whitening]:
    """E_s from this run's `synth_encoder.pt`, or fitted now (and saved); returned frozen, eval mode."""
    white = Whitening.for_layout(domain.layout, cfg.attribute_range).to(domain.device)
    path = run_dir / SYNTH_FILE
    torch.manual_seed(cfg.seed + 10)
    enc = SyntheticEncoder(snet).to(domain.device)
    if path.exists():
        enc.load_state_dict(load_checkpoint(path, domain.device)["state"])
    else:
        log.info("phase 2/3: synthetic encoder on whitened independent attributes (%d steps)", cfg.synth_steps)
        metrics = fit_synth_encoder(cfg, domain, enc, white, run_dir)
        append_log(run_dir, {"phase": "synth_encoder", "iteration": cfg.synth_steps, **metrics})
        log.info("synthetic encoder: %s", metrics)
        save_checkpoint(path, {"state": enc.state_dict(), "metrics": metrics})
    return enc.eval().requires_grad_(False), white  # type: ignore[return-value]


# --- phase 3: VAE-GAN -------------------------------------------------------------------------------

@dataclass
class Nets:
    S: nn.Module
    E_s: SyntheticEncoder
    white: Whitening
    E_r: RealEncoder
    dec: Decoder
    D: Discriminator
    opt_vae: torch.optim.Adam
    opt_d: torch.optim.Adam


def reconstruction_term(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Seed eq. 1 without α: 1/N Σ_{i,j,k} |x − r| with N the number of pixels (H·W), batch-averaged."""
    return (x - r).abs().sum(dim=1).mean()


def kl_term(mu: torch.Tensor, logvar: torch.Tensor, pixels: int) -> torch.Tensor:
    """Seed eq. 2 without β: Σ_l (m² + σ − 1 − log σ), σ the variance, batch-averaged — divided by the
    same N (pixels) as eq. 1, so β weighs the code against the per-pixel reconstruction error."""
    return (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean() / pixels


def lr_at(cfg: SynthVAEGANConfig, iteration: int) -> float:
    """Seed schedule: lr, then ×lr_decay from 1/3 of the iterations, ×lr_decay² from 2/3."""
    drops = sum(iteration >= math.floor(cfg.iterations * k / 3) for k in (1, 2))
    return cfg.lr * cfg.lr_decay**drops


class SynthVAEGANLoop:
    """Data draws, the D and encoder/decoder updates, logging, sample grids and checkpoints."""

    def __init__(self, cfg: SynthVAEGANConfig, domain: Domain, nets: Nets, run_dir: Path):
        self.cfg, self.domain, self.nets, self.run_dir = cfg, domain, nets, run_dir
        self.dev = domain.device
        self.pool = domain.real_train().images.to(self.dev, torch.float32)  # [N, C, S, S]
        self.gen = torch.Generator(device=self.dev).manual_seed(cfg.seed + 1)  # every random draw of training
        self.vae_params = [*nets.E_r.parameters(), *nets.dec.parameters()]
        self.acc = torch.zeros(len(SCALARS), device=self.dev)
        self.acc_n = 0
        self.iteration = 0
        self.metrics: dict[str, float] = {}
        fixed = torch.Generator(device=self.dev).manual_seed(cfg.seed + 2)  # grids only
        self.fixed_l = domain.sample_labels(8, fixed)  # [8, D]
        self.fixed_z = torch.randn(2, 8, nets.dec.cfg.nz, generator=fixed, device=self.dev)  # [2, 8, nz]

    def draw(self) -> dict[str, torch.Tensor]:
        """Every random input of one iteration, in a fixed order from the data generator."""
        cfg, gen, n, dev = self.cfg, self.gen, self.nets, self.dev
        b = cfg.batch_size
        idx = torch.randint(0, self.pool.shape[0], (b,), generator=gen, device=dev)
        x = self.pool[idx]  # [B, C, S, S]
        return {
            "x": x,
            "eps_da": torch.randn(b, n.dec.cfg.label_dim, generator=gen, device=dev),  # [B, D]
            "explore": (torch.rand(b, generator=gen, device=dev) < cfg.p_explore).float(),  # [B]
            "eps_r": torch.randn(b, n.dec.cfg.nz, generator=gen, device=dev),  # [B, nz]
            "noise_e": torch.randn(x.shape, generator=gen, device=dev) * cfg.input_noise,
            "noise_real": torch.randn(x.shape, generator=gen, device=dev) * cfg.input_noise,
            "noise_fake": torch.randn(x.shape, generator=gen, device=dev) * cfg.input_noise,
        }

    def attribute_code(self, x: torch.Tensor, eps: torch.Tensor, explore: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """z_da = m + σ(l)·ε from the frozen E_s, σ(l) = √2·b, or σ_explore for exploring images."""
        with torch.no_grad():
            m, log_b = self.nets.E_s(x)  # [B, D] whitened
            sigma = math.sqrt(2.0) * log_b.exp()
            sigma = torch.lerp(sigma, torch.full_like(sigma, self.cfg.sigma_explore), explore[:, None])
        return m + sigma * eps, m

    def step(self, b: dict[str, torch.Tensor]) -> None:
        """One iteration: forward, D update on the detached reconstruction, then E_r + decoder update."""
        cfg, n = self.cfg, self.nets
        lr = lr_at(cfg, self.iteration)
        for opt in (n.opt_vae, n.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        x = b["x"]
        z_da, m = self.attribute_code(x, b["eps_da"], b["explore"])
        mu, logvar = n.E_r(x + b["noise_e"])
        z_r = mu + (0.5 * logvar).exp() * b["eps_r"]
        r = n.dec(torch.cat([z_da, z_r], dim=1))  # [B, C, S, S]

        d_real = n.D(x + b["noise_real"])
        d_fake = n.D(r.detach() + b["noise_fake"])
        loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()  # −log(1 − D(r)) − log D(x), eq. 4
        n.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        nn.utils.clip_grad_norm_(n.D.parameters(), cfg.grad_clip)
        n.opt_d.step()

        l_r = cfg.alpha * reconstruction_term(x, r)  # eq. 1
        l_l = cfg.beta * kl_term(mu, logvar, x.shape[-1] * x.shape[-2])  # eq. 2 (z_r only: E_s is frozen)
        l_g = cfg.gamma * F.softplus(-n.D(r + b["noise_fake"])).mean()  # eq. 3: −γ log D(r)
        loss_g = l_r + l_l + l_g
        n.opt_vae.zero_grad(set_to_none=True)
        loss_g.backward(inputs=self.vae_params)
        nn.utils.clip_grad_norm_(self.vae_params, cfg.grad_clip)
        n.opt_vae.step()
        values = [loss_g, l_r, l_l, l_g, loss_d, torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean(),
                  m.std(dim=0).mean(), b["explore"].mean()]
        self.acc.add_(torch.stack([v.detach().float() for v in values]))
        self.acc_n += 1
        self.iteration += 1

    def flush_scalars(self) -> dict[str, float]:
        values = (self.acc / max(self.acc_n, 1)).tolist()
        self.acc.zero_()
        self.acc_n = 0
        out = dict(zip(SCALARS, values, strict=True))
        out["lr"] = lr_at(self.cfg, self.iteration - 1)
        return out

    @torch.no_grad()
    def sample_grid(self, writer: Any | None) -> None:
        """Rows: S(l), G(z1, l), G(z2, l), real images, their reconstructions from (m, μ)."""
        n = self.nets
        gen = SynthGenerator(n.dec, n.white)
        real = self.pool[:8]
        m, _ = n.E_s(real)
        mu, _ = n.E_r(real)
        rows = [n.S(self.fixed_l), gen(self.fixed_z[0], self.fixed_l), gen(self.fixed_z[1], self.fixed_l), real,
                n.dec(torch.cat([m, mu], dim=1))]
        grid = save_grid(rows, self.run_dir / "samples" / f"iter_{self.iteration:07d}.png")
        if writer is not None:
            writer.add_image("samples", grid, self.iteration)

    def state(self) -> dict[str, Any]:
        n = self.nets
        return {
            "trainer": NAME,
            "iteration": self.iteration,
            "models": {"simulator": n.S.state_dict(), "synth_encoder": n.E_s.state_dict(),
                       "whitening": n.white.state_dict(), "real_encoder": n.E_r.state_dict(),
                       "decoder": n.dec.state_dict(), "discriminator": n.D.state_dict()},
            "optimizers": {"vae": n.opt_vae.state_dict(), "discriminator": n.opt_d.state_dict()},
            "acc": self.acc,
            "acc_n": self.acc_n,
            "rng": capture_rng({"data": self.gen}),
            "metrics": self.metrics,
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        n = self.nets
        for key, module in (("real_encoder", n.E_r), ("decoder", n.dec), ("discriminator", n.D)):
            module.load_state_dict(ckpt["models"][key])
        n.opt_vae.load_state_dict(ckpt["optimizers"]["vae"])
        n.opt_d.load_state_dict(ckpt["optimizers"]["discriminator"])
        self.acc = ckpt["acc"].to(self.dev)
        self.acc_n = int(ckpt["acc_n"])
        self.iteration = int(ckpt["iteration"])
        self.metrics = dict(ckpt["metrics"])
        restore_rng(ckpt["rng"], {"data": self.gen})

    def save(self) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state())

    def iteration_step(self) -> None:
        self.step(self.draw())

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


# --- entry point and run builder ---------------------------------------------------------------------

def synth_net(net: NetConfig, width: int, hidden: int) -> SynthNetConfig:
    """The SYNTH-VAE-GAN networks' sizes: the bundle-facing ones from `net`, widths from the config."""
    return SynthNetConfig(image_size=net.image_size, channels=net.channels, label_dim=net.label_dim, nz=net.nz,
                          width=width, hidden=hidden)


def build_nets(cfg: SynthVAEGANConfig, snet: SynthNetConfig, sim: nn.Module, enc: SyntheticEncoder,
               white: Whitening, dev: torch.device) -> Nets:
    torch.manual_seed(cfg.seed)  # E_r / decoder / D init is the same whether S and E_s were loaded or fitted
    E_r, dec, D = RealEncoder(snet).to(dev), Decoder(snet).to(dev), Discriminator(snet).to(dev)
    betas = (cfg.beta1, cfg.beta2)
    opt_vae = torch.optim.Adam([*E_r.parameters(), *dec.parameters()], lr=cfg.lr, betas=betas)
    return Nets(S=sim, E_s=enc, white=white, E_r=E_r, dec=dec, D=D, opt_vae=opt_vae,
                opt_d=torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=betas))


@register_trainer(NAME, config=SynthVAEGANConfig)
def train_synthvaegan(
    cfg: SynthVAEGANConfig,
    run_dir: Path,
    device: str = "auto",
    resume: bool = False,
    progress: ProgressFn | None = None,
    domain: Domain | None = None,
) -> dict[str, Any]:
    """Train SYNTH-VAE-GAN into `run_dir`; returns {"status", "iteration", "run_dir", **latest scalars}."""
    cfg.validate()
    dev = domain.device if domain is not None else resolve_device(device)
    torch.manual_seed(cfg.seed)
    if domain is None:
        domain = get_domain(cfg.domain, image_size=cfg.image_size, seed=cfg.seed, device=dev, **cfg.domain_kwargs)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rb = simulator_view(cfg)
    net = resolve_net(rb, domain)
    snet = synth_net(net, cfg.width, cfg.hidden)
    log.info("phase 1/3: simulator S")
    sim, sim_net = prepare_simulator(rb, domain, net, run_dir)
    write_options(run_dir, {**asdict(cfg), "trainer": NAME, "layout": domain.layout.name, "net": net.to_dict(),
                            "simulator_net": sim_net.to_dict(), "synth_net": snet.to_dict()})
    enc, white = prepare_synth_encoder(cfg, domain, snet, run_dir)
    log.info("phase 3/3: VAE-GAN to iteration %d", cfg.iterations)
    loop = SynthVAEGANLoop(cfg, domain, build_nets(cfg, snet, sim, enc, white, dev), run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        loop.load_state(load_checkpoint(ckpt_path, dev))
        log.info("resumed from iteration %d", loop.iteration)
    status = loop.run(progress)
    return {"status": status, "iteration": loop.iteration, "run_dir": str(run_dir), **loop.metrics}


@register_run_builder(NAME)
def _synthvaegan_modules(options: dict[str, Any], states: dict[str, Any], net: NetConfig,
                         device: str) -> RunModules:
    """generator = decoder(whiten(l), z); image_predictor = concat(E_r's μ, unwhiten(E_s's m))."""
    snet = SynthNetConfig(**options["synth_net"])
    sim = build_module(Simulator, NetConfig.from_dict(options.get("simulator_net", options["net"])),
                       states["simulator"], device)
    parts: dict[str, nn.Module] = {"simulator": sim} if sim is not None else {}
    for name, cls in (("synth_encoder", SyntheticEncoder), ("real_encoder", RealEncoder), ("decoder", Decoder),
                      ("discriminator", Discriminator)):
        module = build_module(cls, snet, states.get(name), device)  # type: ignore[arg-type]
        if module is not None:
            parts[name] = module
    white = Whitening(snet.label_dim)
    white.load_state_dict(states["whitening"])
    parts["whitening"] = white.to(device).eval()
    assert sim is not None
    generator = SynthGenerator(parts["decoder"], white).eval()  # type: ignore[arg-type]
    predictor = SynthImagePredictor(parts["synth_encoder"], parts["real_encoder"], white).eval()  # type: ignore[arg-type]
    return RunModules(generator=generator, simulator=sim, image_predictor=predictor, parts=parts)
