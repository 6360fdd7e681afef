"""Object storage: one small interface, two backends (a local directory and S3/MinIO).

Every write is *atomic*: a reader either sees the whole object or nothing. That is what lets a
job's `manifest.json` (written last) mean "complete", and what makes a retried shard harmless.
Local writes go to a temporary file in a hidden folder of the same file system and are moved into
place with `os.replace`; on S3 an object exists only once its single PUT or its multipart upload has
completed, which the `minio` SDK does for us (it aborts nothing half-visible on failure).

Keys are '/'-separated relative paths (`datasets/<id>/faces-000000.tar`); anything that could escape
the root or confuse a file system (`..`, a leading '/', NUL, backslash) is refused with ValueError.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

log = logging.getLogger(__name__)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MULTIPART_PART_SIZE = 16 * 1024 * 1024  # bytes per multipart part; objects larger than this go multipart
MAX_PRESIGN_S = 7 * 24 * 3600  # S3's own upper bound on a presigned URL's lifetime
_TMP_DIR = ".labelforge-tmp"  # hidden folder under a LocalStorage root holding in-flight writes

# S3 client timeouts and retries. The SDK's defaults (5 min connect and read timeouts, 5 retries inside
# the call) let one request to a hung or unreachable server stall a shard for minutes, silently. Short
# timeouts and one quick in-client retry bound every call to about 2 × (connect + read) seconds; longer
# outages surface as TransientStorageError, which the shard task retries with backoff and heartbeats.
S3_CONNECT_TIMEOUT_S = 3.0
S3_READ_TIMEOUT_S = 30.0  # per socket read, i.e. the longest S3 may stay silent (a large part's PUT reply)
S3_CLIENT_RETRIES = 1


class StorageError(Exception):
    """A storage operation failed for good (missing object, access denied, bad bucket)."""


class TransientStorageError(StorageError):
    """A storage operation failed in a way worth retrying (network, timeout, server 5xx, throttling)."""


class StorageFullError(StorageError):
    """The storage has no room left (ENOSPC, quota). Not retried: a full disk does not empty itself
    within a retry's backoff, and failing at once tells the user why instead of stalling the job."""


# OSErrors that no retry fixes: full disk or quota, read-only file system, permissions.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_PERMANENT_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class ObjectNotFoundError(StorageError, KeyError):
    """The key names no object. Also a KeyError, so `except KeyError` reads naturally."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "object not found"


def validate_key(key: str, *, allow_empty: bool = False) -> str:
    """Return `key` unchanged if it is a safe relative object key, else raise ValueError naming why."""
    if not isinstance(key, str):
        raise ValueError(f"storage key must be a string, got {type(key).__name__}")
    if not key:
        if allow_empty:
            return key
        raise ValueError("storage key must not be empty")
    if "\x00" in key:
        raise ValueError(f"storage key {key!r}: contains a NUL byte")
    if "\\" in key:
        raise ValueError(f"storage key {key!r}: contains a backslash")
    if key.startswith("/"):
        raise ValueError(f"storage key {key!r}: must be relative (no leading '/')")
    parts = key.split("/")
    # A prefix may end in '/', so only its last part may be empty.
    body = parts[:-1] if allow_empty else parts
    for part in body:
        if part in ("", ".", ".."):
            raise ValueError(f"storage key {key!r}: empty, '.' or '..' path segment")
    if parts[-1] in (".", ".."):
        raise ValueError(f"storage key {key!r}: empty, '.' or '..' path segment")
    if parts[0] == _TMP_DIR:
        raise ValueError(f"storage key {key!r}: '{_TMP_DIR}' is reserved")
    return key


@runtime_checkable
class Storage(Protocol):
    """What the engine, the workers and the API need from object storage."""

    def put_file(self, key: str, path: Path, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        """Upload a local file; the object appears whole or not at all."""

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        """Store `data`; the object appears whole or not at all."""

    def get_bytes(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object (close it when done)."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def list(self, prefix: str) -> list[str]:
        """Sorted keys that start with `prefix` (a plain string prefix, recursive)."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; returns how many were deleted."""

    def presign_get(self, key: str, expires_s: int = 3600) -> str | None:
        """A time-limited GET URL, or None when the backend has no such thing (local)."""


