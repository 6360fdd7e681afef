"""`labelforge train simulator|renderbegan`: train into a run directory (see `models.trainers.run`).

Option precedence: built-in defaults (thesis Fig. 4.1) < `--config cfg.yaml` < command-line flags.
With `--resume` the run's own `training_options.json` is the config (only `--iterations` may extend
it). Without `--resume`, an existing non-empty `--out` is never overwritten: the run goes to the
next free numbered directory (`NAME-1`, `NAME-2`, …), which is printed.
Exit codes: 0 done or interrupted (checkpoint saved), 2 bad option, 3 collapse detected.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)
train_app = typer.Typer(help="Train a neural simulator or a RenderBEGAN model into runs/NAME.", no_args_is_help=True)

DOMAIN_HELP = "Registered domain: faces-m (default), digits or faces."
DEVICE_HELP = "cpu, cuda, cuda:N or auto."


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _read_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    if not path.is_file():
        raise _fail(f"--config: no such file {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise _fail(f"--config: {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise _fail(f"--config: {path} must hold a mapping of option: value")
    return data


def _setup_logging() -> None:
    """Rich log lines on a terminal; plain timestamped lines in a log file (Rich would wrap them at 80 columns)."""
    if err_console.is_terminal:
        from rich.logging import RichHandler

        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=err_console)],
                            force=True)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def _scalar_text(scalars: dict[str, float]) -> str:
    keys = ("L_D", "L_G", "L_P", "k_t", "M_global")
    return "  ".join(f"{k}={scalars[k]:.4f}" for k in keys if k in scalars)


def _run_with_progress(fn: Any, label: str, **kwargs: Any) -> dict[str, Any]:
    """A live bar on a terminal; elsewhere (nohup, CI, a log file) one plain line per log interval and per
    10 % of the steps, since a live display prints nothing there until the run ends — hours of silence
    for a background run."""
    if not console.is_terminal:
        since: dict[str, float] = {}  # time and iteration of this process's first step (a resume starts late)

        def log_line(done: int, total: int, scalars: dict[str, float] | None) -> None:
            if not since:
                since.update(t=time.perf_counter(), it=done)
            if scalars or done == total or done % max(total // 10, 1) == 0:  # log intervals, and every 10 %
                pace = ""
                if done > since["it"]:
                    rate = (time.perf_counter() - since["t"]) / (done - since["it"])
                    pace = f"  ({rate:.3g} s/step, ETA {rate * (total - done) / 3600:.2f} h)"
                text = f"  {_scalar_text(scalars)}" if scalars else ""
                console.print(f"{label} {done}/{total}{text}{pace}", soft_wrap=True)

        return fn(progress=log_line, **kwargs)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[scalars]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=None, scalars="")

        def progress(done: int, total: int, scalars: dict[str, float] | None) -> None:
            text = _scalar_text(scalars) if scalars else None
            if text:
                bar.update(task, completed=done, total=total, scalars=text)
            else:
                bar.update(task, completed=done, total=total)

        return fn(progress=progress, **kwargs)


def _finish(result: dict[str, Any]) -> None:
    if result["status"] == "interrupted":
        console.print(f"interrupted at iteration {result['iteration']}; checkpoint saved in {result['run_dir']}. "
                      "Continue with --resume.")
    else:
        console.print(f"done: {result['run_dir']} (iteration {result['iteration']})")
    shown = {k: v for k, v in result.items() if k not in ("status", "run_dir")}
    console.print_json(json.dumps(shown, default=str))


def _config_fields(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """A run's options without the resolved extras `training_options.json` also holds (trainer, layout,
    simulator_net, …): only what `cls` takes."""
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in options.items() if k in known}


def _resolve_config(cls: type, trainer: str, *, out: Path, resume: bool, config: Path | None, flags: dict[str, Any],
                    overrides: list[str] | None, extend: dict[str, Any]) -> Any:
    """The run's config, validated. With --resume: the run's own options, of which only `extend`'s given
    (non-None) values may change — the run's length — so a resumed run computes what the interrupted one
    would have; otherwise defaults < --config < flags < --set. --config may be a YAML file or another run's
    `training_options.json` of the same trainer (to repeat or vary that run, e.g. with init_from). A bad value
    exits 2 naming the field."""
    from models.domains.base import check_domain
    from models.trainers.common import config_from_dict
    from models.trainers.run import read_options

    try:
        if resume:
            data = _config_fields(cls, read_options(out))
            data.update({k: v for k, v in extend.items() if v is not None})
        else:
            data = _read_yaml(config)
            if "trainer" in data:  # a run's training_options.json: its options, not its bookkeeping
                if data["trainer"] != trainer:
                    raise ValueError(f"--config: {config} holds the options of a '{data['trainer']}' run, "
                                     f"not a {trainer} one")
                data = _config_fields(cls, data)
            data.update({k: v for k, v in flags.items() if v is not None})
            _merge(data, _parse_overrides(overrides or []))
        cfg: Any = config_from_dict(cls, data)
        if hasattr(cfg, "validate"):
            cfg.validate()
        check_domain(cfg.domain)  # before the run directory exists: a typo leaves nothing behind
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise _fail(str(err)) from None
    return cfg


def _train(trainer: str, cfg: Any, *, out: Path, resume: bool, device: str, dry_run: bool,
           collapse_hint: str = "") -> None:
    """Print the config (--dry-run) or train into `out` (or the next free `out-N`) with a progress bar."""
    if dry_run:
        console.print_json(json.dumps(asdict(cfg)))
        return
    from models.trainers import get_trainer
    from models.trainers.common import TrainingCollapsed
    from models.trainers.run import prepare_run_dir

    _setup_logging()
    run_dir: Path | None = None
    try:
        run_dir = prepare_run_dir(out, resume)
        if run_dir != out:
            console.print(f"{out} exists: this run goes to {run_dir}")
        result = _run_with_progress(get_trainer(trainer), trainer, cfg=cfg, run_dir=run_dir, device=device,
                                    resume=resume)
    except TrainingCollapsed as err:
        err_console.print(f"[red]training stopped:[/red] {err}. The last checkpoint is kept{collapse_hint}.")
        raise typer.Exit(code=3) from None
    except (ValueError, FileNotFoundError) as err:
        if run_dir is not None and not resume and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a config the trainer refused before writing anything leaves no empty run behind
        raise _fail(str(err)) from None
    _finish(result)


def simulator_command(
    domain: Annotated[str | None, typer.Option("--domain", help=DOMAIN_HELP)] = None,
    out: Annotated[Path, typer.Option("--out", help="Run directory (runs/NAME).")] = Path("runs/simulator"),
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of SimulatorConfig options.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Labels per step.")] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Pixels, power of two 8..128.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Fit the neural simulator S to a domain's renderer; report PSNR/SSIM and a contact sheet."""
    from models.trainers.simulator import SimulatorConfig

    flags = {"domain": domain, "steps": steps, "batch_size": batch_size, "image_size": image_size, "seed": seed}
    cfg = _resolve_config(SimulatorConfig, "simulator", out=out, resume=resume, config=config, flags=flags, overrides=None,
                          extend={"steps": steps})
    _train("simulator", cfg, out=out, resume=resume, device=device, dry_run=dry_run)


