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
- The embedded folder broker is polled; `FolderTransport` wakes an idle worker as soon as a message
  file is written (inotify, on Linux; elsewhere it polls every `broker_polling_interval_s`), and while
  a task holds the prefetch slot re-checks the slot every few ms, so the next shard starts right after
  the current one is acknowledged (see `FolderTransport`).
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from celery.utils import timer2
from celery.worker import state as worker_state
from kombu import Exchange, Queue
from kombu.transport import filesystem

from worker.settings import Settings, get_settings

QUEUE_GPU = "gpu"
QUEUE_DEFAULT = "default"

TASK_ROUTES = {
    "worker.tasks.generate_shard": {"queue": QUEUE_GPU},
    "worker.tasks.label_shard": {"queue": QUEUE_GPU},
    "worker.tasks.finalize_job": {"queue": QUEUE_DEFAULT},
    "worker.tasks.reconcile": {"queue": QUEUE_DEFAULT},
}


_IN_CLOSE_WRITE, _IN_MOVED_TO = 0x08, 0x80  # inotify events: a file written and closed, moved in


class _FolderWatch:
    """Wakes a waiting consumer when a file is written into a folder (inotify); a plain sleep where
    inotify is missing (not Linux) or refuses."""

    def __init__(self, folder: str):
        self.fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(folder), _IN_CLOSE_WRITE | _IN_MOVED_TO) >= 0:
            self.fd = fd
        elif fd >= 0:
            os.close(fd)

    def wait(self, seconds: float) -> None:
        """Return after `seconds`, or sooner once a file was written (events so far are consumed)."""
        if self.fd < 0:
            time.sleep(seconds)
        elif select.select([self.fd], [], [], seconds)[0]:
            try:
                os.read(self.fd, 1 << 16)
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FolderTransport(filesystem.Transport):
    """kombu's folder broker, minus the waits of its polling.

    kombu checks for a message, and when there is none it sleeps its polling interval — also while a
    task holds the worker's only prefetch slot (prefetch 1, late acks), when there can be none. Each
    message then waited up to a whole interval: measured 0.01–0.07 s per hand-off at 0.05 s, five per
    4-shard job (the job's first shard, three more, its finalize). Here:
    - while a consumer's slot is taken, the slot is re-checked every `BUSY_POLL_S`, a check in memory
      that never touches the folder, so the folder is read as soon as the ack frees the slot;
    - idle, it waits on the queue folder with inotify (Linux) and reads it as soon as a message file
      is written, or after the polling interval at the latest (the only wake-up where inotify is
      missing, or cannot see the writer, e.g. on a network file system).
    """

    BUSY_POLL_S = 0.005
    _watch: _FolderWatch | None = None

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """`Transport.drain_events` with the waits above."""
        start = time.monotonic()
        cycle: Any = self.cycle  # (typed None on the base class until a channel opens)
        while True:
            if _worker_stopping():
                raise TimeoutError()  # "no message": see `_worker_stopping`
            busy = self._slot_taken()
            if not busy:
                try:
                    cycle.get(self._deliver, timeout=timeout)
                    return
                except Empty:
                    pass
            if timeout is not None and time.monotonic() - start >= timeout:
                raise TimeoutError()
            wait = self.BUSY_POLL_S if busy else (self.polling_interval or self.BUSY_POLL_S)
            wait = min(wait, timeout) if timeout else wait
            if busy:
                time.sleep(wait)
            else:
                self._folder_watch().wait(wait)

    def close_connection(self, connection: Any) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        super().close_connection(connection)

    def _slot_taken(self) -> bool:
        """A consuming channel is at its prefetch limit (a task is running and not yet acknowledged)."""
        channels: list[Any] = self.channels or []
        return any(ch._consumers and not ch.qos.can_consume() for ch in channels)

    def _folder_watch(self) -> _FolderWatch:
        if self._watch is None:
            client: Any = self.client
            self._watch = _FolderWatch(client.transport_options.get("data_folder_in", "data_in"))
        return self._watch


class WorkerTimer(timer2.Timer):
    """Celery's timer thread, except that `stop` wakes it rather than waiting out its idle wait.

    With nothing scheduled (a stopping worker has just cancelled its heartbeat), the thread waits
    1 s at a time for an entry, and between entries it sleeps up to `worker_timer_precision` (Celery's
    default: 1 s); `Timer.stop` sets a flag and joins the thread, so each worker shutdown waited up to
    1 s more here. The precision is 0.25 s (nothing here schedules finer than seconds: only the idle
    thread wakes more often), and `stop` sets the flag first and then wakes the waiting thread.
    """

    def stop(self) -> None:
        shutdown = getattr(self, "_Timer__is_shutdown", None)  # (Timer.stop's flag; without it, plain stop)
        if shutdown is not None:
            shutdown.set()
            with self.not_empty:
                self.not_empty.notify_all()
        super().stop()


def _worker_stopping() -> bool:
    """This process is a Celery worker that was asked to stop (SIGTERM, SIGINT, SIGQUIT).

    Celery's signal handler only sets a flag, and its loop for transports like this one (`synloop`)
    reads the flag between `drain_events(timeout=2.0)` calls — and, having read it, drains once more
    before it stops: an idle worker sat out 2–4 s of these waits after SIGTERM, and the last drain could
    even take a new message after it. So once the flag is set, `drain_events` reports "no message" at
    once (within one polling interval): a warm shutdown still finishes the running task, it just takes
    no new one, which stays in the folder for the next worker.
    """
    stop, terminate = worker_state.should_stop, worker_state.should_terminate
    # (the flags hold the exit code, and a warm shutdown's is 0: only None and False mean "no")
    return (stop is not None and stop is not False) or (terminate is not None and terminate is not False)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for `settings` (also used by tests to build a producer-only app)."""
    folder = settings.broker_url.startswith("filesystem://")
    return {
        "broker_url": settings.broker_url,
        "broker_transport": f"{__name__}:FolderTransport" if folder else None,
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
        # The timer thread of a worker without an event loop (the folder broker's; Redis workers have
        # none) and how long it sleeps between checks: a stopping worker waits for it (see `WorkerTimer`).
        "worker_timer": f"{__name__}:WorkerTimer",
        "worker_timer_precision": 0.25,
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
