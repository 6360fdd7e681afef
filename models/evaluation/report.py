"""Writing an evaluation: `report.json` (strict JSON, NaN → null) and `report.md` beside its contact sheets."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _finite(obj: Any) -> Any:
    """Replace NaN/∞ by None recursively so the file is valid JSON for any reader."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(report: dict[str, Any], sheets: dict[str, str]) -> str:
    """The human page: summary with targets, domain-gap check, baselines, then the contact sheets."""
    m = report["model"]
    lines = [f"# Evaluation of `{m['name']}` ({m['source']}, domain `{m['domain']}`, {report['mode']} mode)", ""]
    if report.get("domain_gap_ok") is False:
        lines += ["> **Warning: the benchmark's domain gap is too small** — the source-only predictor's error is "
                  "not ≥ 3× the oracle's, so *gap closed* says little. Make the real side harder.", ""]
    if report.get("collapse"):
        lines += ["> **Warning: collapse detected** (see diversity below).", ""]
    lines += ["## Summary", "", "| figure | value |", "|---|---|"]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in report["summary"].items()]
    lines += ["", "## Targets (issue 4)", "", "| target | value | needs | pass | what |", "|---|---|---|---|---|"]
    lines += [f"| `{t['name']}` | {_fmt(t['value'])} | {t['op']} {_fmt(t['threshold'])} | "
              f"{'✅' if t['pass'] else '❌'} | {t['note']} |" for t in report["targets"]]
    det = report["details"]
    lines += ["", "## All figures", "", "| figure | value |", "|---|---|"]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in det["figures"].items()]
    lines += ["", "## Diversity", "", "| figure | value |", "|---|---|"]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in det["diversity"].items()]
    lines += [""] + [d["markdown"] for d in det.get("disentanglement", [])]
    lines += ["", f"Samples: {det['counts']}; seeds: {det['seeds']}; timings (s): {det['timings_s']}.", ""]
    lines += ["## Contact sheets", ""]
    for title, name in sheets.items():
        lines += [f"**{title}**", "", f"![{title}]({name})", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], sheets: dict[str, str], out_json: Path) -> Path:
    """Write `out_json` and a markdown page with the same stem beside it; returns the markdown path."""
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")
    md = out_json.with_suffix(".md")
    md.write_text(markdown(report, sheets))
    return md
