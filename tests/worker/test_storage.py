"""Storage backends: the same behaviour from a local directory and from a real S3 server (moto)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from worker.storage import (
    S3_CLIENT_RETRIES,
    KeepAliveStorage,
    LocalStorage,
    ObjectNotFoundError,
    S3Storage,
    Storage,
    TransientStorageError,
    storage_from_url,
    validate_key,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint():
    """A real moto S3 server in a subprocess; yields `host:port`."""
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_bucket(moto_endpoint):
    from minio import Minio

    client = Minio(moto_endpoint, access_key="test", secret_key="test", secure=False)
    client.make_bucket("lf-test")
    return "lf-test"


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    # a fresh prefix per test keeps tests independent in the shared bucket
    return S3Storage(bucket, f"t{time.monotonic_ns()}", endpoint=endpoint, access_key="test",
                     secret_key="test", secure=False, part_size=5 * 1024 * 1024)


def test_put_get_list_delete_round_trip(storage: Storage, tmp_path: Path) -> None:
    storage.put_bytes("ds/a/x-000000.tar", b"one")
    src = tmp_path / "payload.bin"
    src.write_bytes(b"two" * 1000)
    storage.put_file("ds/a/x-000001.tar", src)
    storage.put_bytes("ds/b/manifest.json", b"{}", content_type="application/json")

    assert storage.get_bytes("ds/a/x-000000.tar") == b"one"
    with storage.open("ds/a/x-000001.tar") as fh:
        assert fh.read() == b"two" * 1000
    assert storage.size("ds/a/x-000001.tar") == 3000
    assert storage.exists("ds/b/manifest.json") and not storage.exists("ds/b/other")
    assert storage.list("ds/a/") == ["ds/a/x-000000.tar", "ds/a/x-000001.tar"]
    assert storage.list("ds/") == ["ds/a/x-000000.tar", "ds/a/x-000001.tar", "ds/b/manifest.json"]
    assert storage.list("nothing/") == []

    assert storage.delete_prefix("ds/a/") == 2
    assert storage.list("ds/") == ["ds/b/manifest.json"]
    with pytest.raises(ObjectNotFoundError):
        storage.get_bytes("ds/a/x-000000.tar")


def test_overwrite_replaces_whole_object(storage: Storage) -> None:
    storage.put_bytes("k/obj", b"a" * 100)
    storage.put_bytes("k/obj", b"b" * 10)
    assert storage.get_bytes("k/obj") == b"b" * 10


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs", "a/../b", "a\\b", "a\x00b", "", "a//b"])
def test_unsafe_keys_are_refused(storage: Storage, bad: str) -> None:
    with pytest.raises(ValueError):
        storage.put_bytes(bad, b"x")
    with pytest.raises(ValueError):
        validate_key(bad)


def test_presign_get_serves_the_object_over_http(moto_endpoint, s3_bucket) -> None:
    store = S3Storage(s3_bucket, "presign", endpoint=moto_endpoint, access_key="test", secret_key="test",
                      secure=False)
    store.put_bytes("p/shard.tar", b"shard-bytes")
    url = store.presign_get("p/shard.tar", expires_s=600)
    assert url is not None and "X-Amz-Expires=600" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"shard-bytes"
    with pytest.raises(ValueError, match="expires_s"):
        store.presign_get("p/shard.tar", expires_s=8 * 24 * 3600)
    assert LocalStorage(Path(os.environ.get("TMPDIR", "/tmp")) / "lf-presign").presign_get("a") is None


def test_large_object_goes_multipart_and_round_trips(moto_endpoint, s3_bucket, tmp_path: Path) -> None:
    store = S3Storage(s3_bucket, "mp", endpoint=moto_endpoint, access_key="test", secret_key="test",
                      secure=False, part_size=5 * 1024 * 1024)
    data = os.urandom(11 * 1024 * 1024)  # 3 parts of the 5 MiB minimum
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    store.put_file("big.bin", src)
    assert store.size("big.bin") == len(data)
    assert store.get_bytes("big.bin") == data


def test_no_partial_object_is_visible_during_a_local_write(tmp_path: Path) -> None:
    """A reader polling while a large object is written never sees it half-written."""
    store = LocalStorage(tmp_path / "store")
    data = os.urandom(32 * 1024 * 1024)
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if store.exists("big/obj"):
                seen.append(store.size("big/obj"))
            assert store.list("big/") in ([], ["big/obj"])

    reader = threading.Thread(target=poll)
    reader.start()
    store.put_bytes("big/obj", data)
    stop.set()
    reader.join()
    assert all(n == len(data) for n in seen)
    assert store.list("") == ["big/obj"]  # no temp file left behind, none listed


def test_no_partial_object_is_visible_after_a_failed_s3_upload(moto_endpoint, s3_bucket) -> None:
    """A multipart upload that dies half-way leaves no object under the key."""
    store = S3Storage(s3_bucket, "fail", endpoint=moto_endpoint, access_key="test", secret_key="test",
                      secure=False, part_size=5 * 1024 * 1024)

    class Dies(Exception):
        pass

    class FailingReader:
        def __init__(self) -> None:
            self.sent = 0

        def read(self, n: int = -1) -> bytes:
            if self.sent >= 6 * 1024 * 1024:
                raise Dies("network gone")
            n = 1024 * 1024 if n is None or n < 0 else n
            self.sent += n
            return b"x" * n

    with pytest.raises(Dies):
        store.client.put_object(s3_bucket, "fail/obj", FailingReader(), -1, part_size=5 * 1024 * 1024)
    assert not store.exists("obj")
    assert store.list("") == []


def test_unreachable_server_is_a_transient_error(tmp_path: Path) -> None:
    store = S3Storage("lf-bucket", endpoint=f"127.0.0.1:{_free_port()}", access_key="a", secret_key="b", secure=False)
    store.client._http.connection_pool_kw["retries"] = 0  # fail fast instead of urllib3's retry loop
    with pytest.raises(TransientStorageError):
        store.put_bytes("x", b"1")


class SilentServer:
    """Accepts TCP connections and never answers: a hung S3 endpoint. Counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_hung_server_fails_the_call_quickly_with_bounded_retries() -> None:
    """The SDK alone would wait 5 min per try and try 6 times; a shard must instead get a
    TransientStorageError (which it retries with backoff) after one quick in-client retry."""
    server = SilentServer()
    read_timeout_s = 0.5
    store = S3Storage("lf-bucket", endpoint=f"127.0.0.1:{server.port}", access_key="a", secret_key="b",
                      secure=False, region="us-east-1", read_timeout_s=read_timeout_s)
    try:
        started = time.monotonic()
        with pytest.raises(TransientStorageError, match="timed out"):
            store.put_bytes("x", b"1")
        took = time.monotonic() - started
    finally:
        server.close()
    assert len(server.accepted) == 1 + S3_CLIENT_RETRIES
    assert took >= (1 + S3_CLIENT_RETRIES) * read_timeout_s  # it did wait for the server each time...
    assert took < 10 * (1 + S3_CLIENT_RETRIES) * read_timeout_s  # ...and then gave up, not minutes later


