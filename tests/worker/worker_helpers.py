"""Helpers for worker tests that start real processes: env for a worker, the worker subprocess,
tenants, and polling a job record. Fixtures built on them live in conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.db import JOB_ACTIVE, Job, Tenant, get_sessionmaker

REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('LABELFORGE_TEST_REDIS_DB_WORKER', '11')}"  # a db number of these tests' own; override to run two suites at once
REPO = Path(__file__).resolve().parents[2]
LABELFORGE = Path(sys.executable).parent / "labelforge"

# Fast reconciler for tests: a shard with no heartbeat for 3 s is lost; passes every 0.5 s.
FAST = {
    "LABELFORGE_SHARD_DEADLINE_FLOOR_S": "3",
    "LABELFORGE_SHARD_DEADLINE_CEILING_S": "30",
    "LABELFORGE_RECONCILE_INTERVAL_S": "0.5",
    "LABELFORGE_HEARTBEAT_INTERVAL_S": "0.2",
    "LABELFORGE_BROKER_POLLING_INTERVAL_S": "0.1",
    "LABELFORGE_STORAGE_RETRY_BACKOFF_S": "0.2",
    "LABELFORGE_DEVICE": "cpu",
}


def make_env(tmp: Path, bundles_dir: Path, *, broker: str, database_url: str | None = None,
             **extra: str) -> dict[str, str]:
    """LABELFORGE_* variables for a worker and the test process alike."""
    env = {
        "LABELFORGE_DATA_DIR": str(tmp / "data"),
        "LABELFORGE_DATABASE_URL": database_url or f"sqlite:///{tmp}/data/labelforge.db",
        "LABELFORGE_BROKER_URL": broker,
        "LABELFORGE_BUNDLES_DIR": str(bundles_dir),
        **FAST,
    }
    env.update({f"LABELFORGE_{k.upper()}": v for k, v in extra.items()})
    return env


class WorkerProcess:
    """A real `labelforge worker` subprocess (prefork, concurrency 1, with the reconciler)."""

    def __init__(self, env: dict[str, str], log_path: Path, reconciler: bool = True):
        self.log_path = log_path
        self._log = log_path.open("ab")
        cmd = [str(LABELFORGE), "worker", "-c", "1", "-l", "INFO"]
        if not reconciler:
            cmd.append("--no-reconciler")
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_pids(self) -> list[int]:
        """The Celery pool processes: the worker's children except its reconciler process."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split() if not _is_reconciler(int(p))]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool), as a machine losing power would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        """Teardown: no graceful shutdown needed (job records, not the worker, hold the state)."""
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


def _is_reconciler(pid: int) -> bool:
    try:
        return b"worker.reconciler" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # exited meanwhile
        return False


def make_tenant(database_url: str, name: str | None = None) -> str:
    """A tenant row; returns its id."""
    with get_sessionmaker(database_url)() as session:
        tenant = Tenant(name=name or f"t-{uuid.uuid4().hex[:8]}", key_hash=uuid.uuid4().hex)
        session.add(tenant)
        session.commit()
        return tenant.id


def wait_for_job(database_url: str, job_id: str, timeout_s: float = 60.0,
                 until: Callable[[Job], bool] | None = None, workers: list[Any] | None = None) -> Job:
    """Poll the job record until it leaves the active states (or `until` holds)."""
    until = until or (lambda j: j.status not in JOB_ACTIVE)
    deadline = time.monotonic() + timeout_s
    maker = get_sessionmaker(database_url)
    while True:
        with maker() as session:
            job = session.get(Job, job_id)
            assert job is not None, "job vanished"
            _ = job.shards  # load while the session is open
            if until(job):
                return job
        if time.monotonic() > deadline:
            logs = "\n".join(w.log()[-4000:] for w in workers or [])
            raise AssertionError(f"job {job_id} still {job.status} after {timeout_s}s: "
                                 f"{[(s.shard, s.status, s.deliveries) for s in job.shards]}\n{logs}")
        time.sleep(0.1)
