"""`dcgan` trainer: the plain, unconditional DCGAN of seed 004 as the sibling methods' baseline.

Phases of one run:
  1. simulator — RenderBEGAN's neural simulator S, fitted here or loaded from `simulator_run`
                 (`prepare_simulator`); DCGAN never uses it, but every bundle ships one;
  2. GAN       — the seed's minimax game with the PyTorch-tutorial recipe it follows: per iteration one
                 real batch and one z batch; D step on log D(x) + log(1 − D(G(z))), then G step on the
                 non-saturating −log D(G(z)) with the updated D; Adam 2e-4, β = (0.5, 0.999);
  3. head      — at every checkpoint: a closed-form ridge read-out on D's features (the seed's
                 experiment 1 representation) for the bundle's image predictor: l̃ fitted to the
                 simulator's labels of simulator images, z̃ to the z of G(z). No real label is used.
DCGAN ignores labels: `UnconditionalGenerator` takes them for the bundle contract only, and
`training_options.json` (→ the bundle manifest's `trainer_config`) says `"label_conditioned": false`.
Resume is exact: G, D, both optimizers, the scalar accumulators and every RNG are checkpointed; the
head fit draws from its own generator with G and D in eval mode, so it changes no training state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from models.domains.base import Domain, get_domain
from models.networks import NetConfig, Simulator
from models.networks.dcgan import (
    DCGANDiscriminator,
    DCGANGenerator,
    DCGANImagePredictor,
    DCGANNetConfig,
    LinearHead,
    UnconditionalGenerator,
    init_weights,
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
from models.trainers.run import RunModules, append_log, build_module, register_run_builder, write_options

log = logging.getLogger(__name__)

NAME = "dcgan"
SCALARS = ("L_D", "L_G", "D_x", "D_G_z1", "D_G_z2")  # the seed's / tutorial's loss and D(·) read-outs
RIDGE_RATIOS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # ridge λ candidates × mean Gram diagonal
FEATURE_BATCH = 256  # images per D forward when extracting head features


@dataclass
class DCGANConfig:
    """Defaults = the seed's DCGAN (PyTorch DCGAN tutorial values: nz 100, widths 64, batch 128, Adam
    2e-4 with β1 0.5, N(0, 0.02) init); image size 32 instead of the seed's 64 to match the benchmark."""

    domain: str = "digits"  # registered domain name
    domain_kwargs: dict[str, Any] = field(default_factory=dict)  # extra get_domain kwargs
    image_size: int = 32  # pixels (power of two 8..128; the seed: 64)
    seed: int = 0
    nz: int = 100  # latent dims
    ngf: int = 64  # generator base width
    ndf: int = 64  # discriminator base width
    batch_size: int = 128
    iterations: int = 5000  # G updates (one D update each)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)  # Adam (β1, β2)
    init_std: float = 0.02  # std of the N(0, σ) conv init
    label_conditioned: bool = False  # fixed: G ignores labels; recorded so manifests say so honestly
    head_count: int = 2048  # simulator images (and as many G(z)) the ridge read-out head is fitted on
    head_val_frac: float = 0.2  # held-out share of those that picks the ridge λ
    simulator_run: str | None = None  # run dir with a trained S; None = fit S in this run
    simulator_c: int = 32  # S's base width when fitted here (NetConfig.c)
    simulator_steps: int = 5000  # S fitting steps when simulator_run is None
    simulator_batch: int = 64
    simulator_lr: float = 1e-3
    log_every: int = 50  # iterations between logged scalars
    sample_every: int = 500  # iterations between image grids
    checkpoint_every: int = 1000  # iterations between checkpoints (each refits the head)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks: list[tuple[bool, str, str]] = [
            (self.batch_size >= 2, "batch_size", "must be ≥ 2 (batch norm needs a batch)"),
            (self.iterations >= 1, "iterations", "must be ≥ 1"),
            (min(self.nz, self.ngf, self.ndf, self.simulator_c) >= 1, "nz/ngf/ndf/simulator_c", "must be ≥ 1"),
            (min(self.lr_g, self.lr_d) > 0, "lr_g/lr_d", "must be > 0"),
            (len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "betas", "must be two values in [0, 1)"),
            (self.init_std > 0, "init_std", "must be > 0"),
            (not self.label_conditioned, "label_conditioned", "DCGAN is unconditional: must be false"),
            (self.head_count >= 10, "head_count", "must be ≥ 10"),
            (0.0 < self.head_val_frac < 0.5, "head_val_frac", "must be in (0, 0.5)"),
            (self.simulator_steps >= 1 and self.simulator_batch >= 2, "simulator_steps/simulator_batch",
             "must be ≥ 1 / ≥ 2"),
            (min(self.log_every, self.sample_every, self.checkpoint_every) >= 1,
             "log_every/sample_every/checkpoint_every", "must be ≥ 1"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"{name}: {why}")

    def arch(self, channels: int) -> DCGANNetConfig:
        return DCGANNetConfig(image_size=self.image_size, channels=channels, nz=self.nz, ngf=self.ngf, ndf=self.ndf)


