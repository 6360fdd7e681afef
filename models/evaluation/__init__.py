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
                   mode: str = "full", progress: EvalProgress | None = None,
                   mean_image: bool = False) -> dict[str, Any]:
    """Evaluate, then write `out_json`, the markdown page beside it and its PNG contact sheets.

    `domain_key` identifies the domain's construction (kwargs) for the baseline cache. `mean_image` adds
    the LabelGAN seed's mean-image experiment (domains with one class field): its per-class figures and
    target join the report, its captioned sheet the page; it reads with the same cached oracle.
    """
    from models.evaluation.evaluate import evaluate  # local: keeps `models.evaluation.evaluate` the module

    out_json = Path(out_json)
    report, samples = evaluate(model, domain, cfg, domain_key, device, mode, progress)
    prefix = "" if out_json.stem == "report" else f"{out_json.stem}_"
    sheets = write_sheets(model, domain, samples.generated, samples.simulated, samples.real.images,
                          out_json.parent, cfg.sheet_columns, cfg.seed, prefix)
    if mean_image:
        from models.evaluation.mean_image import mean_image_experiment

        if progress is not None:
            progress("mean-image experiment", 0, 1)
        result = mean_image_experiment(model, domain, out_json.parent, eval_cfg=cfg, domain_key=domain_key,
                                       device=device, prefix=prefix)
        report["details"]["figures"].update(result.figures)
        report["targets"].append(result.target)
        sheets["Mean-image experiment: class templates (top), generated digits per class below, captioned with "
               "the oracle's reading (green: as requested)"] = result.sheet.name
    report["markdown"] = out_json.with_suffix(".md").name
    write_report(report, sheets, out_json)
    return report
