"""Export trained networks as a *bundle*: TorchScript + ONNX + a self-describing manifest.

    bundles/NAME/
      manifest.json        name, domain, layout, sizes, Nz, trainer + config, evaluation, sha256 of every file
      generator.ts/.onnx   (z [B, Nz], labels [B, D]) → images [B, C, S, S] in [0, 1] (clamped in the graph)
      simulator.ts/.onnx   labels [B, D] → images [B, C, S, S] in [0, 1]
      predictor.ts/.onnx   images [B, C, S, S] in [0, 1] → concat(z̃, l̃) [B, Nz + D]  (D's encoder + P, fused)

Both formats have a dynamic batch dimension; `models.runtime.Bundle` runs either and refuses a bundle
whose files do not match the manifest's hashes. The sha256 of `manifest.json` is the bundle's
identity (recorded in every shard's `.json`).

`python -m models.export --placeholder faces-m bundles/faces-m` builds an *untrained* bundle from
seeded, randomly initialised default-size networks, so the service works before any training run.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.layouts import LabelLayout, get_layout
from models.networks import Discriminator, Generator, ImagePredictor, NetConfig, Predictor, Simulator

log = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
ONNX_OPSET = 17
MANIFEST = "manifest.json"
NETWORKS = ("generator", "simulator", "predictor")
ENGINE_SUFFIX = {"torchscript": ".ts", "onnx": ".onnx"}
EVAL_REPORT = Path("eval") / "report.json"  # where `labelforge eval --run` leaves its report by default


class GeneratorExport(nn.Module):
    """G with the pixel clamp inside the graph (G has no output activation)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # -> [B, C, S, S]
        return self.generator(z, labels).clamp(0.0, 1.0)


