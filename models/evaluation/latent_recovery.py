"""Latent recovery and attribute editing of real images (seed 002 §3.3.5, §3.3.9, §3.4).

Recovery finds (z, l) with G(z, l) ≈ x by Adam on the latent alone, G frozen ("we used only the
Generator and an Adam optimizer to fine-tune the latent vector"), under one of four image losses:
`mse`, `ssim` (1 − SSIM), `ms-ssim` (1 − MS-SSIM) and `features` (MSE between feature maps).
The seed's feature loss used VGG-16's first 23 layers; no ImageNet weights can be had here, so the
feature space is the model's own image predictor — its conv trunk (`features`) when it has one,
as InfoBEGAN's noise predictor P does, else its whole output.

Labels are optimised in their standardized units; categorical fields as logits fed to G through a
softmax (`code_to_labels`), so the class stays on the simplex G was trained on. The start is the
predictor's reading of x (`init="predictor"`), or the prior's centre (`init="zero"`).

Editing = recover, overwrite the named label fields (human units, converted by the layout), and
regenerate with the recovered z. `compare_losses` says which loss recovers *labels* best, on images
whose labels are known (generated G(z, l) and simulator S(l) images).

Everything here works from a run (PyTorch modules) or a bundle (TorchScript, which keeps autograd:
the bundle's `.ts` files are loaded again outside `Bundle`'s inference mode after it verified them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from models.evaluation import metrics
from models.layouts import LabelLayout, LayoutError, get_layout, sample_prior
from models.networks.infobegan import code_to_labels, ms_ssim, ssim

RECOVERY_LOSSES: tuple[str, ...] = ("mse", "ssim", "ms-ssim", "features")
INITS: tuple[str, ...] = ("predictor", "zero")

ImageFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RecoveryModel:
    """A differentiable generator plus what recovery needs around it (from a run or a bundle)."""

    name: str
    layout: LabelLayout
    nz: int
    image_size: int
    channels: int
    generator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z, l) → [B, C, S, S], differentiable
    simulator: Callable[[torch.Tensor], torch.Tensor]  # l → [B, C, S, S] (labeled probe images)
    predictor: ImageFn  # images → [B, nz + D]
    features: ImageFn  # images → any-shape features for the `features` loss


@dataclass(frozen=True)
class RecoveryConfig:
    loss: str = "ms-ssim"  # one of RECOVERY_LOSSES
    steps: int = 300  # Adam steps on (z, l)
    lr: float = 0.05  # Adam learning rate on the latent
    init: str = "predictor"  # "predictor" (P's reading of the image) or "zero" (prior centre)
    prior_weight: float = 1e-3  # weight of ‖z‖² + ‖l_continuous‖² (mean): keeps the latent near the prior

    def validate(self) -> None:
        if self.loss not in RECOVERY_LOSSES:
            raise ValueError(f"loss: must be one of {', '.join(RECOVERY_LOSSES)}, got {self.loss!r}")
        if self.init not in INITS:
            raise ValueError(f"init: must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.steps < 0:
            raise ValueError("steps: must be ≥ 0")
        if self.lr <= 0:
            raise ValueError("lr: must be > 0")
        if self.prior_weight < 0:
            raise ValueError("prior_weight: must be ≥ 0")


@dataclass
class Recovery:
    z: torch.Tensor  # [B, nz]
    labels: torch.Tensor  # [B, D] standardized; categorical slices are softmax probabilities
    images: torch.Tensor  # [B, C, S, S] G(z, labels), clamped to [0, 1]
    distance: torch.Tensor  # [B] final image loss per sample
    mse: torch.Tensor  # [B] pixel MSE of the reconstruction (comparable across losses)


# --- models ---------------------------------------------------------------------------------------

def _features_of(predictor: torch.nn.Module) -> ImageFn:
    """The predictor's conv trunk when it has one (InfoBEGAN's P), else its whole output."""
    trunk = getattr(predictor, "features", None)
    return trunk if isinstance(trunk, torch.nn.Module) else predictor


def model_from_run(run_dir: str | Path, device: str = "cpu") -> RecoveryModel:
    """Recovery model from a training run's latest checkpoint (any trainer with G and a predictor)."""
    from models.trainers.run import load_run

    run = load_run(run_dir, device)
    if run.generator is None or run.image_predictor is None:
        raise ValueError(f"run: {run_dir} (trainer '{run.trainer}') has no generator and predictor to recover with")
    gen, pred = run.generator.requires_grad_(False), run.image_predictor.requires_grad_(False)
    return RecoveryModel(name=Path(run_dir).name, layout=get_layout(run.layout), nz=run.net.nz,
                         image_size=run.net.image_size, channels=run.net.channels,
                         generator=lambda z, labels: gen(z, labels).clamp(0, 1), simulator=run.simulator,
                         predictor=pred, features=_features_of(pred))


