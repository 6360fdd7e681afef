"""Pool processes get a temp folder of their own, and a replacement process collects the folders of
processes that died (a SIGKILLed shard would otherwise leak its temp file forever)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from worker.celery_app import TMP_PREFIX, use_private_tmpdir


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
