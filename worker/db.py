"""Job records: the durable source of truth for tenants, jobs and per-shard work (SQLAlchemy 2).

The broker only carries hints ("run shard 3 of job X"); whether a shard is stored, how often it was
delivered and whether its job is cancelled lives here, so a lost or duplicated message never loses
or duplicates work. Works on SQLite (embedded default) and PostgreSQL (distributed); `init_db`
creates the tables (no migrations yet).

Contract for the API (H7) and the workers:
    get_engine(url=None) -> Engine              # cached per URL; url defaults to settings.database_url
    get_sessionmaker(url=None) -> sessionmaker   # sessions with expire_on_commit=False
    session_scope(url=None) -> ContextManager[Session]   # commit on success, rollback on error
    init_db(engine) -> None                      # create_all
    Tenant, Job, ShardTask; JOB_* / SHARD_* status constants; utcnow()
For a per-test PostgreSQL schema put it in the URL: `...?options=-csearch_path%3Dmy_schema`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
JOB_STATUSES = (JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED)
JOB_ACTIVE = (JOB_QUEUED, JOB_RUNNING)
SHARD_PENDING, SHARD_RUNNING, SHARD_STORED, SHARD_FAILED = "pending", "running", "stored", "failed"
KIND_DATASET, KIND_LABELING = "dataset", "labeling"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """Job and tenant ids: 32 hex chars, unguessable (uuid4)."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops tzinfo; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored; use worker.db.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """One API key = one tenant; only the key's sha256 is stored."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    """A dataset-generation or labeling job. `prefix` is its storage folder (`tenants/{t}/jobs/{id}/`)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # KIND_DATASET | KIND_LABELING
    name: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # DatasetSpec JSON, or the labeling job's inputs
    bundle: Mapped[str] = mapped_column(String(200))  # bundle name (folder under bundles_dir)
    bundle_sha: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default=JOB_QUEUED, index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    total_samples: Mapped[int] = mapped_column(Integer, default=0)
    done_samples: Mapped[int] = mapped_column(Integer, default=0)
    total_shards: Mapped[int] = mapped_column(Integer, default=0)
    done_shards: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finalize_enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    prefix: Mapped[str] = mapped_column(String(300))

    shards: Mapped[list[ShardTask]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True, order_by="ShardTask.shard"
    )

    __table_args__ = (Index("ix_jobs_tenant_created", "tenant_id", "created_at"),)


class ShardTask(Base):
    """One shard of a job: the unit a Celery task runs.

    `deliveries` counts task starts; `attempts` counts starts that ended in a scheduled retry after a
    transient storage error. A start that ended neither stored, failed nor retried crashed the worker,
    so `deliveries - attempts` is the crash count the poison limit is checked against.
    `task_id` is the id of the one message currently allowed to run this shard; older messages are stale.
    """

    __tablename__ = "shard_tasks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=SHARD_PENDING, index=True)
    expected_samples: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(64), default=None)
    owner: Mapped[str | None] = mapped_column(String(200), default=None)  # "host:pid" of the running process
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    key: Mapped[str | None] = mapped_column(String(400), default=None)  # storage key of the stored shard
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)

    job: Mapped[Job] = relationship(back_populates="shards")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL + busy timeout let the API and several worker processes share one SQLite file."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets its folder created and multi-process friendly pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _default_url() -> str:
    from worker.settings import get_settings

    return get_settings().database_url


_ENGINES: dict[str, Engine] = {}


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for `url` (default: settings.database_url), created on first use."""
    url = url or _default_url()
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def init_db(engine: Engine | None = None) -> None:
    """Create missing tables (idempotent; safe to call from every process at start)."""
    Base.metadata.create_all(engine or get_engine())


def dispose_engines() -> None:
    """Forget pooled connections inherited through fork without closing the parent's sockets.

    Celery prefork children call this at start; otherwise two processes would talk over one socket.
    """
    for engine in _ENGINES.values():
        engine.dispose(close=False)