# --- losses (the seed's minimax game, with the sigmoid inside BCE-with-logits) ----------------------

def d_loss(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
    """−[log D(x) + log(1 − D(G(z)))], batch means summed (the seed's Loss_D)."""
    return (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
            + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))


def g_loss(logit_fake: torch.Tensor) -> torch.Tensor:
    """−log D(G(z)) (the seed's Loss_G: non-saturating form of min log(1 − D(G(z))))."""
    return F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))


# --- the read-out head ------------------------------------------------------------------------------

@dataclass
class RidgeFit:
    head: LinearHead
    ratio: float  # chosen λ / mean Gram diagonal
    val_mse: float  # held-out MSE at that λ (before the refit on all samples)


def fit_ridge(x: torch.Tensor, y: torch.Tensor, val_frac: float, gen: torch.Generator) -> RidgeFit:
    """Ridge regression y ≈ W·standardize(x) + b in closed form (dual: N×N Gram), λ chosen on a held-out
    share from `RIDGE_RATIOS`, then refitted on everything. Why closed form: exact, seed-free, and a
    few seconds on CPU even with thousands of D features. Categorical one-hot targets get least-squares
    scores whose argmax is the class."""
    n, n_feat = x.shape
    mean = x.mean(0)
    std = x.std(0)
    inv_std = torch.where(std > 1e-6, 1.0 / std.clamp_min(1e-6), torch.zeros_like(std))  # dead features → 0
    xs = (x - mean) * inv_std  # [N, F]
    gram = (xs @ xs.T).double()  # [N, N]
    yd = y.double()
    n_val = max(1, int(n * val_frac))
    perm = torch.randperm(n, generator=gen).to(x.device)
    va, tr = perm[:n_val], perm[n_val:]
    k_tr = gram[tr][:, tr]
    y_mean = yd[tr].mean(0)
    evals, vecs = torch.linalg.eigh(k_tr)
    proj = vecs.T @ (yd[tr] - y_mean)  # [N_tr, K]
    scale = float(gram.diagonal().mean().clamp_min(1e-12))
    scores = []
    for ratio in RIDGE_RATIOS:
        alpha = vecs @ (proj / (evals + ratio * scale)[:, None])
        pred = gram[va][:, tr] @ alpha + y_mean
        scores.append(float(((pred - yd[va]) ** 2).mean()))
    best = min(range(len(RIDGE_RATIOS)), key=scores.__getitem__)
    lam = RIDGE_RATIOS[best] * scale
    y_mean = yd.mean(0)
    alpha = torch.linalg.solve(gram + lam * torch.eye(n, dtype=gram.dtype, device=gram.device), yd - y_mean)
    weight = (xs.double().T @ alpha).T  # [K, F]
    head = LinearHead(n_feat, y.shape[1]).to(x.device)
    with torch.no_grad():
        head.mean.copy_(mean)
        head.inv_std.copy_(inv_std)
        head.linear.weight.copy_(weight.float())
        head.linear.bias.copy_(y_mean.float())
    return RidgeFit(head=head.eval(), ratio=RIDGE_RATIOS[best], val_mse=scores[best])


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Run with `modules` in eval mode (batch norm from running statistics), then restore their modes."""
    before = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, before, strict=True):
            m.train(mode)


@torch.no_grad()
def d_features(D: DCGANDiscriminator, images01: torch.Tensor) -> torch.Tensor:
    """D's features of images in [0, 1], in chunks: [N, C, S, S] → [N, feature_dim]."""
    return torch.cat([D.features(images01[i:i + FEATURE_BATCH] * 2 - 1) for i in range(0, len(images01), FEATURE_BATCH)])


