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
app.command("serve")(__import__("service.commands.serve", fromlist=["serve_command"]).serve_command)
app.command("render")(__import__("service.commands.render", fromlist=["render_command"]).render_command)
app.command("eval")(__import__("service.commands.eval", fromlist=["eval_command"]).eval_command)
app.command("worker")(__import__("service.commands.worker", fromlist=["worker"]).worker)
app.add_typer(__import__("service.commands.train", fromlist=["train_app"]).train_app, name="train")
app.command("export")(__import__("service.commands.export", fromlist=["export_command"]).export_command)
app.command("generate")(__import__("service.commands.generate", fromlist=["generate_command"]).generate_command)
app.command("predict")(__import__("service.commands.predict", fromlist=["predict_command"]).predict_command)
app.command("edit")(__import__("service.commands.edit", fromlist=["edit_command"]).edit_command)
app.command("results")(__import__("service.commands.results", fromlist=["results_command"]).results_command)


if __name__ == "__main__":
    app()
