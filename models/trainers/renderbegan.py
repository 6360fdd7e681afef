"""`renderbegan` trainer: G, D, P against a frozen neural simulator S (thesis eq. 3.9, §4.1).

Phases of one run:
  1. simulator — load S from `simulator_run`, or fit it to the renderer here (`simulator.pt`);
  2. content   — build the frozen content-feature net (`models.content`), cached in the run dir;
  3. GAN       — iterations of 3 D steps, 1 P step, 1 G step, each its own Adam; k_t and M_global
                 after every iteration; scalars accumulated ON DEVICE and read (one host sync) only
                 at log intervals; collapse checks at log intervals; checkpoints every
                 `checkpoint_every` iterations, at the end and on SIGTERM/SIGINT.
Resume is exact: model/optimizer states, k_t, the log accumulators and every RNG (torch, CUDA,
numpy, python, the data generator that draws z, l and real-image indices) are in the checkpoint,
so an interrupted and resumed run equals the uninterrupted one bit for bit on CPU.

`init_from` is the other way to continue: a NEW run that takes over another run's whole GAN state
(networks, Adam moments, k_t, RNG streams, iteration) and goes on under its own, changed config — e.g.
a lower w_c once G carries the label. `--resume` forbids changing a run's options, on purpose; this keeps
the old run intact and records the source and every changed option in the new run's log. With the same
config it equals `--resume` bit for bit (tested).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch

from models.content import CONTENT_KINDS, LABEL_AWARE_LAYERS, LabelAwareConfig, build_content_features
from models.domains.base import Domain, get_domain
from models.losses import (
    ae_loss,
    content_loss,
    label_loss,
    m_global,
    mask_background,
    noise_loss,
    update_k,
)
from models.networks import Discriminator, Generator, NetConfig, Predictor, Simulator
from models.trainers.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from models.trainers.common import (
    ProgressFn,
    TrainingCollapsed,
    resolve_device,
    run_iterations,
    save_grid,
    write_scalars,
)
from models.trainers.registry import register_trainer
from models.trainers.run import (
    LOG_NAME,
    OPTIONS_NAME,
    append_log,
    load_run,
    read_log,
    read_options,
    write_options,
)
from models.trainers.simulator import evaluate_simulator, fit_simulator

log = logging.getLogger(__name__)

SIMULATOR_FILE = "simulator.pt"
CONTENT_FILE = "content_label_aware.pt"


@dataclass
class RenderBEGANConfig:
    """Defaults = thesis Fig. 4.1. Adam betas are not given there: we use BEGAN/DCGAN's (0.5, 0.999)."""

    domain: str = "faces-m"  # registered domain name
    domain_kwargs: dict[str, Any] = field(default_factory=dict)  # extra get_domain kwargs (e.g. pool sizes)
    image_size: int = 32  # pixels (power of two 8..128)
    seed: int = 0
    net: dict[str, Any] = field(default_factory=dict)  # NetConfig overrides (c, nz, nh, hidden, dropout_*)
    batch_size: int = 24  # B
    iterations: int = 50_000  # I_max
    d_steps: int = 3  # D updates per iteration
    lr_d: float = 5e-5  # λ_D
    lr_g: float = 5e-5  # λ_G
    lr_p: float = 5e-5  # λ_P
    betas: tuple[float, float] = (0.5, 0.999)  # Adam (β1, β2)
    w_c: float = 0.1  # weight of L_c in L_G
    w_z: float = 0.05  # weight of L_z in L_G
    gamma: float = 0.7  # BEGAN diversity ratio γ
    lambda_k: float = 1e-3  # proportional gain λ_k of the k_t controller
    k_init: float = 0.0  # k_0
    eta: int = 1  # norm of the autoencoder loss (1 or 2)
    categorical_loss: str = "ce"  # "ce" (cross-entropy on categorical slices) or "mse" (thesis)
    content: str = "label-aware"  # content features: label-aware | vgg16 | none
    vgg_weights: str | None = None  # local VGG16 state-dict file for content="vgg16"
    vgg_upsample: float = 7.0  # content="vgg16": input upsampling (thesis ×7; ×1 makes a CPU ablation feasible)
    label_aware_layer: str = "labels"  # content="label-aware": L_c on its label read-out or its feature map
    content_steps: int = 2000  # optimizer steps of the label-aware feature net
    content_run: str | None = None  # folder with a trained content_label_aware.pt to reuse; None = this run's
    content_batch: int = 64  # images per label-aware step
    simulator_run: str | None = None  # run dir with a trained S, or a folder with its simulator.pt; None = fit here
    simulator_steps: int = 5000  # S fitting steps when simulator_run is None
    simulator_batch: int = 64  # labels per S fitting step
    simulator_lr: float = 1e-3  # Adam lr for S fitting
    log_every: int = 50  # iterations between logged scalars (the only host syncs)
    sample_every: int = 1000  # iterations between image grids
    checkpoint_every: int = 1000  # iterations between checkpoints
    collapse_warmup: int = 2000  # iterations before collapse checks on M_global / diversity start
    mglobal_rise: float = 3.0  # collapse if M_global > this × its best logged value
    diversity_min: float = 1e-3  # collapse if G's std over z at fixed l / real std falls below this
    init_from: str | None = None  # run folder whose GAN checkpoint this run continues under THIS config (see below)
    amp: str = "none"  # "none" (fp32 reference) or "bf16" autocast
    cuda_graph: bool = False  # capture each iteration's updates as one CUDA graph (CUDA only; eager = reference)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks: list[tuple[bool, str, str]] = [
            (self.batch_size >= 2, "batch_size", "must be ≥ 2 (minibatch-stddev needs a batch)"),
            (self.iterations >= 1, "iterations", "must be ≥ 1"),
            (self.d_steps >= 1, "d_steps", "must be ≥ 1"),
            (min(self.lr_d, self.lr_g, self.lr_p) > 0, "lr_d/lr_g/lr_p", "must be > 0"),
            (0.0 <= self.gamma <= 1.0, "gamma", "must be in [0, 1]"),
            (0.0 <= self.k_init <= 1.0, "k_init", "must be in [0, 1]"),
            (self.eta in (1, 2), "eta", "must be 1 or 2"),
            (self.categorical_loss in ("ce", "mse"), "categorical_loss", "must be 'ce' or 'mse'"),
            (self.content in CONTENT_KINDS, "content", f"must be one of {', '.join(CONTENT_KINDS)}"),
            (self.amp in ("none", "bf16"), "amp", "must be 'none' or 'bf16'"),
            (min(self.log_every, self.sample_every, self.checkpoint_every) >= 1, "log_every/sample_every/"
             "checkpoint_every", "must be ≥ 1"),
            (self.w_c >= 0 and self.w_z >= 0, "w_c/w_z", "must be ≥ 0"),
            (self.vgg_upsample > 0, "vgg_upsample", "must be > 0"),
            (self.label_aware_layer in LABEL_AWARE_LAYERS, "label_aware_layer",
             f"must be one of {', '.join(LABEL_AWARE_LAYERS)}"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"{name}: {why}")
        if self.content_run is not None and not (Path(self.content_run) / CONTENT_FILE).is_file():
            raise ValueError(f"content_run: no {CONTENT_FILE} in {self.content_run}")
        if self.vgg_weights is not None and not Path(self.vgg_weights).is_file():
            raise ValueError(f"vgg_weights: no such file {self.vgg_weights}")
        if self.init_from is not None and not (Path(self.init_from) / CHECKPOINT_NAME).is_file():
            raise ValueError(f"init_from: no {CHECKPOINT_NAME} in {self.init_from} (it must be a RenderBEGAN run folder "
                             "that has reached its first checkpoint)")


