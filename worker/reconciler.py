"""The reconciler: makes the job records true, whatever the broker did.

Celery with late acks is not enough on its own: a message held by a worker that died whole waits out
Redis' visibility timeout, a broker restarted without its data forgets messages, and
`reject_on_worker_lost` requeues a shard that always crashes forever. So every `reconcile_interval_s`
one pass over the running jobs, reading only the database:

1. shards never sent (broker was down at `enqueue`) are sent;
2. a *running* shard with no heartbeat for the deadline is re-sent under a fresh task id (the old
   message, if it ever arrives, is stale and dropped) — unless it already crashed `max_deliveries`
   times, in which case the job fails naming the shard (poison);
3. *pending* shards that were sent but never started are re-sent when nothing at all is progressing
   for the deadline (the broker lost them; a busy fleet merely has a queue);
4. jobs whose shards are all stored get `finalize_job` (again, if the last one got lost).

deadline = clamp(2 × p99 of this job's finished shard times, floor, ceiling). The Redis visibility
timeout is set to the ceiling, so the broker never redelivers before the reconciler would.

Run it as a process next to a worker (`labelforge worker` does: `ReconcilerProcess`, i.e.
`python -m worker.reconciler`), or as the `worker.tasks.reconcile` task. Several reconcilers at once are
safe: each re-send is a compare-and-set on the shard's task id.

Why a process and not a thread in the worker: Celery's main process forks a replacement pool process
whenever one dies. A fork copies whatever a second thread holds at that instant — SQLite's in-process
lock bookkeeping mid-transaction, a half-used broker connection — and the child then waits forever on a
lock no live process holds (seen as a shard "received" that never starts: the new pool process sits in
`claim_shard`, inside SQLite's busy handler, until the broker's 1-hour visibility timeout). A process
that forks must run no other threads; so the reconciler lives in a process of its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from celery import Celery
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from worker.db import (
    JOB_ACTIVE,
    JOB_FAILED,
    SHARD_FAILED,
    SHARD_PENDING,
    SHARD_RUNNING,
    SHARD_STORED,
    Job,
    ShardTask,
    get_sessionmaker,
    utcnow,
)
from worker.jobs import send_finalize, send_shard
from worker.process_exit import skip_final_gc_at_exit
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """What one pass did (logged; returned for tests and metrics)."""

    sent_unsent: int = 0
    resent_stalled: int = 0
    resent_lost: int = 0
    poisoned: list[str] = field(default_factory=list)  # "job_id:shard"
    finalized: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.sent_unsent or self.resent_stalled or self.resent_lost or self.poisoned or self.finalized)


def shard_deadline_s(session: Session, job_id: str, settings: Settings) -> float:
    """Seconds without progress after which a shard of `job_id` counts as lost: 2 × p99, clamped."""
    rows = session.execute(
        select(ShardTask.started_at, ShardTask.finished_at).where(
            ShardTask.job_id == job_id, ShardTask.status == SHARD_STORED, ShardTask.started_at.is_not(None),
            ShardTask.finished_at.is_not(None))
    ).all()
    if not rows:
        return settings.shard_deadline_floor_s
    durations = np.array([(end - start).total_seconds() for start, end in rows if start and end])
    if durations.size == 0:
        return settings.shard_deadline_floor_s
    p99 = float(np.percentile(durations, 99))
    return min(max(2.0 * p99, settings.shard_deadline_floor_s), settings.shard_deadline_ceiling_s)


def poison_reason(shard: int, starts: int) -> str:
    return f"shard {shard} was started {starts} times without finishing (it crashes or hangs its worker); giving up"


def fail_job(session: Session, job: Job, reason: str) -> None:
    """Fail `job` with `reason` (kept: the first failure is the one users need)."""
    if job.status in JOB_ACTIVE:
        job.status = JOB_FAILED
        job.error = job.error or reason
        job.finished_at = utcnow()


def reconcile_once(settings: Settings | None = None, *, celery: Celery | None = None) -> ReconcileReport:
    """One pass over every active job (see the module docstring)."""
    settings = settings or get_settings()
    report = ReconcileReport()
    session = get_sessionmaker(settings.database_url)()
    try:
        job_ids = session.scalars(select(Job.id).where(Job.status.in_(JOB_ACTIVE))).all()
        now = utcnow()
        fleet_active_since = now - timedelta(seconds=settings.shard_deadline_floor_s)
        fleet_busy = _anything_progressed(session, fleet_active_since)
        for job_id in job_ids:
            _reconcile_job(session, job_id, settings, now, fleet_busy, report, celery)
    finally:
        session.close()
    if report.changed:
        log.info("reconciler pass: %s", report)
    return report


def _anything_progressed(session: Session, since: datetime) -> bool:
    """Did any shard of any job beat or finish since `since`? If not, queued messages are likely lost."""
    recent = session.scalar(
        select(func.count()).select_from(ShardTask).where(
            or_(ShardTask.heartbeat_at >= since, ShardTask.finished_at >= since))
    )
    return bool(recent)


def _reconcile_job(session: Session, job_id: str, settings: Settings, now: datetime, fleet_busy: bool,
                   report: ReconcileReport, celery: Celery | None) -> None:
    job = session.get(Job, job_id)
    if job is None or job.status not in JOB_ACTIVE:
        return
    deadline = timedelta(seconds=shard_deadline_s(session, job_id, settings))
    shards = session.scalars(select(ShardTask).where(ShardTask.job_id == job_id)).all()
    if any(s.status == SHARD_FAILED for s in shards):
        fail_job(session, job, next(f"shard {s.shard}: {s.error}" for s in shards if s.status == SHARD_FAILED))
        session.commit()
        return
    if shards and all(s.status == SHARD_STORED for s in shards):
        if send_finalize(session, job_id, celery=celery, older_than=now - deadline):
            report.finalized += 1
        return
    for s in shards:
        if s.status == SHARD_PENDING and s.enqueued_at is None:
            report.sent_unsent += send_shard(session, job.kind, s, celery=celery)
        elif (s.status == SHARD_RUNNING and (s.heartbeat_at is None or now - s.heartbeat_at > deadline)
              and (s.enqueued_at is None or now - s.enqueued_at > deadline)):
            # (a re-send younger than the deadline is still on its way: sending another every pass
            # would flood the queue while no worker takes it)
            if s.deliveries - s.attempts >= settings.max_deliveries:
                reason = poison_reason(s.shard, s.deliveries - s.attempts)
                s.status, s.error = SHARD_FAILED, reason
                fail_job(session, job, reason)
                session.commit()
                report.poisoned.append(f"{job_id}:{s.shard}")
                return
            report.resent_stalled += send_shard(session, job.kind, s, celery=celery)
        elif (s.status == SHARD_PENDING and not fleet_busy and s.enqueued_at is not None
              and now - s.enqueued_at > deadline):
            report.resent_lost += send_shard(session, job.kind, s, celery=celery)


def run_reconciler(settings: Settings | None = None, parent_pid: int | None = None) -> None:
    """Run `reconcile_once` every `reconcile_interval_s` until SIGTERM or SIGINT, or until `parent_pid`
    (the worker that started this process) is gone; a failed pass is logged, never fatal.

    SIGINT too, because Ctrl-C in the terminal of `labelforge serve` or `labelforge worker` reaches
    the whole process group: the reconciler stops with its worker instead of printing a traceback.
    """
    settings = settings or get_settings()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(settings.reconcile_interval_s):
        if parent_pid is not None and os.getppid() != parent_pid:  # the worker died without stopping us
            return
        try:
            reconcile_once(settings)
        except Exception:  # a DB or broker hiccup must not kill the loop
            log.exception("reconciler pass failed")


class ReconcilerProcess:
    """`python -m worker.reconciler` as a child of the calling worker (same environment, same log)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "worker.reconciler", "--parent", str(os.getpid())])

    def request_stop(self) -> None:
        """Ask the reconciler to stop (SIGTERM), without waiting: safe inside a signal handler.

        A worker calls this as its shutdown begins and `stop` as it ends, so the reconciler's exit
        (about 0.9 s, mostly the interpreter tearing down torch) runs while the pool closes instead of
        after it. A stopping worker needs no reconciler: it takes no new shard, and the reconciler of
        any other worker does the same passes.
        """
        if self.proc is not None:
            self.proc.terminate()  # (a no-op once the process is reaped)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the reconciler and reap it; SIGKILL if it has not exited after `timeout_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str]) -> None:
    """Entry point of `python -m worker.reconciler [--parent PID]`."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/Reconciler] %(message)s")
    parent = int(argv[argv.index("--parent") + 1]) if "--parent" in argv else None
    skip_final_gc_at_exit()
    run_reconciler(parent_pid=parent)


if __name__ == "__main__":
    main(sys.argv[1:])
