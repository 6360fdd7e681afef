"""Run an exported bundle: `Bundle.load(path, engine="onnx"|"torchscript", device="cpu"|"cuda")`.

Loading is where trust is decided: every file listed in the manifest must exist with the recorded
sha256, the layout must be one this code knows *and* match it field for field, and the networks must
answer with the shapes the manifest promises. Anything else is a `BundleError` that names the file
and the reason, so a tampered or half-copied bundle never produces images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.export import BUNDLE_FORMAT_VERSION, ENGINE_SUFFIX, MANIFEST, NETWORKS, sha256_file
from models.layouts import LabelLayout, LayoutError, get_layout

log = logging.getLogger(__name__)


class BundleError(ValueError):
    """A bundle that cannot be trusted or used: missing, tampered, mismatched. The message says which file."""


class _TorchScriptNet:
    def __init__(self, path: Path, device: torch.device):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream, still the portable format
            self.module = torch.jit.load(str(path), map_location=device).eval()
        self.device = device

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(*(x.to(self.device, torch.float32) for x in inputs))


class _OnnxNet:
    def __init__(self, path: Path, device: torch.device, threads: int | None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads sleep instead of spin-waiting for the next Run. Between two generator
        # batches the engine's encode and writer threads need the cores; spinning threads took them
        # (measured on a loaded 2-core machine: a 4000-image dataset 12.9 s → 9.1 s, median of 4).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.names = [i.name for i in self.session.get_inputs()]
        self.providers = self.session.get_providers()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {n: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32) for n, x in zip(self.names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


class Bundle:
    """A loaded bundle. `device` is where `generate`/`simulate`/`predict` return their tensors."""

    def __init__(self, path: Path, manifest: dict[str, Any], sha: str, layout: LabelLayout, engine: str,
                 device: torch.device, nets: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self.sha = sha  # sha256 of manifest.json: the bundle's identity
        self.layout = layout
        self.engine = engine
        self.name: str = manifest["name"]
        self.domain: str = manifest["domain"]
        self.nz: int = int(manifest["nz"])
        self.image_size: int = int(manifest["image_size"])
        self.channels: int = int(manifest["channels"])
        self.trained: bool = bool(manifest.get("trained", True))
        # False for unconditional generators (dcgan): images do not follow the labels they are paired with
        self.label_conditioned: bool = bool((manifest.get("trainer_config") or {}).get("label_conditioned", True))
        self.device = device
        self._nets = nets

    def __repr__(self) -> str:
        return f"Bundle({self.name!r}, engine={self.engine!r}, device={str(self.device)!r}, sha={self.sha[:12]})"

    @classmethod
    def load(cls, path: Path | str, engine: str = "onnx", device: str = "cpu", threads: int | None = None) -> Bundle:
        """Verify and load. `threads` caps ONNX Runtime's intra-op threads (None = its default)."""
        path = Path(path)
        if engine not in ENGINE_SUFFIX:
            raise BundleError(f"engine: must be one of {', '.join(ENGINE_SUFFIX)}, got {engine!r}")
        if device.startswith("cuda") and not torch.cuda.is_available() and engine == "torchscript":
            raise BundleError("device: CUDA requested but not available")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{manifest_path}: missing (is {path} a bundle directory?)")
        raw = manifest_path.read_bytes()
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
        version = manifest.get("format_version")
        if version != BUNDLE_FORMAT_VERSION:
            raise BundleError(f"{manifest_path}: format_version {version!r} not supported (expected {BUNDLE_FORMAT_VERSION})")
        for key in ("name", "domain", "layout", "image_size", "channels", "nz", "files"):
            if key not in manifest:
                raise BundleError(f"{manifest_path}: '{key}' missing")
        files: dict[str, str] = manifest["files"]
        for net in NETWORKS:
            for suffix in ENGINE_SUFFIX.values():
                if f"{net}{suffix}" not in files:
                    raise BundleError(f"{manifest_path}: files has no entry for {net}{suffix}")
        for fname, expected in sorted(files.items()):
            fpath = path / fname
            if Path(fname).name != fname or not fpath.is_file():
                raise BundleError(f"{fpath}: listed in the manifest but missing")
            if sha256_file(fpath) != expected:
                raise BundleError(f"{fpath}: sha256 does not match the manifest (tampered or corrupted)")
        layout = _check_layout(manifest, manifest_path)
        dev = torch.device(device if engine == "torchscript" else "cpu")
        nets: dict[str, Any] = {}
        for net in NETWORKS:
            fpath = path / f"{net}{ENGINE_SUFFIX[engine]}"
            try:
                nets[net] = (_TorchScriptNet(fpath, dev) if engine == "torchscript"
                             else _OnnxNet(fpath, torch.device(device), threads))
            except Exception as exc:  # a file with the right hash that still does not load
                raise BundleError(f"{fpath}: cannot be loaded by {engine}: {exc}") from exc
        bundle = cls(path, manifest, hashlib.sha256(raw).hexdigest(), layout, engine, dev, nets)
        bundle._check_shapes()
        return bundle

    def _check_shapes(self) -> None:
        """One tiny forward per network: their shapes must be what the manifest says."""
        s, c, d = self.image_size, self.channels, self.layout.dim
        checks = [
            ("generator", self.generate(torch.zeros(1, self.nz), torch.zeros(1, d)), (1, c, s, s)),
            ("simulator", self.simulate(torch.zeros(1, d)), (1, c, s, s)),
            ("predictor", self._nets["predictor"](torch.zeros(1, c, s, s)), (1, self.nz + d)),
        ]
        for net, out, want in checks:
            if tuple(out.shape) != want:
                raise BundleError(f"{self.path / (net + ENGINE_SUFFIX[self.engine])}: output shape "
                                  f"{tuple(out.shape)} does not match the manifest {want}")

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z [B, nz], labels [B, D] standardized → images [B, C, S, S] float in [0, 1]."""
        return self._nets["generator"](z, labels)

    def simulate(self, labels: torch.Tensor) -> torch.Tensor:
        """labels [B, D] → the neural simulator's images [B, C, S, S] in [0, 1]."""
        return self._nets["simulator"](labels)

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, C, S, S] in [0, 1] at the bundle's size → (z [B, nz], labels [B, D] standardized)."""
        want = (self.channels, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"images: expected [B, {want[0]}, {want[1]}, {want[2]}], got {list(images.shape)}")
        out = self._nets["predictor"](images)
        return out[:, : self.nz], out[:, self.nz:]

    def predict_named(self, images: torch.Tensor) -> list[dict[str, object]]:
        """Predictions in human units, one dict per image (what the CLI and `/predict` return)."""
        return self.layout.to_named(self.predict(images)[1])

    def describe(self) -> dict[str, Any]:
        """Name, sha, sizes, layout and evaluation: what `GET /models` lists."""
        m = self.manifest
        return {
            "name": self.name, "sha": self.sha, "domain": self.domain, "trained": self.trained,
            "label_conditioned": self.label_conditioned,
            "image_size": self.image_size, "channels": self.channels, "nz": self.nz,
            "layout": m["layout"], "trainer": m.get("trainer"), "evaluation": m.get("evaluation"),
        }


def _check_layout(manifest: dict[str, Any], manifest_path: Path) -> LabelLayout:
    described = manifest["layout"]
    try:
        layout = get_layout(described.get("name", "?"))
    except LayoutError as exc:
        raise BundleError(f"{manifest_path}: layout: {exc.reason}") from None
    if layout.describe() != described:
        raise BundleError(f"{manifest_path}: layout '{layout.name}' differs from this code's definition "
                          "(fields, sizes or units changed); re-export the bundle")
    if int(manifest.get("label_dim", layout.dim)) != layout.dim:
        raise BundleError(f"{manifest_path}: label_dim {manifest.get('label_dim')} != layout dim {layout.dim}")
    return layout


def images_from_files(paths: list[Path], size: int, channels: int) -> torch.Tensor:
    """Load image files as a [B, C, size, size] float batch in [0, 1] (resized, converted to L/RGB)."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for p in paths:
        with Image.open(p) as img:
            img.draft(mode, (size, size))  # cheap JPEG downscale before the exact resize
            arr = np.asarray(img.convert(mode).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        arrays.append(arr[..., None] if channels == 1 else arr)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous() / 255.0