@torch.no_grad()
def fit_heads(G: DCGANGenerator, D: DCGANDiscriminator, domain: Domain, cfg: DCGANConfig
              ) -> tuple[LinearHead, LinearHead, dict[str, float]]:
    """(noise head z̃, label head l̃, metrics) on D's features; draws only from its own seeded generator."""
    dev = domain.device
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 3)
    cpu_gen = torch.Generator().manual_seed(cfg.seed + 4)
    with eval_mode(G, D):
        labels = domain.sample_labels(cfg.head_count, gen).float()  # [N, D]
        sims = torch.cat([domain.simulate(labels[i:i + FEATURE_BATCH])[0]
                          for i in range(0, len(labels), FEATURE_BATCH)]).float()
        label_fit = fit_ridge(d_features(D, sims), labels, cfg.head_val_frac, cpu_gen)
        z = torch.randn(cfg.head_count, cfg.nz, generator=gen, device=dev)  # [N, nz]
        fakes = torch.cat([(G(z[i:i + FEATURE_BATCH]) + 1) * 0.5 for i in range(0, len(z), FEATURE_BATCH)])
        noise_fit = fit_ridge(d_features(D, fakes), z, cfg.head_val_frac, cpu_gen)
    metrics = {"head_label_val_mse": label_fit.val_mse, "head_label_ridge": label_fit.ratio,
               "head_noise_val_mse": noise_fit.val_mse, "head_noise_ridge": noise_fit.ratio}
    return noise_fit.head, label_fit.head, metrics


# --- the GAN phase ---------------------------------------------------------------------------------