def model_from_bundle(bundle_dir: str | Path, device: str = "cpu") -> RecoveryModel:
    """Recovery model from a bundle: `Bundle.load` verifies hashes, layout and shapes; the TorchScript
    files are then loaded as plain modules, because `Bundle` runs them under inference mode (no autograd)."""
    import warnings

    from models.runtime import Bundle

    b = Bundle.load(bundle_dir, engine="torchscript", device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript deprecation notice
        nets = {n: torch.jit.load(str(b.path / f"{n}.ts"), map_location=device).eval()
                for n in ("generator", "simulator", "predictor")}
    for net in nets.values():
        for p in net.parameters():  # ScriptModules have no requires_grad_(); gradients are for the latent only
            p.requires_grad_(False)
    return RecoveryModel(name=b.name, layout=b.layout, nz=b.nz, image_size=b.image_size, channels=b.channels,
                         generator=nets["generator"], simulator=nets["simulator"], predictor=nets["predictor"],
                         features=_features_of(nets["predictor"]))


# --- recovery -------------------------------------------------------------------------------------

def image_distance(kind: str, x: torch.Tensor, target: torch.Tensor, features: ImageFn) -> torch.Tensor:
    """Per-sample loss between images in [0, 1]: [B, C, S, S] × 2 → [B]."""
    if kind == "mse":
        return (x - target).pow(2).flatten(1).mean(1)
    if kind == "ssim":
        return 1.0 - ssim(x, target)
    if kind == "ms-ssim":
        return 1.0 - ms_ssim(x, target)
    if kind == "features":
        return (features(x) - features(target)).pow(2).flatten(1).mean(1)
    raise ValueError(f"loss: must be one of {', '.join(RECOVERY_LOSSES)}, got {kind!r}")


def _continuous_mask(layout: LabelLayout, like: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(layout.dim, dtype=torch.bool, device=like.device)
    for f in layout.fields:
        if f.kind == "categorical":
            mask[f.slice] = False
    return mask


def recover_latent(model: RecoveryModel, images: torch.Tensor, cfg: RecoveryConfig = RecoveryConfig(),
                   seed: int = 0) -> Recovery:
    """Fit (z, l) so that G(z, l) matches `images` [B, C, S, S] in [0, 1] under `cfg.loss`.

    Each image's latent is fitted independently (the loss is a sum of per-image terms and Adam is
    elementwise), so results do not depend on what else is in the batch.
    """
    cfg.validate()
    want = (model.channels, model.image_size, model.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise ValueError(f"images: expected [B, {want[0]}, {want[1]}, {want[2]}], got {list(images.shape)}")
    torch.manual_seed(seed)
    target = images.float()
    with torch.no_grad():
        if cfg.init == "predictor":
            start = model.predictor(target).float()
            z0, code0 = start[:, : model.nz], start[:, model.nz:]
        else:
            z0 = target.new_zeros(len(target), model.nz)
            code0 = target.new_zeros(len(target), model.layout.dim)
    z = z0.clone().requires_grad_(True)
    code = code0.clone().requires_grad_(True)
    cont = _continuous_mask(model.layout, code)
    opt = torch.optim.Adam([z, code], lr=cfg.lr)
    with torch.enable_grad():
        for _ in range(cfg.steps):
            dist = image_distance(cfg.loss, model.generator(z, code_to_labels(code, model.layout)), target,
                                  model.features)
            prior = z.pow(2).mean(1) + code[:, cont].pow(2).mean(1)
            opt.zero_grad(set_to_none=True)
            (dist + cfg.prior_weight * prior).sum().backward()
            opt.step()
    with torch.no_grad():
        labels = code_to_labels(code, model.layout)
        out = model.generator(z, labels).clamp(0, 1)
        dist = image_distance(cfg.loss, out, target, model.features)
        mse = (out - target).pow(2).flatten(1).mean(1)
    return Recovery(z=z.detach(), labels=labels.detach(), images=out, distance=dist, mse=mse)


# --- editing --------------------------------------------------------------------------------------

def parse_assignments(items: list[str], layout: LabelLayout) -> dict[str, float]:
    """`["yaw_deg=20", "shape[3]=1.5"]` → {"yaw_deg": 20.0, "shape[3]": 1.5}, checked against the layout."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set: '{item}' is not FIELD=VALUE")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{key}: '{raw}' is not a number") from None
        _slot(layout, key)  # names an unknown field or a bad index now, before any work
        out[key] = value
    return out


def _slot(layout: LabelLayout, key: str) -> tuple[str, int | None]:
    """'yaw_deg' → ('yaw_deg', None); 'shape[3]' → ('shape', 3); errors name the key."""
    name, bracket, rest = key.partition("[")
    f = layout[name]  # LayoutError names an unknown field
    if not bracket:
        if f.is_vector:
            raise LayoutError(key, f"'{name}' has {f.size} slots: set one as {name}[i]")
        return name, None
    if not f.is_vector:
        raise LayoutError(key, f"'{name}' is not a vector field; address it as '{name}'")
    index = rest[:-1]
    if not rest.endswith("]") or not index.isdigit() or int(index) >= f.size:
        raise LayoutError(key, f"not a slot of '{name}'; use {name}[i] with i in 0..{f.size - 1}")
    return name, int(index)


def edit_labels(labels: torch.Tensor, changes: Mapping[str, float], layout: LabelLayout) -> torch.Tensor:
    """Overwrite fields of standardized labels [B, D] with human-unit values (class index for categorical)."""
    out = labels.clone()
    for key, value in changes.items():
        name, index = _slot(layout, key)
        f = layout[name]
        if index is not None:
            out[:, f.start + index] = float((value - f.offset) / f.scale)
        else:
            out[:, f.slice] = torch.as_tensor(f.to_standardized(value), dtype=out.dtype, device=out.device)
    return out


def edit_images(model: RecoveryModel, images: torch.Tensor, changes: Mapping[str, float],
                cfg: RecoveryConfig = RecoveryConfig(), seed: int = 0) -> tuple[torch.Tensor, Recovery]:
    """Recover each image's latent, set the named fields, regenerate: → (edited [B, C, S, S], recovery)."""
    rec = recover_latent(model, images, cfg, seed)
    with torch.no_grad():
        edited = model.generator(rec.z, edit_labels(rec.labels, changes, model.layout)).clamp(0, 1)
    return edited, rec


# --- which loss recovers labels best --------------------------------------------------------------

def label_errors(pred: torch.Tensor, target: torch.Tensor, layout: LabelLayout) -> dict[str, float]:
    """Per field: categorical error rate, continuous RMSE in σ (standardized units, so fields compare);
    single-slot fields also as MAE in their human unit (e.g. yaw in degrees). `label_error`, the mean of
    the error rates and σ-RMSEs, is the one figure losses are ranked by (lower is better)."""
    ranked: dict[str, float] = {}
    human: dict[str, float] = {}
    for f in layout.fields:
        if f.kind == "categorical":
            ranked[f"{f.name}_error_rate"] = 1.0 - metrics.class_accuracy(pred, target, f)
            continue
        diff = (pred[:, f.slice] - target[:, f.slice]).double()
        ranked[f"{f.name}_rmse_sigma"] = float(diff.pow(2).mean().sqrt())
        if f.size == 1:
            human[f"{f.name}_mae"] = metrics.field_mae(pred, target, f)
    return {**ranked, **human, "label_error": sum(ranked.values()) / len(ranked)}


def probe_sets(model: RecoveryModel, n: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Images with known labels: generated G(z, l) and simulator S(l), for prior labels l (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    labels = sample_prior(model.layout, n, gen)
    z = torch.randn(n, model.nz, generator=gen)
    with torch.no_grad():
        generated = model.generator(z, labels).clamp(0, 1).float()
        simulated = model.simulator(labels).clamp(0, 1).float()
    return {"generated": (generated, labels), "simulator": (simulated, labels)}


def compare_losses(model: RecoveryModel, images: torch.Tensor, labels: torch.Tensor,
                   cfg: RecoveryConfig = RecoveryConfig(), losses: tuple[str, ...] = RECOVERY_LOSSES,
                   seed: int = 0) -> dict[str, object]:
    """Recover `images` (true standardized `labels` known) under each loss; rank by `label_error`.

    Returns {"predictor": P's direct reading, "losses": {loss: figures}, "best": loss name}; figures
    are label_errors plus the reconstruction's pixel MSE and seconds taken.
    """
    with torch.no_grad():
        direct = model.predictor(images.float())[:, model.nz:]
    rows: dict[str, dict[str, float]] = {}
    for loss in losses:
        t0 = time.perf_counter()
        rec = recover_latent(model, images, RecoveryConfig(**{**cfg.__dict__, "loss": loss}), seed)
        rows[loss] = {**label_errors(rec.labels, labels, model.layout), "image_mse": float(rec.mse.mean()),
                      "seconds": round(time.perf_counter() - t0, 2)}
    best = min(rows, key=lambda k: rows[k]["label_error"])
    return {"predictor": label_errors(direct, labels, model.layout), "losses": rows, "best": best,
            "config": {**cfg.__dict__, "count": len(images)}}


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """One [C, S, S] image in [0, 1] → PNG (grey for 1 channel)."""
    from PIL import Image

    arr = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(arr[0].numpy(), "L") if arr.shape[0] == 1 else Image.fromarray(arr.permute(1, 2, 0).numpy())
    pil.save(path)

