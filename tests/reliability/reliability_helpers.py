"""Real moving parts for the reliability scenarios: a private Redis server the test may restart or wipe,
a TCP proxy that takes S3 "down", a fleet of worker subprocesses, a trigger that fires while a worker is
half-way through writing a shard, a watcher that lists storage continuously to prove no partial object
is ever visible, and the checks that a finished dataset is complete and byte-identical to a reference.

Fixtures built on these live in conftest.py; the worker and API subprocess classes are the ones from
tests/worker and tests/service, reused rather than copied.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import webdataset as wds

from tests.service.service_helpers import Proc, free_port, wait_http
from tests.worker.worker_helpers import WorkerProcess, make_env
from worker.db import Job, ShardTask, get_sessionmaker, init_db, make_engine
from worker.storage import Storage

# Reconciler timings for these scenarios: the shard deadline is 2 × p99 of the job's finished shards,
# floored at 2 s (tests/worker uses 3 s), passes twice a second, heartbeats 5× a second.
RELIABILITY_ENV = {
    "LABELFORGE_SHARD_DEADLINE_FLOOR_S": "2",
    "LABELFORGE_SHARD_DEADLINE_CEILING_S": "30",
    "LABELFORGE_VISIBILITY_TIMEOUT_S": "3600",  # the broker's own redelivery must never be what rescues a job
}


# --- a private Redis server ---------------------------------------------------------------------


class RedisServer:
    """`redis-server` on a free loopback port with AOF on (fsync always), in a folder of its own."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} not up: {(self.folder / 'redis.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM: the AOF is flushed), as an operator's restart would do."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        self.proc = None

    def wipe(self) -> None:
        """Delete everything the server persisted (AOF folder, RDB): it comes back empty."""
        for path in self.folder.iterdir():
            if path.name != "redis.log":
                subprocess.run(["rm", "-rf", str(path)], check=True)

    def restart(self, *, wipe: bool = False, down_s: float = 0.0) -> None:
        self.stop()
        if wipe:
            self.wipe()
        time.sleep(down_s)
        self.start()


# --- a TCP proxy that can take a server off the network -----------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_port`. `down()` closes every connection and stops listening
    (clients get resets and "connection refused", exactly as when the server process is stopped),
    `up()` listens again on the same port. Used for S3 because moto keeps its objects only in memory:
    stopping the moto process itself would also erase the bucket, which no real S3 outage does."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            _close(conn)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# --- workers ------------------------------------------------------------------------------------


class Fleet:
    """`size` `labelforge worker` subprocesses sharing `env`; each has its own TMPDIR, so a test can see
    which worker is writing a shard (the engine writes each shard to a temp file there first)."""

    def __init__(self, env: dict[str, str], folder: Path, size: int = 2, **fault: str):
        self.env, self.folder, self.fault = env, folder, fault
        self.workers: list[WorkerProcess] = []
        self.tmpdirs: dict[int, Path] = {}
        self.started = 0
        for _ in range(size):
            self.add()

    def add(self) -> WorkerProcess:
        n = self.started
        self.started += 1
        tmpdir = self.folder / f"worker-{n}-tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "TMPDIR": str(tmpdir),
               **{f"LABELFORGE_FAULT_{k.upper()}": v for k, v in self.fault.items()}}
        worker = WorkerProcess(env, self.folder / f"worker-{n}.log")
        self.workers.append(worker)
        self.tmpdirs[id(worker)] = tmpdir
        return worker

    def tmpdir(self, worker: WorkerProcess) -> Path:
        return self.tmpdirs[id(worker)]

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.proc.poll() is None]

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until every live worker logged `ready` (its pool is forked and it consumes)."""
        deadline = time.monotonic() + timeout_s
        while not all(" ready." in w.log() for w in self.alive()):
            if time.monotonic() > deadline:
                raise AssertionError(f"workers not ready after {timeout_s}s:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-tail:]}" for w in self.workers)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def fleet_env(tmp: Path, bundles_dir: Path, *, broker: str, database_url: str, **extra: str) -> dict[str, str]:
    """Worker/test env for these scenarios: tests/worker's fast reconciler plus RELIABILITY_ENV."""
    env = make_env(tmp, bundles_dir, broker=broker, database_url=database_url, **extra)
    return {**env, **RELIABILITY_ENV, **{f"LABELFORGE_{k.upper()}": v for k, v in extra.items()}}


@dataclass
class WriteMoment:
    """Where a shard write was caught: which worker, the temp file and how far it had got."""

    worker: WorkerProcess
    path: Path
    bytes_written: int
    fraction: float


