"""`labelforge render`: draw labels from a layout's prior with the built-in simulators.

Writes a contact sheet (`--out sheet.png`) to eyeball a renderer, and/or WebDataset shards
(`--shards DIR`) of renders + labels that any WebDataset reader loads without project code. Shards are
reproducible byte for byte: fixed tar mtime, sorted members, deterministic PNG encoding, and every
sample drawn from `--seed` alone.
"""

from __future__ import annotations

import io
import json
import math
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    import torch

console = Console()

CHUNK = 256  # labels rendered per call, bounds memory at large --count
SHARD_MTIME = 0.0  # fixed tar member mtime: same options → same shard bytes


class LayoutName(StrEnum):
    faces = "faces"
    digits = "digits"


class Mode(StrEnum):
    plain = "plain"
    photo = "photo"


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _render_all(layout_name: str, labels: torch.Tensor, size: int, mode: str, seed: int, device: str) -> torch.Tensor:
    """labels [N, dim] → images [N, C, S, S] in [0, 1] on the CPU, rendered in chunks on `device`."""
    import torch

    if layout_name == "digits":
        from models.render.digits import render_digits

        return torch.cat([render_digits(chunk.to(device), size)[0].cpu() for chunk in labels.split(CHUNK)])

    from models.render.faces import FaceRenderer

    renderer = FaceRenderer(device=device)
    photo_gen = torch.Generator().manual_seed(seed + 1)  # lights, backgrounds, noise; CPU on any device
    return torch.cat(
        [renderer.render(chunk.to(device), size, mode=mode, generator=photo_gen).image.cpu() for chunk in labels.split(CHUNK)]
    )


def _png_bytes(image: torch.Tensor) -> bytes:
    """[C, S, S] in [0, 1] → PNG bytes (greyscale for one channel)."""
    import numpy as np
    from PIL import Image

    pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # [S, S, C]
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(
    out_dir: Path, layout_name: str, images: torch.Tensor, labels: torch.Tensor, shard_size: int, seed: int
) -> list[Path]:
    """Samples `{index:09d}` with `.png`, `.labels.npy`, `.json` (+ `.cls`) into `{layout}-{shard:06d}.tar`."""
    import numpy as np
    from webdataset import TarWriter

    from models.layouts import get_layout

    layout = get_layout(layout_name)
    categorical = [f for f in layout.fields if f.kind == "categorical"]
    named = layout.to_named(labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, lo in enumerate(range(0, len(labels), shard_size)):
        path = out_dir / f"{layout_name}-{shard:06d}.tar"
        with TarWriter(str(path), encoder=False, mtime=SHARD_MTIME) as sink:
            for index in range(lo, min(lo + shard_size, len(labels))):
                npy = io.BytesIO()
                np.save(npy, labels[index].numpy().astype(np.float32))
                sample = {
                    "__key__": f"{index:09d}",
                    "png": _png_bytes(images[index]),
                    "labels.npy": npy.getvalue(),
                    "json": json.dumps({**named[index], "index": index, "seed": seed}, sort_keys=True).encode(),
                }
                for f in categorical:  # `.cls` for a single class field, `<field>.cls` if there were several
                    sample["cls" if len(categorical) == 1 else f"{f.name}.cls"] = str(named[index][f.name]).encode()
                sink.write(sample)
        paths.append(path)
    return paths


def render_command(
    layout: Annotated[LayoutName, typer.Option("--layout", help="Label layout to draw from its prior.")] = LayoutName.faces,
    count: Annotated[int, typer.Option("--count", min=1, help="Number of renders.")] = 64,
    size: Annotated[int, typer.Option("--size", min=1, max=1024, help="Square image size in pixels.")] = 64,
    mode: Annotated[Mode, typer.Option("--mode", help="plain, or photo (faces only: lights, backgrounds, noise).")] = Mode.plain,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the labels and of photo-mode randomness.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Contact sheet PNG to write.")] = None,
    shards: Annotated[Path | None, typer.Option("--shards", help="Directory for WebDataset shards of renders + labels.")] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Samples per shard.")] = 1000,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")] = "auto",
) -> None:
    """Render labels drawn from a layout's prior: a contact sheet (--out) and/or WebDataset shards (--shards)."""
    if out is None and shards is None:
        raise _fail("--out / --shards: nothing to write; give a contact sheet path, a shard directory, or both")
    if mode is Mode.photo and layout is LayoutName.digits:
        raise _fail("--mode: photo mode exists only for the faces layout; digits render in plain mode")
    import torch
    from torchvision.utils import make_grid, save_image

    from models.layouts import get_layout, sample_prior

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise _fail(f"--device: {device} requested but CUDA is not available")
    elif not (device == "cpu" or device.startswith("cuda")):
        raise _fail(f"--device: expected cpu, cuda, cuda:N or auto, got '{device}'")

    labels = sample_prior(get_layout(layout.value), count, generator=torch.Generator().manual_seed(seed))  # [N, dim]
    try:
        with console.status(f"rendering {count} {layout.value} at {size}px ({mode.value}, {device})…"):
            images = _render_all(layout.value, labels, size, mode.value, seed, device)  # [N, C, S, S]
    except ValueError as err:  # the renderer names the field it refuses (e.g. "size: expected … [8, 1024]")
        raise _fail(f"cannot render {layout.value}: {err}") from None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(make_grid(images, nrow=math.ceil(math.sqrt(count)), padding=2, pad_value=0.5), out)
        console.print(f"contact sheet: {out}")
    if shards is not None:
        paths = write_shards(shards, layout.value, images, labels, shard_size, seed)
        console.print(f"{len(paths)} shard(s), {count} samples: {shards}")