def renderbegan_command(
    domain: Annotated[str | None, typer.Option("--domain", help=DOMAIN_HELP)] = None,
    out: Annotated[Path, typer.Option("--out", help="Run directory (runs/NAME).")] = Path("runs/renderbegan"),
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of RenderBEGANConfig options.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly.")] = False,
    iterations: Annotated[int | None, typer.Option("--iterations", help="I_max (default 50,000).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
    simulator: Annotated[Path | None, typer.Option("--simulator", help="Run dir of a trained simulator.")] = None,
    content: Annotated[str | None, typer.Option("--content", help="label-aware | vgg16 | none.")] = None,
    vgg_weights: Annotated[Path | None, typer.Option("--vgg-weights", help="Local VGG16 state-dict file.")] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Pixels, power of two 8..128.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="B (default 24).")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    amp: Annotated[str | None, typer.Option("--amp", help="none (fp32 reference) or bf16.")] = None,
    cuda_graph: Annotated[bool | None, typer.Option(
        "--cuda-graph/--eager", help="Replay each iteration as one CUDA graph (CUDA only; eager is the reference).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Any RenderBEGANConfig field as key=value (YAML value), repeatable.")] = None,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
) -> None:
    """Train RenderBEGAN (G, D, P against a frozen simulator S) with checkpoints and exact resume."""
    from models.trainers.renderbegan import RenderBEGANConfig

    flags: dict[str, Any] = {
        "domain": domain, "iterations": iterations, "simulator_run": str(simulator) if simulator else None, "content": content,
        "vgg_weights": str(vgg_weights) if vgg_weights else None, "image_size": image_size,
        "batch_size": batch_size, "seed": seed, "amp": amp, "cuda_graph": cuda_graph,
    }
    cfg = _resolve_config(RenderBEGANConfig, "renderbegan", out=out, resume=resume, config=config, flags=flags, overrides=overrides,
                          extend={"iterations": iterations})
    _train("renderbegan", cfg, out=out, resume=resume, device=device, dry_run=dry_run,
           collapse_hint="; try a lower lr, another seed or a different gamma")


def method_command(method: str) -> Any:
    """The `labelforge train METHOD` command of a sibling method (issue 9): every trainer registered with
    a config dataclass gets the same options, and `--set key=value` reaches any other config field."""

    def command(
        domain: Annotated[str | None, typer.Option("--domain", help=DOMAIN_HELP)] = None,
        out: Annotated[Path, typer.Option("--out", help="Run directory (runs/NAME).")] = Path(f"runs/{method}"),
        config: Annotated[Path | None, typer.Option("--config", help="YAML file of the method's config options.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly.")] = False,
        iterations: Annotated[int | None, typer.Option("--iterations", help="Training iterations.")] = None,
        image_size: Annotated[int | None, typer.Option("--image-size", help="Pixels, power of two 8..128.")] = None,
        seed: Annotated[int | None, typer.Option("--seed")] = None,
        overrides: Annotated[list[str] | None, typer.Option(
            "--set", help="Any config field as key=value (YAML value), repeatable.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
        device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    ) -> None:
        from models.trainers.registry import get_trainer_config

        flags: dict[str, Any] = {"domain": domain, "iterations": iterations, "image_size": image_size, "seed": seed}
        cfg = _resolve_config(get_trainer_config(method), method, out=out, resume=resume, config=config, flags=flags,
                              overrides=overrides, extend={"iterations": iterations})
        _train(method, cfg, out=out, resume=resume, device=device, dry_run=dry_run)

    command.__doc__ = f"Train the '{method}' method (see docs/methods/{method}.md) with checkpoints and exact resume."
    return command


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set lr=1e-4 --set net.c=16` → {"lr": 1e-4, "net": {"c": 16}}; values parse as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: '{item}' is not key=value")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """Deep-merge `extra` into `base`, so `--set net.c=16` changes one field of a config file's `net`."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


SIBLING_METHODS: tuple[str, ...] = ("dcgan", "infobegan", "labelgan", "source-only", "synthvaegan")  # trainers from the other seeds, each with the generic command

train_app.command("simulator")(simulator_command)
train_app.command("renderbegan")(renderbegan_command)
for _method in SIBLING_METHODS:
    train_app.command(_method)(method_command(_method))