def temp_shard_files(fleet: Fleet) -> set[str]:
    """The temp shard files in the workers' temp folders now (a killed process's leftovers included)."""
    return {name for worker in fleet.workers
            for name in glob.glob(str(fleet.tmpdir(worker) / "labelforge-worker-*" / "labelforge-shards-*" / "*.tar"))}


def wait_for_shard_write(fleet: Fleet, shard_bytes: int, fraction: float, timeout_s: float = 60.0,
                         ignore: set[str] = frozenset()) -> WriteMoment:  # type: ignore[assignment]
    """Block until some worker's temp shard file (not one in `ignore`) holds at least `fraction` of a
    shard's bytes. Each pool process writes under `{TMPDIR}/labelforge-worker-{pid}/` (worker.celery_app).

    Polls every millisecond or so; the shard is then mid-write (its tar is still growing), which is the
    moment the issue asks a kill to land in."""
    deadline = time.monotonic() + timeout_s
    want = int(shard_bytes * fraction)
    while time.monotonic() < deadline:
        for worker in fleet.alive():
            for name in glob.glob(str(fleet.tmpdir(worker) / "labelforge-worker-*" / "labelforge-shards-*" / "*.tar")):
                if name in ignore:
                    continue
                try:
                    size = os.stat(name).st_size
                except FileNotFoundError:
                    continue
                if want <= size < shard_bytes:
                    return WriteMoment(worker, Path(name), size, size / shard_bytes)
        time.sleep(0.001)
    raise AssertionError(f"no shard reached {fraction:.0%} of {shard_bytes} bytes in {timeout_s}s:\n{fleet.logs()}")


# --- watching storage ---------------------------------------------------------------------------


@dataclass
class WatchReport:
    listings: int = 0
    objects_seen: int = 0
    objects_checked: int = 0
    partial: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


class StorageWatcher(threading.Thread):
    """Lists every object under `prefix` as fast as it can while a scenario runs, and checks each one it
    sees (again whenever its size changes): a shard must hash to the reference bytes for its file name,
    a JSON object must parse. Anything else was a partial object visible to readers."""

    def __init__(self, storage: Storage, prefix: str, expected_sha: dict[str, str], interval_s: float = 0.005):
        super().__init__(daemon=True)
        self.storage, self.prefix, self.expected_sha, self.interval_s = storage, prefix, expected_sha, interval_s
        self.report = WatchReport()
        self._stop_event = threading.Event()
        self._checked: dict[str, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.scan()
                self._stop_event.wait(self.interval_s)
            self.scan()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def scan(self) -> None:
        keys = self.storage.list(self.prefix)
        self.report.listings += 1
        self.report.objects_seen += len(keys)
        for key in keys:
            try:
                size = self.storage.size(key)
                if self._checked.get(key) == size:
                    continue
                data = self.storage.get_bytes(key)
            except KeyError:  # deleted between list and read (a job delete): not a partial object
                continue
            self._checked[key] = size
            self.report.objects_checked += 1
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".tar"):
                if name not in self.expected_sha:
                    self.report.unexpected.append(key)
                elif hashlib.sha256(data).hexdigest() != self.expected_sha[name] or len(data) != size:
                    self.report.partial.append(f"{key} ({len(data)} bytes)")
            elif name.endswith(".json"):
                try:
                    json.loads(data)
                except ValueError:
                    self.report.partial.append(key)

    def stop(self) -> WatchReport:
        self._stop_event.set()
        self.join(30)
        if self.error is not None:
            raise self.error
        return self.report


# --- checking a finished dataset ----------------------------------------------------------------


@dataclass
class DatasetCheck:
    expected: int
    found: int
    duplicated: int
    shard_sha: dict[str, str]
    deliveries: int