class DCGANLoop:
    """Data draws, the D and G steps, logging, grids, head fits and checkpoints."""

    def __init__(self, cfg: DCGANConfig, domain: Domain, arch: DCGANNetConfig, sim: Simulator, run_dir: Path):
        self.cfg, self.domain, self.arch, self.sim, self.run_dir = cfg, domain, arch, sim, run_dir
        self.dev = domain.device
        torch.manual_seed(cfg.seed)  # G/D init is the same whether S was loaded or fitted
        self.G, self.D = DCGANGenerator(arch).to(self.dev), DCGANDiscriminator(arch).to(self.dev)
        init_weights(self.G, cfg.init_std)
        init_weights(self.D, cfg.init_std)
        betas = (float(cfg.betas[0]), float(cfg.betas[1]))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.noise_head = LinearHead(arch.feature_dim(), arch.nz).to(self.dev)
        self.label_head = LinearHead(arch.feature_dim(), domain.layout.dim).to(self.dev)
        self.pool = domain.real_train().images.to(self.dev, torch.float32)  # [N, C, S, S] in [0, 1]
        self.gen = torch.Generator(device=self.dev).manual_seed(cfg.seed + 1)  # real indices and z
        fixed = torch.Generator(device=self.dev).manual_seed(cfg.seed + 2)
        self.fixed_z = torch.randn(16, arch.nz, generator=fixed, device=self.dev)  # grids only
        self.acc = torch.zeros(len(SCALARS), device=self.dev)  # running sums since the last log
        self.acc_n = 0
        self.iteration = 0
        self.metrics: dict[str, float] = {}

    def step(self) -> None:
        """One iteration: a real batch and a z batch, one D update, one G update (seed / tutorial order)."""
        cfg = self.cfg
        idx = torch.randint(0, self.pool.shape[0], (cfg.batch_size,), generator=self.gen, device=self.dev)
        real = self.pool[idx] * 2 - 1  # [B, C, S, S] in [-1, 1]
        z = torch.randn(cfg.batch_size, self.arch.nz, generator=self.gen, device=self.dev)  # [B, nz]
        fake = self.G(z)  # [B, C, S, S]
        out_real, out_fake = self.D(real), self.D(fake.detach())  # [B] logits
        loss_d = d_loss(out_real, out_fake)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        out_g = self.D(fake)  # the updated D judges the same fakes
        loss_g = g_loss(out_g)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=list(self.G.parameters()))
        self.opt_g.step()
        values = [loss_d, loss_g, torch.sigmoid(out_real).mean(), torch.sigmoid(out_fake).mean(),
                  torch.sigmoid(out_g).mean()]
        self.acc.add_(torch.stack([v.detach().float() for v in values]))
        self.acc_n += 1
        self.iteration += 1

    def flush_scalars(self) -> dict[str, float]:
        """Average the accumulated scalars (one host sync per log interval) and reset them."""
        values = (self.acc / max(self.acc_n, 1)).tolist()
        self.acc.zero_()
        self.acc_n = 0
        return dict(zip(SCALARS, values, strict=True))

    @torch.no_grad()
    def sample_grid(self, writer: Any | None) -> None:
        """Rows: G at 16 fixed z (eval mode, as the bundle runs it), then 8 real images."""
        with eval_mode(self.G):
            fakes = (self.G(self.fixed_z) + 1) * 0.5
        rows = [fakes[:8], fakes[8:], self.pool[:8]]
        grid = save_grid(rows, self.run_dir / "samples" / f"iter_{self.iteration:07d}.png")
        if writer is not None:
            writer.add_image("samples", grid, self.iteration)

    def state(self) -> dict[str, Any]:
        return {
            "trainer": NAME,
            "iteration": self.iteration,
            "models": {"generator": self.G.state_dict(), "discriminator": self.D.state_dict(),
                       "noise_head": self.noise_head.state_dict(), "label_head": self.label_head.state_dict(),
                       "simulator": self.sim.state_dict()},
            "optimizers": {"generator": self.opt_g.state_dict(), "discriminator": self.opt_d.state_dict()},
            "acc": self.acc,
            "acc_n": self.acc_n,
            "rng": capture_rng({"data": self.gen}),
            "metrics": self.metrics,
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        for key, module in (("generator", self.G), ("discriminator", self.D), ("noise_head", self.noise_head),
                            ("label_head", self.label_head)):
            module.load_state_dict(ckpt["models"][key])
        self.opt_g.load_state_dict(ckpt["optimizers"]["generator"])
        self.opt_d.load_state_dict(ckpt["optimizers"]["discriminator"])
        self.acc = ckpt["acc"].to(self.dev)
        self.acc_n = int(ckpt["acc_n"])
        self.iteration = int(ckpt["iteration"])
        self.metrics = dict(ckpt["metrics"])
        restore_rng(ckpt["rng"], {"data": self.gen})

    def save(self, refit_head: bool = True) -> None:
        """Checkpoint; first refit the read-out head on the current D (skipped for a diverged run)."""
        if refit_head:
            t0 = time.perf_counter()
            self.noise_head, self.label_head, head = fit_heads(self.G, self.D, self.domain, self.cfg)
            head["head_fit_s"] = time.perf_counter() - t0
            self.metrics = {**self.metrics, **head}
            append_log(self.run_dir, {"phase": "head", "iteration": self.iteration, **head})
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state())

    def iteration_step(self) -> None:
        self.step()

    def log_interval(self, tick: float, writer: Any | None) -> dict[str, float]:
        n_iter = self.acc_n
        scalars = self.flush_scalars()
        scalars["ms_per_iter"] = 1000.0 * (time.perf_counter() - tick) / max(n_iter, 1)
        self.metrics = {**self.metrics, **scalars}
        write_scalars(self.run_dir, writer, self.iteration, scalars)
        error = non_finite(scalars, self.iteration)
        if error is not None:
            self.save(refit_head=False)  # a diverged D is not worth a head fit
            raise error
        return scalars

    def run(self, progress: ProgressFn | None = None) -> str:
        """Train to `cfg.iterations`; returns "completed" or "interrupted"; raises TrainingCollapsed."""
        return run_iterations(self, self.run_dir, progress)


