"""`labelforge results`: the methods table copies each report's figures, links its page, marks what a
report lacks, and names a file that is not an eval report; loop time comes from the run's log."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from models.trainers.run import LOG_NAME, loop_seconds
from service.cli import app

runner = CliRunner()


def write_report(folder: Path, trainer: str, domain: str, summary: dict, figures: dict, **model: object) -> Path:
    """A report with the shape `labelforge eval` writes (the fields the table reads)."""
    path = folder / trainer / "eval" / "report.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"mode": "full", "summary": summary, "details": {"figures": figures},
                                "model": {"name": f"{trainer}-{domain}", "trainer": trainer, "domain": domain, **model}}))
    path.with_suffix(".md").write_text("# report\n")
    return path


def test_results_table_copies_each_reports_figures_per_domain(tmp_path: Path) -> None:
    digits = write_report(tmp_path, "renderbegan", "digits",
                          {"gen_digit_acc": 0.9812, "pred_acc": 0.7, "source_only_acc": 0.25, "oracle_acc": 0.99,
                           "gap_closed": 0.608, "delta_prime_off": 0.31},
                          {"kid_gen_real": 0.0123, "kid_sim_real": 0.0456}, iteration=12000, train_loop_seconds=7200)
    faces = write_report(tmp_path, "dcgan", "faces-m", {"gen_yaw_mae_deg": 31.5, "pred_yaw_mae_deg": 9.25},
                         {}, iteration=500)
    out = tmp_path / "docs" / "methods.md"
    result = runner.invoke(app, ["results", str(digits), str(faces), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    digits_part, faces_part = page.split("## digits")[1].split("## faces-m")
    row = next(line for line in digits_part.splitlines() if line.startswith("| `renderbegan`"))
    for cell in ("12,000", "0.981", "0.700", "0.250", "0.990", "0.61", "0.0123", "0.0456", "0.310", "2.00",
                 "(../renderbegan/eval/report.md)"):
        assert cell in row, (cell, row)
    row = next(line for line in faces_part.splitlines() if line.startswith("| `dcgan`"))
    assert "31.50" in row and "9.25" in row and "—" in row  # a figure the report lacks is a dash, not a guess
    assert "renderbegan" not in faces_part


def test_vary_shows_each_runs_training_options_as_ablation_columns(tmp_path: Path) -> None:
    arms = [write_report(tmp_path / name, "renderbegan", "digits", {"gen_digit_acc": acc}, {},
                         trainer_config=config)
            for name, acc, config in [("none", 0.1, {"content": "none", "w_c": 0.1, "net": {"c": 16}}),
                                      ("wc03", 0.4, {"content": "label-aware", "w_c": 0.3, "net": {"c": 16}}),
                                      ("old", 0.2, {})]]  # a report from before trainer_config was recorded
    out = tmp_path / "ablation.md"
    result = runner.invoke(app, ["results", *map(str, arms), "--vary", "content", "--vary", "w_c",
                                 "--vary", "net.c", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    assert header.startswith("| method | content | w_c | net.c | mode |")
    rows = [line for line in lines if line.startswith("| `renderbegan`")]
    assert rows[0].startswith("| `renderbegan` | none | 0.1 | 16 |") and "0.100" in rows[0]
    assert rows[1].startswith("| `renderbegan` | label-aware | 0.3 | 16 |") and "0.400" in rows[1]
    assert rows[2].startswith("| `renderbegan` | — | — | — |")


def test_results_names_a_file_that_is_not_an_eval_report(tmp_path: Path) -> None:
    bogus = tmp_path / "training_options.json"
    bogus.write_text(json.dumps({"trainer": "dcgan"}))
    result = runner.invoke(app, ["results", str(bogus), "--out", str(tmp_path / "m.md")])
    assert result.exit_code == 2
    assert "training_options.json" in result.output and "not an eval report" in result.output
    assert not (tmp_path / "m.md").exists()


def test_loop_seconds_counts_each_interval_once_across_a_resume(tmp_path: Path) -> None:
    rows = [{"iteration": 50, "ms_per_iter": 100.0}, {"iteration": 100, "ms_per_iter": 100.0},
            {"iteration": 150, "ms_per_iter": 999.0},  # logged, then the run was killed before checkpointing it
            {"iteration": 150, "ms_per_iter": 200.0},  # resumed from 100: the later line of 150 wins
            {"iteration": 200, "ms_per_iter": 200.0}]
    (tmp_path / LOG_NAME).write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"iteration\": 2")
    assert loop_seconds(tmp_path) == (100 * 100 + 200 * 100) / 1000
    assert loop_seconds(tmp_path / "no-run") is None
