"""Real servers for the API tests: `labelforge serve` (embedded: folder broker, SQLite, local storage),
and the distributed shape (uvicorn + a `labelforge worker` subprocess on the machine's Redis, a moto S3
server, PostgreSQL). Every server listens on a free loopback port and is torn down at module end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from service_helpers import (
    BIN,
    FAST,
    KEY_B,
    KEY_C,
    REDIS_DB_URL,
    Proc,
    Server,
    free_port,
    start_api,
    wait_http,
)

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def bundles_dir(tiny_bundle_dir: Path, tiny_faces_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundles folder holding the tiny digits and faces bundles (`tiny-digits`, `tiny-faces`)."""
    root = tmp_path_factory.mktemp("service-bundles")
    for src in (tiny_bundle_dir, tiny_faces_bundle_dir):
        (root / src.name).symlink_to(src, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def embedded(bundles_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`labelforge serve` exactly as a user runs it, in a fresh folder, on a free port."""
    tmp = tmp_path_factory.mktemp("embedded")
    port = free_port()
    env = {
        **FAST,
        "LABELFORGE_DATA_DIR": str(tmp / "data"),
        "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp}/data/labelforge.db",
        "LABELFORGE_BROKER_URL": "filesystem://",
        "LABELFORGE_BUNDLES_DIR": str(bundles_dir),
        "LABELFORGE_API_KEYS": f"{KEY_B},{KEY_C}",
        "LABELFORGE_MAX_UPLOAD_MB": "2",
    }
    proc = Proc([str(BIN / "labelforge"), "serve", "--port", str(port)], env, tmp / "serve.log", cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        key_a = (tmp / "data" / "api_key").read_text().strip()
        yield Server(url, [key_a, KEY_B, KEY_C], env, tmp / "data", [proc])
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3 API (moto's server) on a free port, with the labelforge bucket; env to reach it."""
    from minio import Minio

    port = free_port()
    proc = Proc([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], {},
                tmp_path_factory.mktemp("moto") / "moto.log")
    wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, timeout_s=30)
    env = {"LABELFORGE_S3_ENDPOINT": f"127.0.0.1:{port}", "LABELFORGE_S3_ACCESS_KEY": "testing-access-key",
           "LABELFORGE_S3_SECRET_KEY": "testing-secret-key-0123", "LABELFORGE_S3_BUCKET": "labelforge-test",
           "LABELFORGE_S3_SECURE": "false"}
    Minio(env["LABELFORGE_S3_ENDPOINT"], env["LABELFORGE_S3_ACCESS_KEY"], env["LABELFORGE_S3_SECRET_KEY"],
          secure=False, region="us-east-1").make_bucket(env["LABELFORGE_S3_BUCKET"])
    yield env
    proc.stop()


@pytest.fixture(scope="module")
def pg_url(pg_schema: Callable[[str], str]) -> str:
    """The machine's PostgreSQL, in a schema of this module's own (see `pg_schema` in tests/conftest.py)."""
    return pg_schema("h7")


@pytest.fixture(scope="module")
def distributed(bundles_dir: Path, moto_s3: dict[str, str], pg_url: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """API (uvicorn) + one `labelforge worker` on Redis db 12, moto S3 and PostgreSQL."""
    import redis

    try:
        redis.Redis.from_url(REDIS_DB_URL).flushdb()
    except redis.ConnectionError as exc:  # pragma: no cover - machine without Redis
        pytest.skip(f"Redis not reachable: {exc}")
    tmp = tmp_path_factory.mktemp("distributed")
    key_a = "tenant-a-key-0123456789abcdef"
    env = {**FAST, **moto_s3, "LABELFORGE_DATA_DIR": str(tmp / "data"), "LABELFORGE_DATABASE_URL": pg_url,
           "LABELFORGE_BROKER_URL": REDIS_DB_URL, "LABELFORGE_BUNDLES_DIR": str(bundles_dir),
           "LABELFORGE_API_KEYS": f"{key_a},{KEY_B}"}
    worker = Proc([str(BIN / "labelforge"), "worker", "-c", "1"], env, tmp / "worker.log")
    procs = [worker]
    try:
        url, api = start_api(env, tmp / "api.log")
        procs.append(api)
        yield Server(url, [key_a, KEY_B], env, tmp / "data", procs)
    finally:
        for p in procs:
            p.stop()
        redis.Redis.from_url(REDIS_DB_URL).flushdb()
