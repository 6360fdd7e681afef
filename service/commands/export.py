"""`labelforge export`: turn a training run into a bundle (or build an untrained placeholder bundle)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def export_command(
    out: Annotated[Path, typer.Option("--out", help="bundle directory to write (replaced atomically)")],
    run: Annotated[Path | None, typer.Option("--run", help="run directory (runs/NAME) to export")] = None,
    name: Annotated[str | None, typer.Option(help="bundle name (default: the --out folder name)")] = None,
    placeholder: Annotated[str | None, typer.Option(
        help="instead of --run: an untrained bundle of seeded random default-size nets for this domain "
        "(faces-m, faces, digits)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the placeholder's random weights")] = 0,
) -> None:
    """Export G, S and the D-encoder+P predictor as TorchScript + ONNX with a hashed manifest."""
    if (run is None) == (placeholder is None):
        console.print("[red]error:[/red] --run: give exactly one of --run RUN_DIR or --placeholder DOMAIN")
        raise typer.Exit(2)
    from models.export import export_placeholder, export_run

    try:
        if run is not None:
            path = export_run(run, out, name=name)
        else:
            path = export_placeholder(placeholder, out, seed=seed)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {'--run' if run is not None else '--placeholder'}: {exc}")
        raise typer.Exit(2) from None
    from models.runtime import Bundle

    bundle = Bundle.load(path, engine="onnx")  # proves the bundle loads and both formats are there
    size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    console.print(f"bundle [bold]{bundle.name}[/bold] → {path} ({size:.1f} MB, sha256 {bundle.sha[:16]}…)")
