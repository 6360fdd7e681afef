"""Stopping `labelforge serve`, as a user or a service manager does.

Idle, it and every process it started (the worker, its pool process, the reconciler) are gone within
seconds: a service manager's SIGTERM to the API process, or Ctrl-C in its terminal (SIGINT to the whole
process group), which must also print no traceback. Busy, the running shard is finished first and no new
one is taken; the next start finishes the job.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from service_helpers import BIN, FAST, Proc, free_port, wait_http

from service.serve import WORKER_STOP_TIMEOUT_S

# An idle serve and all its processes: about 2.4 s on a loaded 2-core machine; 8-11 s before the worker
# stopped waiting out Celery's 2-s broker polls (twice), its timer thread and the reconciler in turn.
IDLE_STOP_BOUND_S = 4.0
SHARD_SLEEP_S = 2.0  # LABELFORGE_FAULT_SLEEP_S: each shard runs at least this long, a window to stop it in


def _env(bundles_dir: Path, data: Path, **extra: str) -> dict[str, str]:
    return {**FAST, "LABELFORGE_DATA_DIR": str(data), "LABELFORGE_BUNDLES_DIR": str(bundles_dir),
            "LABELFORGE_DATABASE_URL": f"sqlite:///{data}/labelforge.db", **extra}


def _serve(env: dict[str, str], cwd: Path, log: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc([str(BIN / "labelforge"), "serve", "--port", str(port)], env, log, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return proc, url


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _catches(pid: int, sig: signal.Signals) -> bool:
    """`pid` has a handler for `sig` installed (the reconciler does once it has imported everything)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (sig - 1) & 1)


def _wait_until_all_started(serve: Proc, timeout_s: float = 60.0) -> list[int]:
    """The worker is ready, its pool process started, the reconciler is in its loop: their pids."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs = _descendants(serve.proc.pid)
        cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() if _alive(p) else b"" for p in procs]
        reconcilers = [p for p, cmd in zip(procs, cmdlines, strict=True) if b"worker.reconciler" in cmd]
        if (len(procs) == 3 and " ready." in serve.log() and reconcilers
                and _catches(reconcilers[0], signal.SIGTERM)):
            return procs
        time.sleep(0.1)
    raise AssertionError(f"serve did not start its worker, pool and reconciler:\n{serve.log()[-4000:]}")


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_idle_serve_and_everything_it_started_exit_within_seconds(bundles_dir: Path, tmp_path: Path,
                                                                    how: str) -> None:
    serve, _ = _serve(_env(bundles_dir, tmp_path / "data"), tmp_path, tmp_path / "serve.log")
    try:
        procs = [serve.proc.pid, *_wait_until_all_started(serve)]
        t0 = time.monotonic()
        if how == "sigterm":
            os.kill(serve.proc.pid, signal.SIGTERM)  # only the API process, as a service manager would
        else:
            os.killpg(serve.proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the whole group
        serve.proc.wait(60)
        while any(_alive(p) for p in procs) and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        took = time.monotonic() - t0
        assert not [p for p in procs if _alive(p)], f"left running after {took:.1f} s:\n{serve.log()[-4000:]}"
        assert took < IDLE_STOP_BOUND_S, f"stopping took {took:.1f} s:\n{serve.log()[-4000:]}"
        assert serve.proc.returncode in (0, 128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGINT)
        assert "Traceback" not in serve.log()
    finally:
        serve.stop()


def _shards(data: Path, job_id: str) -> dict[int, tuple[str, int]]:
    """shard → (status, deliveries), read from the SQLite file the worker writes."""
    with sqlite3.connect(data / "labelforge.db", timeout=10) as db:
        rows = db.execute("SELECT shard, status, deliveries FROM shard_tasks WHERE job_id = ?", (job_id,))
        return {shard: (status, deliveries) for shard, status, deliveries in rows}


def test_sigterm_finishes_the_running_shard_takes_no_new_one_and_a_restart_finishes_the_job(
        bundles_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _env(bundles_dir, data, LABELFORGE_FAULT_SLEEP_S=str(SHARD_SLEEP_S))
    serve, url = _serve(env, tmp_path, tmp_path / "serve-1.log")
    try:
        key = (data / "api_key").read_text().strip()
        spec = {"name": "stopped", "bundle": "tiny-digits", "count": 16, "shard_size": 8, "seed": 3,
                "image": {"format": "png"}}
        job = httpx.post(f"{url}/datasets", json=spec, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert job.status_code in (200, 201, 202), job.text
        job_id = job.json()["id"]
        deadline = time.monotonic() + 60
        while not (running := [s for s, (st, _) in _shards(data, job_id).items() if st == "running"]):
            assert time.monotonic() < deadline, f"no shard started:\n{serve.log()[-4000:]}"
            time.sleep(0.02)
        os.kill(serve.proc.pid, signal.SIGTERM)
        serve.proc.wait(WORKER_STOP_TIMEOUT_S + 30)
        shards = _shards(data, job_id)
        assert shards[running[0]] == ("stored", 1), f"{shards}:\n{serve.log()[-4000:]}"  # finished, not redone
        assert [st for s, (st, _) in shards.items() if s != running[0]] == ["pending"]  # no new shard taken
    finally:
        serve.stop()

    serve, url = _serve(env, tmp_path, tmp_path / "serve-2.log")
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            deadline = time.monotonic() + 90
            while (status := http.get(f"/datasets/{job_id}").json()["status"]) not in ("succeeded", "failed"):
                assert time.monotonic() < deadline, f"job still {status}:\n{serve.log()[-4000:]}"
                time.sleep(0.2)
        assert status == "succeeded", serve.log()[-4000:]
    finally:
        serve.stop()