# --- entry points ----------------------------------------------------------------------------------

def bundle_net(cfg: DCGANConfig, domain: Domain, simulator_c: int) -> NetConfig:
    """The bundle-facing sizes (nz, label_dim, image_size, channels); `c` is the simulator's width."""
    return NetConfig(image_size=cfg.image_size, channels=domain.channels, label_dim=domain.layout.dim, nz=cfg.nz,
                     c=simulator_c)


@register_trainer(NAME, config=DCGANConfig)
def train_dcgan(cfg: DCGANConfig, run_dir: Path, device: str = "auto", resume: bool = False,
                progress: ProgressFn | None = None, domain: Domain | None = None) -> dict[str, Any]:
    """Train DCGAN into `run_dir`; returns {"status", "iteration", "run_dir", **latest scalars}.

    Raises TrainingCollapsed (after checkpointing) when a loss becomes non-finite.
    """
    cfg.validate()
    dev = domain.device if domain is not None else resolve_device(device)
    torch.manual_seed(cfg.seed)
    if domain is None:  # tests may pass a ready Domain instead of a registered name
        domain = get_domain(cfg.domain, image_size=cfg.image_size, seed=cfg.seed, device=dev, **cfg.domain_kwargs)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    net = bundle_net(cfg, domain, cfg.simulator_c)
    log.info("phase 1/2: simulator S (for the bundle; DCGAN itself never uses it)")
    sim, sim_net = prepare_simulator(simulator_view(cfg), domain, net, run_dir)
    net = replace(net, c=sim_net.c)  # S only reads c, size, channels and label_dim: one NetConfig serves both
    write_options(run_dir, {**asdict(cfg), "betas": list(cfg.betas), "trainer": NAME,
                            "layout": domain.layout.name, "net": net.to_dict()})
    log.info("phase 2/2: DCGAN to iteration %d (the read-out head is refitted at every checkpoint)", cfg.iterations)
    loop = DCGANLoop(cfg, domain, cfg.arch(domain.channels), sim, run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        loop.load_state(load_checkpoint(ckpt_path, dev))
        log.info("resumed from iteration %d", loop.iteration)
    status = loop.run(progress)
    return {"status": status, "iteration": loop.iteration, "run_dir": str(run_dir), **loop.metrics}


@register_run_builder(NAME)
def _dcgan_modules(options: dict[str, Any], states: dict[str, Any], net: NetConfig, device: str) -> RunModules:
    """G wrapped to (z, labels) → [0, 1] (labels unused); image predictor = D features + the two heads."""
    arch = DCGANNetConfig(image_size=net.image_size, channels=net.channels, nz=net.nz, ngf=int(options["ngf"]),
                          ndf=int(options["ndf"]))
    G = build_module(DCGANGenerator, arch, states["generator"], device)
    D = build_module(DCGANDiscriminator, arch, states["discriminator"], device)
    sim = build_module(Simulator, net, states["simulator"], device)
    noise_head = build_module(lambda _: LinearHead(arch.feature_dim(), net.nz), arch, states["noise_head"], device)
    label_head = build_module(lambda _: LinearHead(arch.feature_dim(), net.label_dim), arch, states["label_head"],
                              device)
    assert G is not None and D is not None and sim is not None and noise_head is not None and label_head is not None
    assert isinstance(G, DCGANGenerator) and isinstance(D, DCGANDiscriminator)
    assert isinstance(noise_head, LinearHead) and isinstance(label_head, LinearHead)
    return RunModules(
        generator=UnconditionalGenerator(G, net.label_dim).eval(),
        simulator=sim,
        image_predictor=DCGANImagePredictor(D, noise_head, label_head).eval(),
        parts={"generator": G, "discriminator": D, "noise_head": noise_head, "label_head": label_head,
               "simulator": sim},
    )
