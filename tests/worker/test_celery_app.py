"""Pool processes get a temp folder of their own, and a replacement process collects the folders of
processes that died (a SIGKILLed shard would otherwise leak its temp file forever). On the embedded
folder broker the next message is delivered as soon as the running one is acknowledged, and an idle
worker gets a new message as soon as it is written, not one polling interval later."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Exchange, Queue

from worker.celery_app import TMP_PREFIX, FolderTransport, make_celery, use_private_tmpdir
from worker.settings import Settings


@pytest.fixture
def restore_tempdir():  # type: ignore[no-untyped-def]
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


def test_private_tmpdir_collects_dead_processes_leftovers(tmp_path: Path, restore_tempdir) -> None:  # type: ignore[no-untyped-def]
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{TMP_PREFIX}{dead.pid}" / "labelforge-shards-x"
    stale.mkdir(parents=True)
    (stale / "half.tar").write_bytes(b"\0" * 4096)
    live = tmp_path / f"{TMP_PREFIX}{os.getppid()}"  # a live process's folder is left alone
    live.mkdir()
    other = tmp_path / "someone-elses"
    other.mkdir()

    mine = use_private_tmpdir(tmp_path)

    assert mine == tmp_path / f"{TMP_PREFIX}{os.getpid()}" and mine.is_dir()
    assert tempfile.gettempdir() == str(mine)
    assert not stale.parent.exists()
    assert live.is_dir() and other.is_dir()


def _private_queue() -> Queue:
    """A queue of the calling test's own: kombu remembers bindings per process (not per folder), so a
    name reused with a second folder would never be bound there and its messages would be dropped."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name), routing_key=name)


def test_folder_broker_delivers_the_next_message_right_after_the_ack(tmp_path: Path) -> None:
    """Prefetch 1 and late acks, as a worker runs: the second message must not wait out the poll interval."""
    settings = Settings(data_dir=tmp_path / "data", broker_url="filesystem://", broker_polling_interval_s=2.0)
    settings.ensure_dirs()
    queue = _private_queue()
    received: list[tuple[float, Any]] = []
    with make_celery(settings).connection_for_read() as conn:
        assert isinstance(conn.transport, FolderTransport)
        with conn.Producer() as producer:
            for n in range(2):
                producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])
        with conn.Consumer(queue, callbacks=[lambda body, msg: received.append((time.monotonic(), msg))],
                           prefetch_count=1):
            conn.drain_events(timeout=5)
            assert len(received) == 1  # prefetch 1: the second waits for the ack
            threading.Timer(0.3, received[0][1].ack).start()  # the task ends (and is acked) 0.3 s later
            start = time.monotonic()
            conn.drain_events(timeout=5)
    assert sorted(m.payload["n"] for _, m in received) == [0, 1]  # (same-millisecond messages: any order)
    waited = received[1][0] - start
    assert 0.25 < waited < 1.0, waited  # kombu's own loop would sleep the whole 2 s interval first


@pytest.mark.skipif(sys.platform != "linux", reason="the idle wake-up uses inotify; elsewhere it polls")
def test_folder_broker_wakes_an_idle_consumer_when_a_message_is_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", broker_url="filesystem://", broker_polling_interval_s=2.0)
    settings.ensure_dirs()
    queue = _private_queue()
    app = make_celery(settings)
    received: list[float] = []

    def publish() -> None:  # the API enqueueing a shard, 0.3 s into the worker's wait
        with app.connection_for_write() as conn, conn.Producer() as producer:
            producer.publish({"n": 0}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])

    with app.connection_for_read() as conn:
        with conn.Consumer(queue, callbacks=[lambda body, msg: received.append(time.monotonic())], prefetch_count=1):
            threading.Timer(0.3, publish).start()
            start = time.monotonic()
            conn.drain_events(timeout=5)
    assert 0.25 < received[0] - start < 1.0, received[0] - start  # polling alone would wait 2 s
