"""One table of every method on every domain, built only from `labelforge eval` reports.

Why a generator instead of a hand-written page: each cell is copied from a `report.json`, so the table
cannot drift from the reports beside it, and re-running `labelforge results` after new evaluations
refreshes it. A figure a report lacks is shown as "—", never guessed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Getter = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Column:
    """A table column: its header and how to read (and print) its cell from a report."""

    header: str
    get: Getter
    fmt: str = "{:.3f}"


def _summary(key: str) -> Getter:
    return lambda report: report.get("summary", {}).get(key)


def _figure(key: str) -> Getter:
    return lambda report: report.get("details", {}).get("figures", {}).get(key)


def _model(key: str) -> Getter:
    return lambda report: report.get("model", {}).get(key)


def _option(path: str) -> Getter:
    """A training option from the report's `model.trainer_config`; dotted paths reach nested ones (net.c)."""
    def get(report: dict[str, Any]) -> Any:
        node: Any = report.get("model", {}).get("trainer_config", {})
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node
    return get


def _hours(report: dict[str, Any]) -> Any:
    seconds = report.get("model", {}).get("train_loop_seconds")
    return None if seconds is None else seconds / 3600.0


COMMON_HEAD = [Column("method", _model("trainer"), "`{}`"), Column("mode", lambda r: r.get("mode"), "{}"),
               Column("iterations", _model("iteration"), "{:,}")]
COMMON_TAIL = [Column("KID gen↔real ↓", _figure("kid_gen_real"), "{:.4g}"),
               Column("KID sim↔real", _figure("kid_sim_real"), "{:.4g}"),
               Column("Δ′ off ↓", _summary("delta_prime_off")),
               Column("loop hours", _hours, "{:.2f}")]

COLUMNS: dict[str, list[Column]] = {
    "digits": [*COMMON_HEAD,
               Column("generated read as asked ↑", _summary("gen_digit_acc")),
               Column("ceiling: real digits posed as asked", _summary("gen_digit_acc_ceiling")),
               Column("predictor acc (real) ↑", _summary("pred_acc")),
               Column("source-only acc", _summary("source_only_acc")),
               Column("oracle acc", _summary("oracle_acc")),
               Column("gap closed ↑", _summary("gap_closed"), "{:.2f}"),
               *COMMON_TAIL],
    "faces-m": [*COMMON_HEAD,
                Column("gen yaw MAE° ↓", _summary("gen_yaw_mae_deg"), "{:.2f}"),
                Column("gen pitch MAE° ↓", _summary("gen_pitch_mae_deg"), "{:.2f}"),
                Column("gen shape10 RMSE ↓", _summary("gen_shape10_rmse")),
                Column("prior shape10 RMSE", _summary("prior_shape10_rmse")),
                Column("predictor yaw MAE° ↓", _summary("pred_yaw_mae_deg"), "{:.2f}"),
                Column("source-only yaw MAE°", _summary("source_only_yaw_mae_deg"), "{:.2f}"),
                Column("oracle yaw MAE°", _summary("oracle_yaw_mae_deg"), "{:.2f}"),
                Column("gap closed ↑", _summary("gap_closed"), "{:.2f}"),
                *COMMON_TAIL],
}


def _cell(column: Column, report: dict[str, Any]) -> str:
    value = column.get(report)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return column.fmt.format(value)


def load_reports(paths: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Read each `report.json`; a missing or unreadable one raises ValueError naming the file."""
    reports = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable eval report ({err})") from None
        if not isinstance(report, dict) or "summary" not in report or "model" not in report:
            raise ValueError(f"{path}: not an eval report (no 'summary' / 'model'); write one with `labelforge eval`")
        reports.append((Path(path), report))
    return reports


def methods_table(reports: Sequence[tuple[Path, dict[str, Any]]], out: Path, vary: Sequence[str] = ()) -> str:
    """The markdown page: one table per domain, one row per report, each row linking its report page
    (relative to `out`). Rows keep the order given; domains follow `COLUMNS`, then any other.

    `vary` names training options shown as extra columns after the method, which turns the page into
    an ablation table (e.g. `content`, `w_c`); an option a run did not record shows "—"."""
    extra = [Column(name, _option(name), "{}") for name in vary]
    domains = list(COLUMNS) + sorted({r["model"]["domain"] for _, r in reports} - set(COLUMNS))
    lines = ["# All methods on the benchmark domains", "",
             "Every figure below is copied from the `labelforge eval` report the row links to; refresh with "
             "`labelforge results <report.json>… --out docs/results/methods.md`. ↑ higher is better, ↓ lower. "
             "*gap closed* = (predictor − source-only) / (oracle − source-only) on the real test split, with "
             "both baselines trained in the same evaluation. *loop hours* = wall time of the training loop "
             "from the run's log (fitting S and the content network not included; blank for bundles). *ceiling* = the "
             "same oracle reading real test digits of the requested class warped into the requested pose: what a "
             "perfect generator would score (reports written before it existed show —).", ""]
    for domain in domains:
        rows = [(p, r) for p, r in reports if r["model"]["domain"] == domain]
        if not rows:
            continue
        base = COLUMNS.get(domain, [*COMMON_HEAD, *COMMON_TAIL])
        columns = [base[0], *extra, *base[1:]]
        lines += [f"## {domain}", "", "| " + " | ".join(c.header for c in columns) + " | report |",
                  "|" + "---|" * (len(columns) + 1)]
        for path, report in rows:
            link = os.path.relpath(path.with_suffix(".md"), out.parent)
            lines.append("| " + " | ".join(_cell(c, report) for c in columns) + f" | [{report['model']['name']}]({link}) |")
        lines.append("")
    return "\n".join(lines)
