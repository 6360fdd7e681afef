"""`labelforge edit IMAGE --set yaw_deg=20 --out edited.png`: change a label of a real image.

Recovers the image's latent (z, l) by iterative optimisation through the generator (seed 002
§3.3.5; `models.evaluation.latent_recovery`), sets the named fields in human units, regenerates.
Works from a bundle (TorchScript, which keeps autograd) or a training run.
Exit codes: 0 written, 2 bad option.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err_console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def edit_command(
    image: Annotated[Path, typer.Argument(help="image file (any format PIL reads)")],
    assignments: Annotated[list[str], typer.Option(
        "--set", help="FIELD=VALUE in the layout's human units (yaw_deg=20, digit=3, shape[0]=1.5); repeatable")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write the edited image to")],
    bundle: Annotated[Path | None, typer.Option(help="bundle directory (default bundles/faces-m)")] = None,
    run: Annotated[Path | None, typer.Option(help="training run directory instead of a bundle")] = None,
    loss: Annotated[str, typer.Option(help="recovery loss: mse, ssim, ms-ssim or features")] = "ms-ssim",
    steps: Annotated[int, typer.Option(help="Adam steps on the latent")] = 300,
    lr: Annotated[float, typer.Option(help="Adam learning rate on the latent")] = 0.05,
    init: Annotated[str, typer.Option(help="start from the predictor's reading ('predictor') or 'zero'")] = "predictor",
    recon: Annotated[Path | None, typer.Option(help="also write the unedited reconstruction G(z, l) here")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
) -> None:
    """Recover IMAGE's latent, set label fields, write the regenerated image; prints the labels as JSON."""
    from models.evaluation.latent_recovery import (
        RecoveryConfig,
        edit_images,
        model_from_bundle,
        model_from_run,
        parse_assignments,
        save_image,
    )
    from models.runtime import BundleError, images_from_files

    if bundle is not None and run is not None:
        raise _fail("--bundle/--run: give one, not both")
    if not image.is_file():
        raise _fail(f"IMAGE: {image} does not exist")
    cfg = RecoveryConfig(loss=loss, steps=steps, lr=lr, init=init)
    try:
        cfg.validate()
    except ValueError as exc:
        raise _fail(f"--{exc}") from None
    try:
        model = model_from_run(run, device) if run is not None else model_from_bundle(bundle or Path("bundles/faces-m"),
                                                                                      device)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        raise _fail(f"{'--run' if run is not None else '--bundle'}: {exc}") from None
    try:
        changes = parse_assignments(assignments, model.layout)
        batch = images_from_files([image], model.image_size, model.channels).to(device)
        edited, rec = edit_images(model, batch, changes, cfg)
    except OSError as exc:
        raise _fail(f"IMAGE: {exc}") from None
    except ValueError as exc:  # LayoutError included: names the field
        raise _fail(f"--set {exc}") from None
    save_image(edited[0], out)
    if recon is not None:
        save_image(rec.images[0], recon)
    recovered = model.layout.to_named(rec.labels)[0]
    shown = {k: (v[:3] if isinstance(v, list) else v) for k, v in recovered.items()}  # vector fields: first 3
    typer.echo(json.dumps({"image": str(image), "model": model.name, "out": str(out), "set": changes,
                           "recovered": shown, f"{loss}_distance": float(rec.distance[0]),
                           "recon_mse": float(rec.mse[0])}))