def sha256_file(path: Path) -> str:
    """Streaming sha256 of a file: the manifest's integrity record, re-checked by `Bundle.load`."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _export_one(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], output: str,
                out_dir: Path, stem: str) -> None:
    """TorchScript (trace) and ONNX (opset 17, dynamic batch) of one eval-mode CPU module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks turned into constants
        with torch.no_grad():
            traced = torch.jit.trace(module, args, check_trace=False)
        traced.save(str(out_dir / f"{stem}.ts"))
        torch.onnx.export(
            module,
            args,
            str(out_dir / f"{stem}.onnx"),
            input_names=names,
            output_names=[output],
            dynamic_axes={n: {0: "batch"} for n in [*names, output]},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def export_bundle(
    out_dir: Path | str,
    *,
    name: str,
    domain: str,
    layout: LabelLayout,
    net: NetConfig,
    generator: nn.Module,
    simulator: nn.Module,
    image_predictor: nn.Module,
    trainer: str = "renderbegan",
    trainer_config: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    trained: bool = True,
) -> Path:
    """Write a bundle directory (replacing `out_dir` atomically) and return its path."""
    if layout.dim != net.label_dim:
        raise ValueError(f"net.label_dim: {net.label_dim} does not match layout '{layout.name}' ({layout.dim} dims)")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        g, s, p = (copy.deepcopy(m).cpu().float().eval() for m in (generator, simulator, image_predictor))
        b, size = 2, net.image_size
        z = torch.randn(b, net.nz)
        labels = torch.randn(b, net.label_dim)
        images = torch.rand(b, net.channels, size, size)
        _export_one(GeneratorExport(g).eval(), (z, labels), ["z", "labels"], "images", tmp, "generator")
        _export_one(s, (labels,), ["labels"], "images", tmp, "simulator")
        _export_one(p, (images,), ["images"], "z_labels", tmp, "predictor")
        files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        manifest = {
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": name,
            "domain": domain,
            "trained": trained,
            "layout": layout.describe(),
            "image_size": net.image_size,
            "channels": net.channels,
            "nz": net.nz,
            "label_dim": net.label_dim,
            "net": net.to_dict(),
            "trainer": trainer,
            "trainer_config": trainer_config or {},
            "evaluation": evaluation,
            "io": {
                "generator": "z [B, nz] float32 N(0,1), labels [B, label_dim] standardized → images [B, C, S, S] in [0, 1]",
                "simulator": "labels [B, label_dim] → images [B, C, S, S] in [0, 1]",
                "predictor": "images [B, C, S, S] float32 in [0, 1] → [B, nz + label_dim] = concat(z, labels)",
            },
            "onnx_opset": ONNX_OPSET,
            "torch_version": torch.__version__.split("+")[0],
            "files": files,
        }
        (tmp / MANIFEST).write_text(_manifest_text(manifest))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("exported bundle %s to %s", name, out_dir)
    return out_dir


def attach_evaluation(bundle_dir: Path | str, report: dict[str, Any]) -> None:
    """Put `report` (a `labelforge eval` report) into the bundle's manifest, written atomically.

    Why: a bundle's figures must travel with it (`GET /models`, the dataset card), and a bundle may be
    re-evaluated long after its run is gone (a better protocol, a fixed baseline). The networks and their
    hashes are untouched; the bundle's identity (sha256 of manifest.json) changes, as it should."""
    path = Path(bundle_dir) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["evaluation"] = report
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(_manifest_text(manifest))
    os.replace(tmp, path)


def _manifest_text(manifest: dict[str, Any]) -> str:
    """The one serialization of manifest.json: its bytes are the bundle's identity (sha256)."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def export_run(run_dir: Path | str, out_dir: Path | str, name: str | None = None) -> Path:
    """Export a training run's latest checkpoint (and its evaluation report, if any) as a bundle."""
    from models.trainers.run import load_run

    run = load_run(run_dir, device="cpu")
    missing = [k for k in ("generator", "image_predictor") if getattr(run, k) is None]
    if missing:
        raise ValueError(f"run {run_dir}: trainer '{run.trainer}' has no {', '.join(missing)}; only a run that "
                         "both generates and predicts can be exported as a bundle")
    report = Path(run_dir) / EVAL_REPORT
    evaluation = json.loads(report.read_text()) if report.exists() else None
    return export_bundle(
        out_dir,
        name=name or Path(out_dir).name,
        domain=run.domain,
        layout=get_layout(run.layout),
        net=run.net,
        generator=run.generator,  # type: ignore[arg-type]
        simulator=run.simulator,
        image_predictor=run.image_predictor,  # type: ignore[arg-type]
        trainer=run.trainer,
        trainer_config={**run.config, "iteration": run.iteration},
        evaluation=evaluation,
    )


PLACEHOLDERS: dict[str, tuple[str, dict[str, int]]] = {  # bundle name → (layout, NetConfig overrides)
    "faces-m": ("faces", {"channels": 3, "c": 24}),  # c=24: default c=32 makes a 26 MB bundle (limit 20 MB)
    "faces": ("faces", {"channels": 3, "c": 24}),
    "digits": ("digits", {"channels": 1}),
}


def export_placeholder(domain: str, out_dir: Path | str, seed: int = 0, **net_overrides: int) -> Path:
    """An untrained bundle of seeded default-size networks (manifest says `"trained": false`)."""
    if domain not in PLACEHOLDERS:
        raise ValueError(f"domain: no placeholder recipe for '{domain}'; known: {', '.join(PLACEHOLDERS)}")
    layout_name, overrides = PLACEHOLDERS[domain]
    layout = get_layout(layout_name)
    net = NetConfig.from_dict({"label_dim": layout.dim, **overrides, **net_overrides})
    torch.manual_seed(seed)
    return export_bundle(
        out_dir,
        name=Path(out_dir).name,
        domain=domain,
        layout=layout,
        net=net,
        generator=Generator(net),
        simulator=Simulator(net),
        image_predictor=ImagePredictor(Discriminator(net), Predictor(net)),
        trainer="untrained",
        trainer_config={"seed": seed, "note": "randomly initialised placeholder; replace with a trained bundle"},
        trained=False,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a run, or build an untrained placeholder bundle.")
    parser.add_argument("--placeholder", metavar="DOMAIN", help="build an untrained bundle for DOMAIN")
    parser.add_argument("--run", help="run directory to export")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("out", help="bundle directory to write")
    args = parser.parse_args(argv)
    if bool(args.placeholder) == bool(args.run):
        parser.error("give exactly one of --placeholder DOMAIN or --run RUN_DIR")
    logging.basicConfig(level=logging.INFO)
    if args.placeholder:
        export_placeholder(args.placeholder, args.out, seed=args.seed)
    else:
        export_run(args.run, args.out)


if __name__ == "__main__":
    main()
