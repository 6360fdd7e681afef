"""`labelforge generate SPEC.json --out DIR|s3://bucket/prefix`: a dataset spec → WebDataset shards.

`--shards a:b` writes only shards a..b-1 (what one worker task runs) and no manifest; without it the
whole dataset is written, then the card and, last, `manifest.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console()


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} img/s" if speed else "– img/s")


def _fail(option: str, message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {option}: {message}")
    return typer.Exit(2)


def _parse_range(text: str, n: int) -> range:
    a, sep, b = text.partition(":")
    try:
        lo = int(a) if a else 0
        hi = int(b) if b else n
    except ValueError:
        raise _fail("--shards", f"expected a:b (e.g. 0:4), got {text!r}") from None
    if not sep or not 0 <= lo < hi <= n:
        raise _fail("--shards", f"{text!r} is not a range within 0:{n}")
    return range(lo, hi)


def generate_command(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.json", help="dataset spec (JSON)")],
    out: Annotated[str, typer.Option("--out", help="output directory or s3://bucket/prefix")],
    shards: Annotated[str | None, typer.Option(help="only shards a:b (end exclusive); no manifest")] = None,
    bundles_dir: Annotated[Path, typer.Option(help="folder holding the bundles named by specs")] = Path("bundles"),
    engine: Annotated[str, typer.Option(help="auto (torchscript on CUDA, onnx on CPU), onnx or torchscript")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    batch_size: Annotated[int | None, typer.Option(help="generator batch (default 8192 on CUDA, 512 on CPU)")] = None,
) -> None:
    """Generate a dataset (or a range of its shards) with a progress bar."""
    import torch

    from models.engine import finalize_dataset, find_bundle, generate_shards
    from models.runtime import Bundle, BundleError
    from models.spec import SpecError, parse_spec
    from worker.storage import StorageError, storage_from_url

    try:
        spec = parse_spec(spec_file.read_text())
    except OSError as exc:
        raise _fail("SPEC.json", str(exc)) from None
    except SpecError as exc:
        raise _fail("SPEC.json", str(exc)) from None
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    eng = ("torchscript" if dev == "cuda" else "onnx") if engine == "auto" else engine
    try:
        bundle = Bundle.load(find_bundle(spec.bundle, bundles_dir), engine=eng, device=dev)
        spec.resolve(bundle.layout)
    except SpecError as exc:
        raise _fail("SPEC.json", str(exc)) from None
    except BundleError as exc:
        raise _fail("--bundles-dir", str(exc)) from None
    try:
        storage = storage_from_url(out)
    except ValueError as exc:
        raise _fail("--out", str(exc)) from None
    ids = _parse_range(shards, spec.num_shards) if shards else range(spec.num_shards)
    total = sum(min((s + 1) * spec.shard_size, spec.count) - s * spec.shard_size for s in ids)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(spec.name, total=total)
            infos = generate_shards(spec, bundle, storage, "", ids, progress=lambda n: bar.advance(task, n),
                                    batch_size=batch_size)
            if not shards or len(ids) == spec.num_shards:
                finalize_dataset(spec, bundle, storage, "", infos)
    except StorageError as exc:
        raise _fail("--out", str(exc)) from None
    except SpecError as exc:
        raise _fail("SPEC.json", str(exc)) from None
    elapsed = bar.tasks[0].finished_time or bar.tasks[0].elapsed or 0.0
    console.print(json.dumps({"samples": total, "shards": len(infos), "seconds": round(elapsed, 2),
                              "img_per_s": round(total / elapsed, 1) if elapsed else None, "out": out,
                              "bundle": bundle.name, "engine": eng, "device": dev}))
