"""One embedded server (`labelforge serve`: API + worker, folder broker, SQLite, local storage) shared
by the bad-input catalogue and the tenant-isolation tests, plus the snapshot that proves a refused
request left nothing behind.

The server gets a private `TMPDIR`, so temp files the API or its worker would leave (spooled uploads,
half-written shards) show up in a folder the tests can list. Its limits are the service tests' ones
(2 MiB uploads), so size cases stay small and fast.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service.service_helpers import BIN, FAST, KEY_B, KEY_C, Proc, Server, free_port, wait_http

MAX_UPLOAD_MB = 2


@dataclass(frozen=True)
class Snapshot:
    """What a request could leave behind: job and shard rows, stored objects, broker messages, temp files."""

    rows: tuple[int, int]
    objects: frozenset[str]
    messages: frozenset[str]
    temp: frozenset[str]

    def leftovers(self, later: Snapshot) -> list[str]:
        """Human lines naming everything `later` holds that this snapshot did not."""
        found = []
        if later.rows != self.rows:
            found.append(f"job/shard rows {self.rows} -> {later.rows}")
        found += [f"object {p}" for p in sorted(later.objects - self.objects)]
        found += [f"broker message {p}" for p in sorted(later.messages - self.messages)]
        found += [f"temp file {p}" for p in sorted(later.temp - self.temp)]
        return found


@dataclass
class InputServer:
    """The served app and the folders it writes to."""

    server: Server
    tmp_dir: Path  # the server's TMPDIR

    def snapshot(self) -> Snapshot:
        data = self.server.data_dir
        with sqlite3.connect(data / "labelforge.db") as db:
            jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            shards = db.execute("SELECT COUNT(*) FROM shard_tasks").fetchone()[0]
        return Snapshot((jobs, shards), _files(data / "storage"), _files(data / "broker"), _files(self.tmp_dir))


def _files(root: Path) -> frozenset[str]:
    if not root.exists():
        return frozenset()
    return frozenset(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.fixture(scope="package")
def input_bundles_dir(tiny_bundle_dir: Path, tiny_faces_bundle_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny digits and faces bundles side by side (`tiny-digits`, `tiny-faces`)."""
    root = tmp_path_factory.mktemp("input-bundles")
    for src in (tiny_bundle_dir, tiny_faces_bundle_dir):
        (root / src.name).symlink_to(src, target_is_directory=True)
    return root


@pytest.fixture(scope="package")
def served(input_bundles_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InputServer]:
    """`labelforge serve` on a free port with three tenants (A: its generated key, B, C)."""
    tmp = tmp_path_factory.mktemp("inputs")
    temp_dir = tmp / "tmp"
    temp_dir.mkdir()
    port = free_port()
    env = {
        **FAST,
        "TMPDIR": str(temp_dir),
        "LABELFORGE_DATA_DIR": str(tmp / "data"),
        "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp}/data/labelforge.db",
        "LABELFORGE_BROKER_URL": "filesystem://",
        "LABELFORGE_BUNDLES_DIR": str(input_bundles_dir),
        "LABELFORGE_API_KEYS": f"{KEY_B},{KEY_C}",
        "LABELFORGE_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        "LABELFORGE_MAX_COUNT": "100000",
    }
    proc = Proc([str(BIN / "labelforge"), "serve", "--port", str(port)], env, tmp / "serve.log", cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        key_a = (tmp / "data" / "api_key").read_text().strip()
        yield InputServer(Server(url, [key_a, KEY_B, KEY_C], env, tmp / "data", [proc]), temp_dir)
    finally:
        proc.stop()
