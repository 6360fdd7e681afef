"""The `labelforge` command line: one Typer app, one module per subcommand under `service/commands/`.

Subcommand modules import torch and friends inside their functions so `labelforge --help` is instant.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="labelforge",
    help="Synthetic labeled datasets: train RenderBEGAN models, export bundles, generate WebDataset shards, serve them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# --- subcommand registrations (one line each) ---


if __name__ == "__main__":
    app()
