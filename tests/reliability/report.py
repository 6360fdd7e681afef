"""Figures from the reliability scenarios, gathered into `bench/results/reliability.json`.

Each scenario test calls `record(...)` once with what it checked and what it measured; the file is
merged, not overwritten, so running one scenario updates its own entry and keeps the others. This
keeps the evidence next to the benchmarks, where the issue asks for it, instead of in test logs.
"""
from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path
from typing import Any

RESULTS_PATH = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"


def record(scenario: str, checked: str, **figures: Any) -> None:
    """Store one scenario's outcome (e.g. samples_expected/found/duplicated, retries, recover_s).

    `checked` says in a sentence what the test asserted, so the JSON reads on its own.
    """
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_PATH.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: dict[str, Any] = json.loads(RESULTS_PATH.read_text()) if RESULTS_PATH.exists() else {}
        scenarios = data.setdefault("scenarios", {})
        scenarios[scenario] = {"checked": checked, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               **figures}
        data["scenarios"] = dict(sorted(scenarios.items()))
        RESULTS_PATH.write_text(json.dumps(data, indent=2) + "\n")
