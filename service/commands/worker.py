"""`labelforge worker`: one Celery worker on the `gpu` and `default` queues, plus the reconciler.

Equivalent to `celery -A worker.celery_app worker -Q gpu,default -c N` plus the reconciler of
worker/reconciler.py in a child process of its own (never a thread: Celery's main process forks
replacement pool processes, and a fork must not copy another thread's half-held locks), so the same
command works embedded (folder broker, SQLite) and distributed (Redis, PostgreSQL). Configuration comes
from `LABELFORGE_*` variables.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer


def worker(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Pool processes (default: LABELFORGE_WORKER_CONCURRENCY).")
    ] = None,
    queues: Annotated[str, typer.Option("--queues", "-Q", help="Comma-separated queues to consume.")] = "gpu,default",
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "INFO",
    reconciler: Annotated[bool, typer.Option(help="Run the reconciler loop in this worker.")] = True,
) -> None:
    """Start a worker that generates and labels shards (and reconciles job records)."""
    from pydantic import ValidationError

    from worker.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            where = f" {loc}" if loc else ""
            typer.echo(f"error: LABELFORGE settings{where}: {err['msg'].removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None
    unknown = set(queues.split(",")) - {"gpu", "default"}
    if unknown:
        typer.echo(f"error: --queues: unknown queue(s) {', '.join(sorted(unknown))}; use gpu and/or default", err=True)
        raise typer.Exit(2)

    from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

    from worker.celery_app import app as celery
    from worker.db import get_engine, init_db
    from worker.process_exit import skip_final_gc_at_exit
    from worker.reconciler import ReconcilerProcess

    skip_final_gc_at_exit()
    settings.ensure_dirs()
    init_db()
    get_engine().dispose()  # this process forks the pool: it keeps no DB connection open across a fork
    process = ReconcilerProcess()

    if reconciler:
        def _start(**_: Any) -> None:
            process.start()

        def _request_stop(**_: Any) -> None:  # (from Celery's signal handler, as shutdown begins)
            process.request_stop()

        def _stop(**_: Any) -> None:  # (once the pool is closed)
            process.stop()

        worker_ready.connect(_start, weak=False)
        worker_shutting_down.connect(_request_stop, weak=False)
        worker_shutdown.connect(_stop, weak=False)

    celery.worker_main([
        "worker", "-Q", queues, "-c", str(concurrency or settings.worker_concurrency), "-l", loglevel,
        "--pool", "prefork", "-n", f"labelforge-{os.getpid()}@%h", "--without-mingle", "--without-gossip",
    ])