GRAPH_WARMUP = 3  # eager iterations before capture (lets cuDNN/autotuning and optimizer state settle)
SCALARS = ("L_D", "L_G", "L_P", "L_c", "L_z", "L_l", "L_d_real", "L_d_fake", "k_t", "M_global")


@dataclass
class Nets:
    S: Simulator
    G: Generator
    D: Discriminator
    P: Predictor
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    opt_p: torch.optim.Adam


def _adam(module: torch.nn.Module, lr: float, betas: tuple[float, float], graph: bool) -> torch.optim.Adam:
    """Plain Adam for the eager reference; fused + capturable (state on device) for CUDA graphs."""
    if graph:
        return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, capturable=True, fused=True)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas)


class RenderBEGANLoop:
    """The GAN phase: data draws, the three update steps, logging, sampling and collapse checks."""

    def __init__(self, cfg: RenderBEGANConfig, domain: Domain, nets: Nets, feat: torch.nn.Module | None,
                 run_dir: Path):
        self.cfg, self.domain, self.nets, self.feat, self.run_dir = cfg, domain, nets, feat, run_dir
        self.dev = domain.device
        self.layout = domain.layout
        self.pool = domain.real_train().images.to(self.dev, torch.float32)  # [N, C, S, S], moved once
        self.gen = torch.Generator(device=self.dev).manual_seed(cfg.seed + 1)  # z, l, real indices
        self.k = torch.tensor(cfg.k_init, device=self.dev)
        self.parts = list(self.layout.part_slices())
        self.names = [*SCALARS, *(f"L_l/{p}" for p in self.parts)]
        self.acc = torch.zeros(len(self.names), device=self.dev)  # running sums since the last log
        self.acc_n = 0
        self.iteration = 0
        self.best_mglobal = math.inf
        self.metrics: dict[str, float] = {}
        # Autocast's weight-cast cache must be off under CUDA-graph capture (PyTorch's CUDA-graphs notes):
        # a cached cast made during capture would be freed while the graph still reads it.
        self.amp: Callable[[], AbstractContextManager[Any]] = (
            (lambda: torch.autocast(self.dev.type, dtype=torch.bfloat16, cache_enabled=not cfg.cuda_graph))
            if cfg.amp == "bf16" else nullcontext)
        self.g_params = list(nets.G.parameters())
        self.graph: torch.cuda.CUDAGraph | None = None  # captured `compute` (cuda_graph=True on CUDA)
        self.static: dict[str, torch.Tensor] = {}  # the graph's input buffers
        self.capturing = False
        self._warm = 0
        self.real_std = self.pool.std(dim=0).mean().clamp_min(1e-6)  # [] pixel std of the real pool
        fixed = torch.Generator(device=self.dev).manual_seed(cfg.seed + 2)  # grids and diversity only
        self.fixed_l = domain.sample_labels(8, fixed)  # [8, D]
        self.fixed_z = torch.randn(2, 8, nets.G.cfg.nz, generator=fixed, device=self.dev)  # [2, 8, Nz]
        self.div_z = torch.randn(8, nets.G.cfg.nz, generator=fixed, device=self.dev)  # [8, Nz]

    # --- data -----------------------------------------------------------------------------------
    def draw(self) -> dict[str, torch.Tensor]:
        """Every random input of one iteration, drawn from the data generator in a fixed order.

        Kept apart from the compute so the CUDA-graph path can copy it into static buffers; the
        renderer's mask for the G step is drawn here too (it is data, not a learned quantity).
        """
        cfg, nz, gen = self.cfg, self.nets.G.cfg.nz, self.gen
        out: dict[str, torch.Tensor] = {}
        for i in range(cfg.d_steps):
            idx = torch.randint(0, self.pool.shape[0], (cfg.batch_size,), generator=gen, device=self.dev)
            out[f"x{i}"] = self.pool[idx]  # [B, C, S, S]
            out[f"dz{i}"] = torch.randn(cfg.batch_size, nz, generator=gen, device=self.dev)  # [B, Nz]
            out[f"dl{i}"] = self.domain.sample_labels(cfg.batch_size, gen)  # [B, D]
        for step in ("p", "g"):
            out[f"{step}z"] = torch.randn(cfg.batch_size, nz, generator=gen, device=self.dev)
            out[f"{step}l"] = self.domain.sample_labels(cfg.batch_size, gen)
        if self.feat is not None and self.domain.mask_content:
            with torch.no_grad():
                out["gmask"] = self.domain.simulate(out["gl"])[1].float()  # [B, 1, S, S] object mask
        elif self.feat is not None:  # L_c on the whole image (see Domain.mask_content)
            out["gmask"] = self.pool.new_ones(cfg.batch_size, 1, self.domain.image_size, self.domain.image_size)
        return out

    # --- update steps (no host syncs, no allocation of persistent state: CUDA-graph capturable) ---
    def _zero(self, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=self.graph is None and not self.capturing)

    def d_step(self, x: torch.Tensor, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """L_D = L_d(x) − k_t L_d(G(z, l)) for θ_D (Algorithm A.2)."""
        n, cfg = self.nets, self.cfg
        with self.amp():
            with torch.no_grad():
                fake = n.G(z, labels)
            ld_real = ae_loss(x, n.D(x), cfg.eta).float().mean()
            ld_fake = ae_loss(fake, n.D(fake), cfg.eta).float().mean()
            loss = ld_real - self.k * ld_fake
        self._zero(n.opt_d)
        loss.backward()
        n.opt_d.step()
        return loss.detach(), ld_real.detach(), ld_fake.detach()

    def p_step(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """L_P = L_z + L_l on P(Enc(G(z, l))) for θ_P only (Algorithm A.3)."""
        n = self.nets
        with self.amp():
            with torch.no_grad():
                h = n.D.encode(n.G(z, labels))
            z_p, l_p = n.P.split(n.P(h).float())
            l_loss, parts = label_loss(l_p, labels, self.layout, self.cfg.categorical_loss)  # type: ignore[arg-type]
            loss = noise_loss(z_p, z) + l_loss
        self._zero(n.opt_p)
        loss.backward()
        n.opt_p.step()
        return loss.detach(), l_loss.detach(), {k: v.detach() for k, v in parts.items()}

    def g_step(self, z: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """L_G = L_d(G) + w_c L_c + w_z L_z for θ_G (Algorithm A.1); D, P, S, features stay fixed."""
        n, cfg = self.nets, self.cfg
        with self.amp():
            fake = n.G(z, labels)  # [B, C, S, S]
            h = n.D.encode(fake)  # [B, Nh]
            ld_fake = ae_loss(fake, n.D.decode(h), cfg.eta).float().mean()
            z_p, _ = n.P.split(n.P(h).float())
            lz = noise_loss(z_p, z)
            lc = torch.zeros((), device=self.dev)
            if self.feat is not None and mask is not None:
                with torch.no_grad():
                    sim = n.S(labels)  # [B, C, S, S]
                    f_sim = self.feat(sim)
                lc = content_loss(self.feat(mask_background(fake, sim, mask.to(fake.dtype))).float(), f_sim.float())
            loss = ld_fake + cfg.w_c * lc + cfg.w_z * lz
        self._zero(n.opt_g)
        loss.backward(inputs=self.g_params)
        n.opt_g.step()
        return loss.detach(), ld_fake.detach(), lc.detach(), lz.detach()

    def compute(self, b: dict[str, torch.Tensor]) -> None:
        """One iteration's updates: d_steps × D, then P, then G, then k_t; state changes are in place."""
        for i in range(self.cfg.d_steps):
            l_d, ld_real, _ = self.d_step(b[f"x{i}"], b[f"dz{i}"], b[f"dl{i}"])
        l_p, l_l, parts = self.p_step(b["pz"], b["pl"])
        l_g, ld_fake, l_c, l_z = self.g_step(b["gz"], b["gl"], b.get("gmask"))
        mg = m_global(ld_real, ld_fake, self.cfg.gamma)
        self.k.copy_(update_k(self.k, ld_real, ld_fake, self.cfg.gamma, self.cfg.lambda_k))
        values = [l_d, l_g, l_p, l_c, l_z, l_l, ld_real, ld_fake, self.k, mg, *(parts[p] for p in self.parts)]
        self.acc.add_(torch.stack([v.float() for v in values]))

    def iteration_step(self) -> None:
        """Draw the data, then run the updates eagerly or by replaying the captured CUDA graph."""
        batch = self.draw()
        if self.cfg.cuda_graph and self.dev.type == "cuda":
            self._graph_step(batch)
        else:
            self.compute(batch)
        self.acc_n += 1
        self.iteration += 1

    def _graph_step(self, batch: dict[str, torch.Tensor]) -> None:
        """Warm up eagerly on a side stream, capture `compute` once, then copy inputs + replay.

        Replaying removes the Python and kernel-launch overhead that dominates these small nets; the
        maths is the eager path's (same kernels, same data stream), so losses agree with it.
        """
        if self.graph is None:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.compute(batch)
            torch.cuda.current_stream().wait_stream(stream)
            self._warm += 1
            if self._warm < GRAPH_WARMUP:
                return
            self.static = {k: v.clone() for k, v in batch.items()}
            graph = torch.cuda.CUDAGraph()
            self.capturing = True
            try:
                with torch.cuda.graph(graph):
                    self.compute(self.static)
            except RuntimeError as exc:
                raise RuntimeError(f"CUDA-graph capture of the training iteration failed ({exc}); "
                                   "train with cuda_graph: false (the eager path computes the same)") from exc
            self.capturing = False
            self.graph = graph
            # capture recorded the work without doing it; the warm-up step above already trained on `batch`,
            # so undo nothing and simply return (this iteration counted once).
            return
        for key, value in batch.items():
            self.static[key].copy_(value)
        self.graph.replay()

    # --- logging, samples, collapse -------------------------------------------------------------
    @torch.no_grad()
    def diversity(self) -> float:
        """Pixel std of G over 8 z at each of 8 fixed labels, relative to the real pool's std."""
        G = self.nets.G
        nz, d = G.cfg.nz, self.fixed_l.shape[1]
        z = self.div_z[None].expand(8, -1, -1).reshape(-1, nz)  # [64, Nz]
        labels = self.fixed_l[:, None].expand(-1, 8, -1).reshape(-1, d)  # [64, D]
        out = G(z, labels).float().view(8, 8, -1)  # [label, z, pixels]
        return float(out.std(dim=1).mean() / self.real_std)

    def flush_scalars(self) -> dict[str, float]:
        """Average the accumulated scalars (the one host sync of a log interval) and reset them."""
        values = (self.acc / max(self.acc_n, 1)).tolist()
        self.acc.zero_()
        self.acc_n = 0
        return dict(zip(self.names, values, strict=True))

    def collapse_reason(self, scalars: dict[str, float]) -> str | None:
        cfg, it = self.cfg, self.iteration
        bad = [k for k, v in scalars.items() if not math.isfinite(v)]
        if bad:
            return f"non-finite losses at iteration {it}: {', '.join(bad)}"
        mg = scalars["M_global"]
        if it >= cfg.collapse_warmup and mg > cfg.mglobal_rise * self.best_mglobal:
            return (f"M_global rose to {mg:.4f} at iteration {it}, more than {cfg.mglobal_rise}× its best "
                    f"{self.best_mglobal:.4f} (divergence)")
        self.best_mglobal = min(self.best_mglobal, mg)
        div = scalars.get("diversity", math.inf)
        if it >= cfg.collapse_warmup and div < cfg.diversity_min:
            return (f"mode collapse at iteration {it}: G's variation over z at fixed labels is {div:.2e} of "
                    f"the real images' (threshold {cfg.diversity_min:.0e})")
        return None

    @torch.no_grad()
    def sample_grid(self, writer: Any | None) -> None:
        """Rows: S(l), G(z1, l), G(z2, l), real images (first 8 of the pool)."""
        n = self.nets
        rows = [n.S(self.fixed_l), n.G(self.fixed_z[0], self.fixed_l), n.G(self.fixed_z[1], self.fixed_l),
                self.pool[:8]]
        grid = save_grid(rows, self.run_dir / "samples" / f"iter_{self.iteration:07d}.png")
        if writer is not None:
            writer.add_image("samples", grid, self.iteration)

    # --- checkpoint -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        n = self.nets
        return {
            "trainer": "renderbegan",
            "iteration": self.iteration,
            "models": {"simulator": n.S.state_dict(), "generator": n.G.state_dict(),
                       "discriminator": n.D.state_dict(), "predictor": n.P.state_dict()},
            "optimizers": {"generator": n.opt_g.state_dict(), "discriminator": n.opt_d.state_dict(),
                           "predictor": n.opt_p.state_dict()},
            "k": self.k,
            "acc": self.acc,
            "acc_n": self.acc_n,
            "best_mglobal": self.best_mglobal,
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
        self.best_mglobal = float(ckpt["best_mglobal"])
        self.iteration = int(ckpt["iteration"])
        self.metrics = dict(ckpt["metrics"])
        restore_rng(ckpt["rng"], {"data": self.gen})

    def continue_from(self, ckpt: dict[str, Any]) -> None:
        """Take over another run's whole GAN state (`init_from`), then THIS config's Adam hyperparameters:
        `Optimizer.load_state_dict` restores the old run's learning rates and betas with its moments."""
        self.load_state(ckpt)
        cfg, n = self.cfg, self.nets
        for opt, lr in ((n.opt_g, cfg.lr_g), (n.opt_d, cfg.lr_d), (n.opt_p, cfg.lr_p)):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, tuple(cfg.betas)

    def save(self) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state())

    # --- the loop -------------------------------------------------------------------------------
    def log_interval(self, tick: float, writer: Any | None) -> dict[str, float]:
        """Scalars of the interval since `tick` (+ diversity, ms/iteration), logged; collapse checks raise."""
        n_iter = self.acc_n
        scalars = self.flush_scalars()
        scalars["diversity"] = self.diversity()
        scalars["ms_per_iter"] = 1000.0 * (time.perf_counter() - tick) / max(n_iter, 1)
        self.metrics = scalars
        write_scalars(self.run_dir, writer, self.iteration, scalars)
        reason = self.collapse_reason(scalars)
        if reason is not None:
            self.save()
            raise TrainingCollapsed(reason)
        return scalars

    def run(self, progress: ProgressFn | None = None) -> str:
        """Train to `cfg.iterations`; returns "completed" or "interrupted"; raises TrainingCollapsed."""
        return run_iterations(self, self.run_dir, progress)


def resolve_net(cfg: RenderBEGANConfig, domain: Domain) -> NetConfig:
    """NetConfig from the domain (size, channels, label dim) plus the config's overrides; conflicts fail."""
    fixed = {"image_size": cfg.image_size, "channels": domain.channels, "label_dim": domain.layout.dim}
    for key, value in fixed.items():
        if key in cfg.net and cfg.net[key] != value:
            raise ValueError(f"net.{key}: {cfg.net[key]} conflicts with the domain/config value {value}")
    return NetConfig.from_dict({**cfg.net, **fixed})


SIMULATOR_FIELDS = ("domain", "domain_kwargs", "image_size", "seed", "net", "simulator_run", "simulator_steps",
                    "simulator_batch", "simulator_lr")


def simulator_view(cfg: Any) -> RenderBEGANConfig:
    """The fields `prepare_simulator` / `resolve_net` read, taken from any method's config that has them,
    so every trainer fits or reuses S exactly as RenderBEGAN does (absent fields keep RenderBEGAN's default)."""
    return RenderBEGANConfig(**{k: getattr(cfg, k) for k in SIMULATOR_FIELDS if hasattr(cfg, k)})


def prepare_simulator(cfg: RenderBEGANConfig, domain: Domain, net: NetConfig, run_dir: Path) -> tuple[Simulator, NetConfig]:
    """Phase 1: S from `simulator_run`, from this run's `simulator.pt`, or fitted now; returned frozen."""
    src_dir = Path(cfg.simulator_run) if cfg.simulator_run is not None else None
    if src_dir is not None and not (src_dir / CHECKPOINT_NAME).exists() and (src_dir / SIMULATOR_FILE).exists():
        # a folder holding only a fitted S (e.g. checkpoints/faces-m-cpu): it must fit this config's nets
        sim = Simulator(net).to(domain.device)
        try:
            sim.load_state_dict(load_checkpoint(src_dir / SIMULATOR_FILE, domain.device)["state"])
        except RuntimeError as err:
            raise ValueError(f"simulator_run: {cfg.simulator_run}/{SIMULATOR_FILE} does not fit this config's "
                             f"net ({err.__class__.__name__}: sizes differ)") from None
        sim_net = net
    elif src_dir is not None:
        src = load_run(src_dir, device=str(domain.device))
        if src.domain != cfg.domain or src.net.image_size != net.image_size:
            raise ValueError(f"simulator_run: {cfg.simulator_run} is for {src.domain} at {src.net.image_size}px, "
                             f"this run needs {cfg.domain} at {net.image_size}px")
        sim, sim_net = cast(Simulator, src.simulator), src.net
    else:
        sim_net = net
        path = run_dir / SIMULATOR_FILE
        sim = Simulator(sim_net).to(domain.device)
        if path.exists():
            sim.load_state_dict(load_checkpoint(path, domain.device)["state"])
        else:
            log.info("phase 1/3: fitting the simulator S to the renderer (%d steps)", cfg.simulator_steps)
            torch.manual_seed(cfg.seed)
            sim = Simulator(sim_net).to(domain.device)
            opt = torch.optim.Adam(sim.parameters(), lr=cfg.simulator_lr)
            gen = torch.Generator(device=domain.device).manual_seed(cfg.seed)
            fit_simulator(domain, sim, opt, gen, 0, cfg.simulator_steps, cfg.simulator_batch)
            metrics, _, _ = evaluate_simulator(domain, sim, 64, cfg.seed)
            append_log(run_dir, {"phase": "simulator", "iteration": cfg.simulator_steps, **metrics})
            log.info("simulator fitted: %s", metrics)
            save_checkpoint(path, {"state": sim.state_dict(), "metrics": metrics})
    return sim.eval().requires_grad_(False), sim_net  # type: ignore[return-value]


def build_nets(cfg: RenderBEGANConfig, net: NetConfig, sim: Simulator, dev: torch.device) -> Nets:
    torch.manual_seed(cfg.seed)  # G/D/P init is the same whether S was loaded or fitted
    G, D, P = Generator(net).to(dev), Discriminator(net).to(dev), Predictor(net).to(dev)
    graph = cfg.cuda_graph and dev.type == "cuda"
    if cfg.cuda_graph and not graph:
        log.warning("cuda_graph needs a CUDA device: running the eager path on %s", dev)
    return Nets(S=sim, G=G, D=D, P=P, opt_g=_adam(G, cfg.lr_g, cfg.betas, graph),
                opt_d=_adam(D, cfg.lr_d, cfg.betas, graph), opt_p=_adam(P, cfg.lr_p, cfg.betas, graph))


def options_for(cfg: RenderBEGANConfig, domain: Domain, net: NetConfig, sim_net: NetConfig) -> dict[str, Any]:
    """What `training_options.json` holds: the full config plus trainer, layout and resolved nets."""
    out = {**asdict(cfg), "trainer": "renderbegan", "layout": domain.layout.name, "net": net.to_dict()}
    out["betas"] = list(cfg.betas)
    if sim_net != net:
        out["simulator_net"] = sim_net.to_dict()
    return out


def load_init(cfg: RenderBEGANConfig, net: NetConfig, dev: torch.device) -> dict[str, Any] | None:
    """`init_from`'s checkpoint, checked against this config before anything is written: a RenderBEGAN
    checkpoint, short of `iterations`, whose G, D and P have this config's tensor shapes."""
    if cfg.init_from is None:
        return None
    ckpt = load_checkpoint(Path(cfg.init_from) / CHECKPOINT_NAME, dev)
    if ckpt.get("trainer") != "renderbegan":
        raise ValueError(f"init_from: {cfg.init_from} holds a '{ckpt.get('trainer')}' checkpoint, not a RenderBEGAN one")
    if int(ckpt["iteration"]) >= cfg.iterations:
        raise ValueError(f"iterations: {cfg.iterations} must exceed init_from's iteration {ckpt['iteration']}")
    for key, cls in (("generator", Generator), ("discriminator", Discriminator), ("predictor", Predictor)):
        want = {k: v.shape for k, v in cls(net).state_dict().items()}
        have = {k: v.shape for k, v in ckpt["models"][key].items()}
        if want != have:
            raise ValueError(f"init_from: the {key} in {cfg.init_from} does not fit this config's net (sizes differ; "
                             "keep its `net` options)")
    return ckpt


def inherit_phases(cfg: RenderBEGANConfig, source_options: dict[str, Any]) -> RenderBEGANConfig:
    """With `init_from`, S and the content net default to the source run's, so L_c keeps comparing G with
    the simulator and features it was trained against (and S is not fitted again for nothing)."""
    src = Path(cast(str, cfg.init_from))
    content = cfg.content_run or (cfg.init_from if (src / CONTENT_FILE).is_file() else source_options.get("content_run"))
    out = replace(cfg, simulator_run=cfg.simulator_run or cfg.init_from, content_run=content)
    out.validate()
    return out


def start_log_from_init(cfg: RenderBEGANConfig, source_options: dict[str, Any], run_dir: Path, iteration: int) -> None:
    """Begin this run's log with the source run's records up to its checkpoint, then one naming the source
    and every option that changed, so loss curves and the loop time (`loop_seconds`) cover the whole history."""
    (run_dir / LOG_NAME).unlink(missing_ok=True)  # a run that stopped before its first checkpoint starts over
    for row in read_log(cast(str, cfg.init_from)):
        if "iteration" in row and int(row["iteration"]) <= iteration:
            append_log(run_dir, row)
    inherited = {"simulator_run": cfg.init_from, "content_run": cfg.init_from}  # inherit_phases' bookkeeping
    changed = {k: v for k, v in asdict(cfg).items() if k not in ("iterations", "init_from", "net", "betas")
               and k in source_options and source_options[k] != v and inherited.get(k) != v}
    append_log(run_dir, {"phase": "init_from", "iteration": iteration, "source": cfg.init_from, "changed": changed})


@register_trainer("renderbegan")
def train_renderbegan(
    cfg: RenderBEGANConfig,
    run_dir: Path,
    device: str = "auto",
    resume: bool = False,
    progress: ProgressFn | None = None,
    domain: Domain | None = None,
) -> dict[str, Any]:
    """Train RenderBEGAN into `run_dir`; returns {"status", "iteration", "run_dir", **latest scalars}.

    Raises TrainingCollapsed (after checkpointing) when collapse detection fires.
    """
    cfg.validate()
    dev = domain.device if domain is not None else resolve_device(device)
    torch.manual_seed(cfg.seed)
    if domain is None:  # tests and notebooks may pass a ready Domain instead of a registered name
        domain = get_domain(cfg.domain, image_size=cfg.image_size, seed=cfg.seed, device=dev, **cfg.domain_kwargs)
    net = resolve_net(cfg, domain)
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    own = resume and ckpt_path.exists()
    init = None if own else load_init(cfg, net, dev)
    source_options: dict[str, Any] = {}
    if init is not None:
        src = Path(cast(str, cfg.init_from))
        source_options = read_options(src) if (src / OPTIONS_NAME).is_file() else {}
        cfg = inherit_phases(cfg, source_options)
    run_dir.mkdir(parents=True, exist_ok=True)
    sim, sim_net = prepare_simulator(cfg, domain, net, run_dir)
    write_options(run_dir, options_for(cfg, domain, net, sim_net))
    log.info("phase 2/3: content features '%s'", cfg.content)
    feat = build_content_features(
        cfg.content, domain, seed=cfg.seed, cache_path=Path(cfg.content_run or run_dir) / CONTENT_FILE,
        label_aware=LabelAwareConfig(steps=cfg.content_steps, batch_size=cfg.content_batch),
        vgg_weights=cfg.vgg_weights, vgg_upsample=cfg.vgg_upsample, layer=cfg.label_aware_layer,
    )
    log.info("phase 3/3: GAN training to iteration %d", cfg.iterations)
    loop = RenderBEGANLoop(cfg, domain, build_nets(cfg, net, sim, dev), feat, run_dir)
    if own:
        loop.load_state(load_checkpoint(ckpt_path, dev))
        log.info("resumed from iteration %d", loop.iteration)
    elif init is not None:
        loop.continue_from(init)
        start_log_from_init(cfg, source_options, run_dir, loop.iteration)
        log.info("continuing %s from its iteration %d under this config", cfg.init_from, loop.iteration)
    status = loop.run(progress)
    return {"status": status, "iteration": loop.iteration, "run_dir": str(run_dir), **loop.metrics}
