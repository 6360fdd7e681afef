"""`labelforge results REPORT… --out docs/results/methods.md`: one table of all methods, from eval reports.

Exit codes: 0 written, 2 a bad argument (a file that is not an eval report is named).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def results_command(
    reports: Annotated[list[Path], typer.Argument(help="report.json files written by `labelforge eval`")],
    out: Annotated[Path, typer.Option("--out", help="Markdown page to write.")] = Path("docs/results/methods.md"),
    vary: Annotated[list[str] | None, typer.Option(
        "--vary", help="Training option shown as a column (repeatable; dotted for nested, e.g. net.c): an ablation table.")] = None,
) -> None:
    """Write one markdown table per domain with every method's eval figures, each row linking its report."""
    from models.evaluation.results_table import load_reports, methods_table

    try:
        loaded = load_reports(reports)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(methods_table(loaded, out, vary or []))
    console.print(f"wrote {out} ({len(loaded)} report(s))")
