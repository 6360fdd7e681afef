"""Helpers for the API tests: free ports, logged subprocesses, the `Server` handle, job polling.
Fixtures built on them live in conftest.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_DB_URL = f"redis://127.0.0.1:6379/{os.environ.get('LABELFORGE_TEST_REDIS_DB_SERVICE', '12')}"  # a db number of the service tests' own (worker tests use 11)
KEY_B = "tenant-b-key-0123456789abcdef"
KEY_C = "tenant-c-key-0123456789abcdef"
# Fast reconciler and polling so jobs finish in seconds.
FAST = {
    "LABELFORGE_SHARD_DEADLINE_FLOOR_S": "3",
    "LABELFORGE_SHARD_DEADLINE_CEILING_S": "30",
    "LABELFORGE_RECONCILE_INTERVAL_S": "0.5",
    "LABELFORGE_HEARTBEAT_INTERVAL_S": "0.2",
    "LABELFORGE_BROKER_POLLING_INTERVAL_S": "0.1",
    "LABELFORGE_DEVICE": "cpu",
    "OMP_NUM_THREADS": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A subprocess in its own session, logging to a file; `stop` ends it and its children."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._log.close()


def wait_http(url: str, proc: Proc, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.proc.returncode}):\n{proc.log()[-4000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout_s}s:\n{proc.log()[-4000:]}")


@dataclass
class Server:
    """A running API: its URL, one API key per tenant (A, B, C), its env and its processes."""

    url: str
    keys: list[str]
    env: dict[str, str]
    data_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def client(self, tenant: int = 0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60,
                            headers={"Authorization": f"Bearer {self.keys[tenant]}"})

    def logs(self) -> str:
        return "\n".join(p.log()[-3000:] for p in self.procs)


def start_api(env: dict[str, str], log: Path, workers: int = 1) -> tuple[str, Proc]:
    """uvicorn serving `create_app` (as in docker-compose) on a free port, with `workers` processes."""
    port = free_port()
    proc = Proc([sys.executable, "-m", "uvicorn", "--factory", "service.api.main:create_app", "--workers",
                 str(workers), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env, log)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return url, proc



def wait_job(client: httpx.Client, kind: str, job_id: str, server: Server, timeout_s: float = 90.0) -> dict:
    """Poll a job until it ends; fail with the server logs if it does not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/{kind}/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout_s}s:\n{server.logs()}")
