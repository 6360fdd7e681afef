"""`labelforge eval`: score a training run or an exported bundle against oracle and source-only baselines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

if TYPE_CHECKING:  # the CLI imports torch and the models lazily, so `labelforge --help` stays instant
    from models.domains.base import Domain
    from models.evaluation import EvalConfig, EvalModel

console = Console()


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def eval_command(
    run: Annotated[Path | None, typer.Option("--run", help="Training run directory (runs/NAME).")] = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Exported bundle directory.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller samples and baselines: minutes on CPU.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Report JSON path (default: <run|bundle>/eval/report.json).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every sample and of both baselines.")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")] = "auto",
    attach: Annotated[bool, typer.Option(
        "--attach", help="With --bundle: also write the report into the bundle's manifest (its sha changes).")] = False,
    mean_image: Annotated[bool, typer.Option(
        "--mean-image", help="Also run the LabelGAN seed's mean-image experiment (layouts with one class field, "
        "e.g. digits): per-class oracle readings, a target of ≥ 0.98 and a captioned sheet.")] = False,
) -> None:
    """Write report.json + report.md with label fidelity, predictor accuracy, gap closed, KID and diversity."""
    if (run is None) == (bundle is None):
        raise _fail("--run / --bundle: give exactly one of them")
    if attach and bundle is None:
        raise _fail("--attach: only a --bundle has a manifest to attach the report to")
    source = run if run is not None else bundle
    assert source is not None
    if not source.is_dir():
        raise _fail(f"{'--run' if run is not None else '--bundle'}: {source} is not a directory")
    import torch

    from models.domains import get_domain
    from models.evaluation import EvalConfig, from_bundle, from_run, run_evaluation

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise _fail(f"--device: {device} requested but CUDA is not available")
    try:
        model = from_run(source, device) if run is not None else from_bundle(source, device)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise _fail(f"{'--run' if run is not None else '--bundle'}: cannot load {source}: {err}") from None
    if mean_image:
        from models.trainers.labelgan import class_field

        try:
            class_field(model.layout)
        except ValueError as err:
            raise _fail(f"--mean-image: {err}") from None
    domain_kwargs = dict(model.info.get("domain_kwargs") or {})  # type: ignore[call-overload]
    domain_seed = int(model.info.get("domain_seed") or 0)  # type: ignore[call-overload]
    try:
        domain = get_domain(model.domain, image_size=model.image_size, seed=domain_seed, device=device,
                            **domain_kwargs)
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise _fail(f"domain '{model.domain}': {err}") from None
    cfg = EvalConfig.quick(seed) if quick else EvalConfig(seed=seed)
    from models.export import EVAL_REPORT

    out = out if out is not None else source / EVAL_REPORT  # where `labelforge export` looks for it
    mode = "quick" if quick else "full"
    console.print(f"evaluating {model.source} [bold]{model.name}[/bold] on {model.domain} ({mode}, {device})…")
    if console.is_terminal:
        report = _evaluate_with_bars(model, domain, cfg, out, domain_kwargs, device, mode, mean_image)
    else:  # a log file: a live display would print nothing until the end (a full eval is tens of CPU-minutes)
        def log_line(what: str, done: int, total: int) -> None:
            if done == 0 or done == total or done % max(total // 10, 1) == 0:
                console.print(f"{what}: {done}/{total}", soft_wrap=True)

        report = run_evaluation(model, domain, cfg, out, {"domain_kwargs": domain_kwargs}, device, mode, log_line,
                                mean_image=mean_image)
    _print_summary(report, out)
    if attach:
        from models.export import attach_evaluation

        attach_evaluation(source, report)
        console.print(f"attached the report to {source / 'manifest.json'}")


def _evaluate_with_bars(model: EvalModel, domain: Domain, cfg: EvalConfig, out: Path, domain_kwargs: dict[str, Any],
                        device: str, mode: str, mean_image: bool) -> dict[str, Any]:
    """`run_evaluation` with one rich bar per phase (a baseline's training gets steps and an ETA)."""
    from models.evaluation import run_evaluation

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, tuple[TaskID, int]] = {}  # phase → (its bar, its total)

        def finish_all() -> None:
            for task, total in tasks.values():
                bar.update(task, completed=total)

        def progress(what: str, done: int, total: int) -> None:
            """One line per phase, ticked off when the next begins; a baseline's training is its own bar
            (steps), so its ETA means something."""
            if what not in tasks:
                finish_all()
                tasks[what] = (bar.add_task(what, total=total), total)
            bar.update(tasks[what][0], completed=done)

        report = run_evaluation(model, domain, cfg, out, {"domain_kwargs": domain_kwargs}, device, mode, progress,
                                mean_image=mean_image)
        finish_all()
    return report


def _print_summary(report: dict[str, Any], out: Path) -> None:
    mode = report["mode"]
    table = Table("figure", "value", title=f"summary ({mode})")
    for key, value in report["summary"].items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    failed = [t["name"] for t in report["targets"] if not t["pass"]]
    if report.get("domain_gap_ok") is False:
        console.print("[yellow]warning:[/yellow] source-only error is not ≥ 3× the oracle's: the domain gap is too small")
    console.print(f"targets missed: {', '.join(failed) if failed else 'none'}")
    console.print(f"wrote {out} and {out.with_suffix('.md')}")
