"""Fixtures for the reliability scenarios: a private Redis server per test (so restarts and wipes touch
nothing else on the machine), the machine's PostgreSQL in a schema of its own, the tiny digits bundle.

Scenario tests are marked `reliability` (run by `make test-reliability`); one fast worker SIGKILL test
is unmarked and runs in the default suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.reliability.reliability_helpers import RedisServer
from worker.settings import get_settings

torch.set_num_threads(2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A `redis-server` of this test's own (AOF on), stopped at teardown."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_schema: Callable[[str], str]) -> str:
    """A fresh PostgreSQL schema with the tables created (dropped at session end)."""
    return pg_schema("rel")


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], None]]:
    """Point this process's settings at `env` (what an API process would read)."""

    def _use(env: dict[str, str]) -> None:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        get_settings().ensure_dirs()

    yield _use
    get_settings.cache_clear()
