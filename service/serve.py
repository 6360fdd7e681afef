"""The embedded deployment: the API and one worker on this machine, nothing else to install.

`labelforge serve` runs uvicorn in this process and `labelforge worker` as a child process. Both read
the same `LABELFORGE_*` settings, so with the defaults they share the folder broker, SQLite and local
storage under `./data`; pointing the env at Redis/S3/PostgreSQL serves the distributed setup with the
same command. The first start creates an API key, stores only its hash, and writes the key to
`data/api_key` (mode 0600) so scripts and the printed curl example can use it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from service.api.auth import create_tenant
from worker.db import Tenant, get_engine, get_sessionmaker, init_db
from worker.process_exit import skip_final_gc_at_exit
from worker.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "api_key"
WORKER_STOP_TIMEOUT_S = 20.0  # seconds a worker gets to finish its shard before it is killed


@dataclass(frozen=True)
class EmbeddedKey:
    """The API key file, and the key itself when this start created it (shown once)."""

    path: Path
    created: str | None


def ensure_api_key(settings: Settings) -> EmbeddedKey:
    """Create the first tenant and its key file if the database has no tenant yet."""
    settings.ensure_dirs()
    init_db(get_engine(settings.database_url))
    path = settings.data_dir / KEY_FILE
    with get_sessionmaker(settings.database_url)() as session:
        if session.scalar(select(func.count()).select_from(Tenant)) and path.is_file():
            return EmbeddedKey(path, None)
        _, key = create_tenant(session, f"local-{os.urandom(3).hex()}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        os.chmod(path, 0o600)
        session.commit()
    return EmbeddedKey(path, key)


def curl_example(url: str, key_path: Path) -> str:
    """A ready-to-paste request that orders a small dataset from the shipped faces bundle."""
    return (
        f"curl -s -X POST {url}/datasets \\\n"
        f"  -H \"Authorization: Bearer $(cat {key_path})\" -H 'Content-Type: application/json' \\\n"
        "  -d '{\"name\": \"demo\", \"bundle\": \"faces-m\", \"count\": 64, \"shard_size\": 32}'"
    )


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """`labelforge worker` as a child process sharing this process's environment (and so its settings)."""
    env = {**os.environ, **settings_env(settings)}
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env)


def settings_env(settings: Settings) -> dict[str, str]:
    """The env that gives a child process the same local paths (relative paths made absolute)."""
    return {
        "LABELFORGE_DATA_DIR": str(settings.data_dir.resolve()),
        "LABELFORGE_BUNDLES_DIR": str(settings.bundles_dir.resolve()),
        "LABELFORGE_DATABASE_URL": settings.database_url,
        "LABELFORGE_BROKER_URL": settings.broker_url,
    }


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM lets Celery finish its shard), then SIGKILL after the timeout."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run(settings: Settings, *, with_worker: bool = True) -> EmbeddedKey:
    """Serve until interrupted: the API in this process, the worker as a child. Returns the key info."""
    import uvicorn

    from service.api.main import create_app

    key = ensure_api_key(settings)
    skip_final_gc_at_exit()
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler that would end
    # this process before the `finally` below, orphaning the worker. Turn it into SystemExit instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    worker = start_worker(settings) if with_worker else None
    try:
        config = uvicorn.Config(create_app(settings), host=settings.api_host, port=settings.api_port,
                                log_level="info", access_log=False)
        uvicorn.Server(config).run()
    finally:
        if worker is not None:
            stop_worker(worker)
    return key
