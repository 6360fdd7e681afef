"""scripts/gpu-session.sh, the one prepared command a session lent a GPU runs: checked end to end here on
the CPU with a tiny configuration, so a GPU minute is never spent finding a typo in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a tiny training, a quick evaluation (both baselines on real digits) and an export
@pytest.mark.timeout(900)
def test_gpu_session_returns_bench_report_and_bundle_under_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # python3 = this venv's
        "OUT": str(out), "DOMAIN": "digits", "DEVICE": "cpu", "TRAIN_MINUTES": "1", "EVAL": "--quick",
        "RUN": str(tmp_path / "run"), "BUNDLE_DIR": str(tmp_path / "bundles" / "digits"),
        "LABELFORGE_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
        "BENCH_ARGS": "--domain digits --iterations 2 --warmup 1 --prep-steps 5",
        "EXTRA": "--iterations 4 --set net.c=4 --set simulator_steps=20 --set content_steps=20 --set checkpoint_every=2 "
                 "--set sample_every=2",
    }
    committed = {p: p.read_bytes() for p in (REPO / "bench" / "results").glob("train-*.json")}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu-session.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bench = json.loads((out / "train-bench.json").read_text())
    assert bench["eager_ms_per_iter"] > 0 and bench["device"] == "cpu"
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["iteration"] == 4 and "gen_digit_acc" in report["summary"]
    with tarfile.open(out / "bundle.tar") as tar:
        names = tar.getnames()
    assert "digits/manifest.json" in names
    assert (out / "log.jsonl").exists() and (out / "iter_0000004.png").exists()  # the last sample grid
    assert "== " in (out / "session.log").read_text()
    assert {p: p.read_bytes() for p in committed} == committed  # the committed bench figures are not overwritten