def check_dataset(storage: Storage, database_url: str, job_id: str, count: int,
                  reference_sha: dict[str, str] | None = None, scratch: Path | None = None) -> DatasetCheck:
    """Read the finished dataset with plain `webdataset`: each key 0..count-1 exactly once, the manifest
    agrees, and (given a reference) every shard is byte-identical to the undisturbed run's."""
    with get_sessionmaker(database_url)() as session:
        job = session.get(Job, job_id)
        assert job is not None
        prefix = job.prefix
        deliveries = sum(s.deliveries for s in job.shards)
        assert job.done_samples == count, (job.done_samples, count)
    keys = storage.list(prefix)
    shard_keys = [k for k in keys if k.endswith(".tar")]
    manifest = json.loads(storage.get_bytes(f"{prefix}manifest.json"))
    assert manifest["count"] == count
    shard_sha: dict[str, str] = {}
    sample_keys: list[str] = []
    for key in shard_keys:
        data = storage.get_bytes(key)
        shard_sha[key.rsplit("/", 1)[-1]] = hashlib.sha256(data).hexdigest()
        if scratch is not None:  # read with webdataset exactly as a user would, from a local copy
            local = scratch / key.rsplit("/", 1)[-1]
            local.write_bytes(data)
            sample_keys += [s["__key__"] for s in wds.WebDataset(str(local), shardshuffle=False)]
    assert {s["file"]: s["sha256"] for s in manifest["shards"]} == shard_sha
    if reference_sha is not None:
        assert shard_sha == reference_sha, "shards differ from the undisturbed run"
    duplicated = len(sample_keys) - len(set(sample_keys)) if scratch is not None else 0
    if scratch is not None:
        assert sorted(set(sample_keys)) == [f"{i:09d}" for i in range(count)]
        assert duplicated == 0
    found = len(set(sample_keys)) if scratch is not None else sum(s["count"] for s in manifest["shards"])
    return DatasetCheck(count, found, duplicated, shard_sha, deliveries)


def shard_durations(database_url: str, job_id: str) -> list[float]:
    """Seconds from claim to stored for each stored shard of a job (what the reconciler's p99 uses)."""
    with get_sessionmaker(database_url)() as session:
        rows = session.query(ShardTask).filter(ShardTask.job_id == job_id).all()
        return [(r.finished_at - r.started_at).total_seconds() for r in rows if r.finished_at and r.started_at]


def p99(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 99))


def poll(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Call `predicate` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


# --- the distributed service: API + workers ------------------------------------------------------

API_KEYS = ["rel-tenant-a-key-0123456789", "rel-tenant-b-key-0123456789", "rel-tenant-c-key-0123456789",
            "rel-tenant-d-key-0123456789"]


def start_api_on(env: dict[str, str], log: Path, port: int | None = None) -> tuple[str, Proc]:
    """uvicorn serving `create_app` (as in docker-compose) on `port` (free one by default)."""
    port = port or free_port()
    proc = Proc([sys.executable, "-m", "uvicorn", "--factory", "service.api.main:create_app", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"], env, log)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return url, proc


@dataclass
class Stack:
    """The distributed shape on loopback: uvicorn API, `labelforge worker` fleet, Redis, a database,
    and storage (local folder, or S3 when the env names an endpoint)."""

    env: dict[str, str]
    fleet: Fleet
    api: Proc
    url: str
    folder: Path

    def client(self, tenant: int = 0, timeout_s: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s,
                            headers={"Authorization": f"Bearer {API_KEYS[tenant]}"})

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def crash_api(self) -> None:
        """SIGKILL the API process (no graceful shutdown)."""
        os.killpg(self.api.proc.pid, signal.SIGKILL)
        self.api.stop()

    def restart_api(self) -> None:
        """A new API process on the same port, as a supervisor would start it."""
        self.url, self.api = start_api_on(self.env, self.folder / "api.log", self.port)

    def logs(self) -> str:
        return f"--- api\n{self.api.log()[-3000:]}\n{self.fleet.logs()}"

    def stop(self) -> None:
        self.api.stop()
        self.fleet.stop()


def start_stack(tmp: Path, bundles_dir: Path, *, broker: str, database_url: str, workers: int = 2,
                extra_env: dict[str, str] | None = None, **fault: str) -> Stack:
    env = {**fleet_env(tmp, bundles_dir, broker=broker, database_url=database_url),
           "LABELFORGE_API_KEYS": ",".join(API_KEYS), **(extra_env or {})}
    init_db(make_engine(database_url))
    fleet = Fleet(env, tmp / "fleet", size=workers, **fault)
    try:
        url, api = start_api_on(env, tmp / "api.log")
        fleet.wait_ready()
    except BaseException:
        fleet.stop()
        raise
    return Stack(env, fleet, api, url, tmp)


def dataset_body(bundle: str, count: int, shard_size: int, name: str = "rel", seed: int = 3) -> dict[str, Any]:
    return {"name": name, "bundle": bundle, "count": count, "seed": seed, "shard_size": shard_size,
            "image": {"format": "png"}}


def wait_status(client: httpx.Client, job_id: str, stack: Stack, timeout_s: float = 120.0,
                until: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Poll `GET /datasets/{id}` until the job ends (or `until` holds); connection errors are retried."""
    until = until or (lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = client.get(f"/datasets/{job_id}")
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        assert response.status_code == 200, response.text
        job = response.json()
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout_s}s: {job}\n{stack.logs()}")
