"""Evaluation: how good a trained model is, next to baselines from the same run (DESIGN.md "Evaluation").

`run_evaluation` is the one call the CLI (and anything else) makes: it scores an `EvalModel` on a
domain, writes `report.json`, `report.md` and the contact sheets, and returns the report dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.domains.base import Domain
from models.evaluation.evaluate import EvalConfig, EvalProgress
from models.evaluation.predictors import PredictorConfig
from models.evaluation.report import write_report
from models.evaluation.sheets import write_sheets
from models.evaluation.subject import EvalModel, from_bundle, from_run

__all__ = ["EvalConfig", "EvalModel", "EvalProgress", "PredictorConfig", "from_bundle", "from_run", "run_evaluation"]


def run_evaluation(model: EvalModel, domain: Domain, cfg: EvalConfig, out_json: str | Path,
                   domain_key: dict[str, Any] | None = None, device: torch.device | str = "cpu",
                   mode: str = "full", progress: EvalProgress | None = None) -> dict[str, Any]:
    """Evaluate, then write `out_json`, the markdown page beside it and its PNG contact sheets.

    `domain_key` identifies the domain's construction (kwargs) for the baseline cache.
    """
    from models.evaluation.evaluate import evaluate  # local: keeps `models.evaluation.evaluate` the module

    out_json = Path(out_json)
    report, samples = evaluate(model, domain, cfg, domain_key, device, mode, progress)
    prefix = "" if out_json.stem == "report" else f"{out_json.stem}_"
    sheets = write_sheets(model, domain, samples.generated, samples.simulated, samples.real.images,
                          out_json.parent, cfg.sheet_columns, cfg.seed, prefix)
    report["markdown"] = out_json.with_suffix(".md").name
    write_report(report, sheets, out_json)
    return report
