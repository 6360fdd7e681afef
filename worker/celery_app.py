"""The Celery application: queues, delivery guarantees and serialization, all from `Settings`.

Run a worker with `labelforge worker` (or `celery -A worker.celery_app worker -Q gpu,default`).

Why these options:
- `task_acks_late` + `task_reject_on_worker_lost`: a shard's message is acknowledged only after the
  shard is stored, and a pool process that dies hands its message back to the broker.
- `worker_prefetch_multiplier=1`: a busy GPU worker does not hoard messages other workers could run.
- Redis `visibility_timeout` = the reconciler's deadline ceiling: the broker redelivers an unacked
  message no earlier than the reconciler would re-enqueue it (the reconciler, reading the job records,
  is the fast path; see worker/reconciler.py).
- Queues `gpu` (generation, labeling) and `default` (finalize, reconcile) are declared and
  `task_create_missing_queues=False`, so a typo'd queue is an error rather than a silent black hole.
- JSON only: no pickle ever crosses the broker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu import Exchange, Queue

from worker.settings import Settings, get_settings

QUEUE_GPU = "gpu"
QUEUE_DEFAULT = "default"

TASK_ROUTES = {
    "worker.tasks.generate_shard": {"queue": QUEUE_GPU},
    "worker.tasks.label_shard": {"queue": QUEUE_GPU},
    "worker.tasks.finalize_job": {"queue": QUEUE_DEFAULT},
    "worker.tasks.reconcile": {"queue": QUEUE_DEFAULT},
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for `settings` (also used by tests to build a producer-only app)."""
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": settings.broker_transport_options(),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,  # the job records are the results
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                      "interval_max": 0.5},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A pool process that died is reported (and its message requeued) after 1 s, not 10 s:
        # results are never needed here, so there is nothing to wait for.
        "worker_lost_wait": 1.0,
        "task_queues": (
            Queue(QUEUE_GPU, Exchange(QUEUE_GPU), routing_key=QUEUE_GPU),
            Queue(QUEUE_DEFAULT, Exchange(QUEUE_DEFAULT), routing_key=QUEUE_DEFAULT),
        ),
        "task_default_queue": QUEUE_DEFAULT,
        "task_create_missing_queues": False,
        "task_routes": TASK_ROUTES,
        "worker_send_task_events": False,
        "worker_enable_remote_control": not settings.broker_url.startswith("filesystem://"),
    }


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from `settings` (default: the environment)."""
    settings = settings or get_settings()
    celery = Celery("labelforge", include=["worker.tasks"])
    celery.conf.update(celery_config(settings))
    return celery


app = make_celery()

_producers: dict[str, Celery] = {}


def producer(settings: Settings | None = None) -> Celery:
    """The app to *send* with under `settings` (the current env by default).

    Usually the module's `app`; a process whose settings changed after import (tests, an API
    configured in code) gets an app of its own per broker, so messages never land on a stale broker.
    """
    settings = settings or get_settings()
    settings.ensure_dirs()
    config = celery_config(settings)
    if app.conf.broker_url == config["broker_url"] and app.conf.broker_transport_options == config[
        "broker_transport_options"
    ]:
        return app
    key = repr((config["broker_url"], sorted(config["broker_transport_options"].items())))
    if key not in _producers:
        _producers[key] = make_celery(settings)
    return _producers[key]


TMP_PREFIX = "labelforge-worker-"


def use_private_tmpdir(base: Path | None = None) -> Path:
    """Give this process a temp folder of its own (`{TMPDIR}/labelforge-worker-{pid}`) and remove the
    folders of processes that no longer exist.

    The engine writes each shard to a temp file before putting it into storage; a pool process killed
    mid-shard never deletes its file, so without this every crash would leak up to a shard's size of
    disk until the machine is cleaned by hand.
    """
    base = Path(base or tempfile.gettempdir())
    for stale in base.glob(f"{TMP_PREFIX}*"):
        pid = stale.name.removeprefix(TMP_PREFIX)
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    mine = base / f"{TMP_PREFIX}{os.getpid()}"
    mine.mkdir(exist_ok=True)
    tempfile.tempdir = str(mine)
    return mine


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Prefork children must not share the parent's pooled DB connections, and each gets its own
    temp folder (crash leftovers of dead siblings are collected here)."""
    from worker.db import dispose_engines

    dispose_engines()
    use_private_tmpdir()
