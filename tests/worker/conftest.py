"""Fixtures that run the worker side for real: Celery worker subprocesses (`labelforge worker`) on the
machine's Redis (db 11, flushed) or on the embedded folder broker, job records on SQLite or the
machine's PostgreSQL (a schema of this test session's own, dropped afterwards), local storage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.worker.worker_helpers import REDIS_URL, WorkerProcess
from worker.db import init_db, make_engine
from worker.settings import Settings, get_settings

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def pg_schema_url(pg_schema: Callable[[str], str]) -> str:
    """A PostgreSQL URL on a schema of the worker tests' own (see `pg_schema` in tests/conftest.py)."""
    return pg_schema("h6")


@pytest.fixture(scope="session")
def redis_broker() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:  # pragma: no cover
        pytest.skip(f"Redis at {REDIS_URL} not reachable: {exc}")
    return REDIS_URL


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses with a given env; all are stopped at teardown."""
    workers: list[WorkerProcess] = []

    def _start(env: dict[str, str], reconciler: bool = True, **fault: str) -> WorkerProcess:
        full = {**env, **{f"LABELFORGE_FAULT_{k.upper()}": v for k, v in fault.items()}}
        w = WorkerProcess(full, tmp_path / f"worker-{len(workers)}.log", reconciler=reconciler)
        workers.append(w)
        return w

    yield _start
    for w in workers:
        w.stop()


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], Settings]]:
    """Point this process's settings at `env` (what the API process would do)."""

    def _use(env: dict[str, str]) -> Settings:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        settings = get_settings()
        settings.ensure_dirs()
        init_db(make_engine(settings.database_url))
        return settings

    yield _use
    get_settings.cache_clear()