class KeepAliveStorage:
    """`inner`, except that while a write runs `beat()` is called every `interval_s` (from a helper thread).

    Why: a running shard proves it is alive by heartbeats that come with generation progress. Blocked in
    storage — a slow upload, a connection retried during an outage — it would fall silent, and the
    reconciler would start a second copy and count the first as a crash (enough of those and a healthy
    shard is failed as poison). Every S3 call is bounded by the client timeouts, so this keeps a shard
    alive only for as long as one bounded call, never for a hang.
    """

    def __init__(self, inner: Storage, beat: Callable[[], None], interval_s: float):
        self.inner, self.beat, self.interval_s = inner, beat, interval_s

    def __getattr__(self, name: str) -> Any:  # reads and everything else: straight through
        return getattr(self.inner, name)

    def put_file(self, key: str, path: Path, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        with self._beating():
            self.inner.put_file(key, path, content_type)

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        with self._beating():
            self.inner.put_bytes(key, data, content_type)

    @contextmanager
    def _beating(self) -> Iterator[None]:
        done = threading.Event()

        def run() -> None:
            while not done.wait(self.interval_s):
                try:
                    self.beat()
                except Exception:  # a missed beat is no reason to abort the upload
                    log.warning("heartbeat during a storage call failed", exc_info=True)

        thread = threading.Thread(target=run, name="lf-storage-keepalive", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


class LocalStorage:
    """Objects as files under `root`. `local_path(key)` is public so the API can serve byte ranges."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / _TMP_DIR).mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def local_path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _write_atomic(self, key: str, fill: object) -> None:
        dest = self.local_path(key)
        tmp = self.root / _TMP_DIR / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as fh:
                if isinstance(fill, (bytes, bytearray, memoryview)):
                    fh.write(fill)
                else:
                    with open(fill, "rb") as src:  # type: ignore[call-overload]
                        shutil.copyfileobj(src, fh, length=1 << 20)
                fh.flush()
                os.fsync(fh.fileno())
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            raise StorageError(f"put {key}: {exc}") from exc
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise StorageFullError(f"storage full: no space left to write {key} "
                                       f"({os.strerror(exc.errno)})") from exc
            if exc.errno in _PERMANENT_ERRNOS:
                raise StorageError(f"put {key}: {exc}") from exc
            raise TransientStorageError(f"put {key}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)  # a write that failed half-way never leaves its bytes behind

    def put_file(self, key: str, path: Path, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        self._write_atomic(key, Path(path))

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        self._write_atomic(key, bytes(data))

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.local_path(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r}") from None

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def size(self, key: str) -> int:
        path = self.local_path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r}")
        return path.stat().st_size

    def _walk(self, prefix: str) -> Iterator[str]:
        validate_key(prefix, allow_empty=True)
        # Only walk the deepest directory the prefix pins down, not the whole root.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root and _TMP_DIR in dirnames:
                dirnames.remove(_TMP_DIR)
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    yield key

    def list(self, prefix: str) -> list[str]:
        return sorted(self._walk(prefix))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.local_path(key).unlink(missing_ok=True)
        self._prune_empty_dirs(prefix)
        return len(keys)

    def _prune_empty_dirs(self, prefix: str) -> None:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return
        for dirpath, _, _ in sorted(os.walk(start), key=lambda t: -len(t[0])):
            path = Path(dirpath)
            if path == self.root or path.name == _TMP_DIR:
                continue
            rel = path.relative_to(self.root).as_posix()
            if (rel + "/").startswith(prefix) or rel.startswith(prefix):
                try:
                    path.rmdir()
                except OSError:
                    pass  # not empty: holds objects outside the prefix

    def presign_get(self, key: str, expires_s: int = 3600) -> str | None:
        validate_key(key)
        return None


class S3Storage:
    """Objects in an S3 bucket (AWS, MinIO, moto) under an optional key prefix, via the `minio` SDK."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool = True,
        region: str | None = None,
        part_size: int = MULTIPART_PART_SIZE,
        connect_timeout_s: float = S3_CONNECT_TIMEOUT_S,
        read_timeout_s: float = S3_READ_TIMEOUT_S,
    ):
        from minio import Minio

        if not bucket:
            raise ValueError("S3 bucket name must not be empty")
        self.bucket = bucket
        self.prefix = validate_key(prefix.strip("/") + "/", allow_empty=True) if prefix.strip("/") else ""
        self.part_size = part_size
        endpoint = endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region,
                            http_client=_http_client(connect_timeout_s, read_timeout_s))

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    def _full(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run one SDK call, sorting its failures into permanent / transient / not found."""
        from minio.error import MinioException, S3Error, ServerError
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                raise ObjectNotFoundError(f"{what}: no such object") from exc
            if exc.code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"):
                raise TransientStorageError(f"{what}: {exc.code}: {exc.message}") from exc
            raise StorageError(f"{what}: {exc.code}: {exc.message}") from exc
        except ServerError as exc:  # 5xx without an S3 error body
            raise TransientStorageError(f"{what}: server error {exc.status_code}") from exc
        except (HTTPError, OSError) as exc:  # connection refused, reset, timeout
            raise TransientStorageError(f"{what}: {exc}") from exc
        except MinioException as exc:
            raise StorageError(f"{what}: {exc}") from exc

    def put_file(self, key: str, path: Path, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        full = self._full(key)
        self._call(f"put {key}", self.client.fput_object, self.bucket, full, str(path),
                   content_type=content_type, part_size=self.part_size)

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        full = self._full(key)
        self._call(f"put {key}", self.client.put_object, self.bucket, full, io.BytesIO(data), len(data),
                   content_type=content_type, part_size=self.part_size)

    def open(self, key: str) -> BinaryIO:
        response = self._call(f"get {key}", self.client.get_object, self.bucket, self._full(key))
        return io.BufferedReader(_ResponseStream(response), buffer_size=1 << 20)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        stat = self._call(f"stat {key}", self.client.stat_object, self.bucket, self._full(key))
        return int(stat.size)

    def list(self, prefix: str) -> list[str]:
        validate_key(prefix, allow_empty=True)
        full = self.prefix + prefix
        objects = self._call(
            f"list {prefix}", lambda: list(self.client.list_objects(self.bucket, prefix=full, recursive=True))
        )
        return sorted(o.object_name[len(self.prefix):] for o in objects if not o.is_dir)

    def delete_prefix(self, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject

        keys = self.list(prefix)
        if not keys:
            return 0
        errors = self._call(
            f"delete {prefix}",
            lambda: list(self.client.remove_objects(self.bucket, [DeleteObject(self.prefix + k) for k in keys])),
        )
        if errors:
            raise StorageError(f"delete {prefix}: {len(errors)} objects not deleted, first: {errors[0]}")
        return len(keys)

    def presign_get(self, key: str, expires_s: int = 3600) -> str | None:
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s: must be in 1..{MAX_PRESIGN_S}, got {expires_s}")
        return self._call(f"presign {key}", self.client.presigned_get_object, self.bucket, self._full(key),
                          expires=timedelta(seconds=expires_s))


def _http_client(connect_timeout_s: float, read_timeout_s: float):  # type: ignore[no-untyped-def]
    """The SDK's own urllib3 pool settings, with bounded timeouts and retries (see S3_CONNECT_TIMEOUT_S)."""
    import certifi
    import urllib3

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=S3_CLIENT_RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class _ResponseStream(io.RawIOBase):
    """A urllib3 response as a closable binary file that also releases the connection on close."""

    def __init__(self, response):  # type: ignore[no-untyped-def]
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        data = self._response.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def storage_from_url(url: str | Path) -> Storage:
    """`s3://bucket/prefix` → S3Storage configured from `LABELFORGE_S3_*` env; anything else → LocalStorage.

    Env: LABELFORGE_S3_ENDPOINT (host:port or URL; default s3.amazonaws.com), LABELFORGE_S3_ACCESS_KEY,
    LABELFORGE_S3_SECRET_KEY, LABELFORGE_S3_SECURE (default true; false for a plain-http MinIO/moto),
    LABELFORGE_S3_REGION (optional).
    """
    text = str(url)
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://"):].partition("/")
        endpoint = os.environ.get("LABELFORGE_S3_ENDPOINT", "s3.amazonaws.com")
        secure = _env_bool("LABELFORGE_S3_SECURE", not endpoint.startswith("http://"))
        return S3Storage(
            bucket,
            prefix,
            endpoint=endpoint,
            access_key=os.environ.get("LABELFORGE_S3_ACCESS_KEY"),
            secret_key=os.environ.get("LABELFORGE_S3_SECRET_KEY"),
            secure=secure,
            region=os.environ.get("LABELFORGE_S3_REGION") or None,
        )
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"storage url {text!r}: only s3://bucket/prefix or a local path are supported")
    return LocalStorage(text.removeprefix("file://"))