def test_keepalive_storage_beats_while_a_write_waits(tmp_path: Path) -> None:
    """A write blocked in storage keeps the shard's heartbeat going, and only while it runs."""
    beats: list[float] = []

    class SlowStorage(LocalStorage):
        def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
            time.sleep(1.0)
            if key == "fails":
                raise TransientStorageError("server went away")
            super().put_bytes(key, data, content_type)

    store = KeepAliveStorage(SlowStorage(tmp_path), lambda: beats.append(time.monotonic()), interval_s=0.1)
    store.put_bytes("a", b"payload")
    assert store.get_bytes("a") == b"payload"  # reads pass straight through
    assert len(beats) >= 3  # ~9 expected; a loaded machine may delay the thread, never stop it
    after = len(beats)
    with pytest.raises(TransientStorageError):
        store.put_bytes("fails", b"x")
    assert len(beats) > after
    stopped = len(beats)
    time.sleep(0.4)
    assert len(beats) == stopped  # no beats once no write is running


def test_storage_from_url(monkeypatch, tmp_path: Path, moto_endpoint, s3_bucket) -> None:
    local = storage_from_url(tmp_path / "here")
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "here").resolve()
    monkeypatch.setenv("LABELFORGE_S3_ENDPOINT", f"http://{moto_endpoint}")
    monkeypatch.setenv("LABELFORGE_S3_ACCESS_KEY", "test")
    monkeypatch.setenv("LABELFORGE_S3_SECRET_KEY", "test")
    monkeypatch.setenv("LABELFORGE_S3_SECURE", "false")
    s3 = storage_from_url(f"s3://{s3_bucket}/from-url/sub")
    assert isinstance(s3, S3Storage) and s3.prefix == "from-url/sub/"
    s3.put_bytes("a.txt", b"hi")
    assert s3.list("") == ["a.txt"]
    with pytest.raises(ValueError, match="only s3://"):
        storage_from_url("gs://bucket/x")


def test_engine_shards_on_s3_read_back_through_presigned_urls(moto_endpoint, s3_bucket, tiny_bundle,
                                                               tmp_path: Path) -> None:
    """The engine writes through S3Storage; each shard downloads by presigned URL and reads with webdataset."""
    import webdataset as wds

    from models.engine import generate_dataset
    from models.spec import parse_spec

    store = S3Storage(s3_bucket, "engine", endpoint=moto_endpoint, access_key="test", secret_key="test",
                      secure=False)
    spec = parse_spec({"name": "s3-ds", "bundle": "tiny-digits", "count": 12, "shard_size": 6})
    manifest = generate_dataset(spec, tiny_bundle, store, "ds/")
    assert store.list("ds/") == ["ds/card.md", "ds/card.png", "ds/histograms.png", "ds/manifest.json",
                                 "ds/s3-ds-000000.tar", "ds/s3-ds-000001.tar"]
    keys = []
    for shard in manifest["shards"]:
        url = store.presign_get("ds/" + shard["file"])
        assert url is not None
        local = tmp_path / shard["file"]
        with urllib.request.urlopen(url, timeout=10) as resp:
            local.write_bytes(resp.read())
        keys += [s["__key__"] for s in wds.WebDataset([str(local)], shardshuffle=False)]
    assert keys == [f"{i:09d}" for i in range(12)]
