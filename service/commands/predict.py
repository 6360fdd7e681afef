"""`labelforge predict`: read labels back out of images with a bundle's predictor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()

VECTOR_PREVIEW = 3  # leading values of a vector field shown in the table (all of them with --json)


def predict_command(
    images: Annotated[list[Path], typer.Argument(help="image files (any format PIL reads)")],
    bundle: Annotated[Path, typer.Option(help="bundle directory")] = Path("bundles/faces-m"),
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per image, all fields")] = False,
    engine: Annotated[str, typer.Option(help="onnx or torchscript")] = "onnx",
) -> None:
    """Print the named label fields (e.g. shape[199], texture[199], yaw_deg, pitch_deg) for each image."""
    from models.runtime import Bundle, BundleError, images_from_files

    for p in images:
        if not p.is_file():
            console.print(f"[red]error:[/red] IMAGE: {p} does not exist")
            raise typer.Exit(2)
    try:
        loaded = Bundle.load(bundle, engine=engine)
    except BundleError as exc:
        console.print(f"[red]error:[/red] --bundle: {exc}")
        raise typer.Exit(2) from None
    try:
        batch = images_from_files(images, loaded.image_size, loaded.channels)
    except OSError as exc:
        console.print(f"[red]error:[/red] IMAGE: {exc}")
        raise typer.Exit(2) from None
    named = loaded.predict_named(batch)
    if as_json:
        for path, fields in zip(images, named, strict=True):
            typer.echo(json.dumps({"image": str(path), "bundle": loaded.name, "bundle_sha": loaded.sha, **fields}))
        return
    table = Table("image", *loaded.layout.names, title=f"bundle {loaded.name}" + ("" if loaded.trained else " (untrained)"))
    for path, fields in zip(images, named, strict=True):
        cells = []
        for f in loaded.layout.fields:
            v = fields[f.name]
            if isinstance(v, list):
                cells.append("[" + ", ".join(f"{x:.2f}" for x in v[:VECTOR_PREVIEW]) + f", …] ({len(v)})")
            else:
                cells.append(str(v) if isinstance(v, int) else f"{v:.2f}")
        table.add_row(str(path), *cells)
    console.print(table)
