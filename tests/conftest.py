"""Shared fixtures: tiny, seeded, untrained bundles (exported once per session, a few seconds each).

`tiny_bundle_dir` sits alone in its own bundles folder, so `tiny_bundle_dir.parent` can be passed as a
bundles directory (`--bundles-dir`, `LABELFORGE_BUNDLES_DIR`) and `tiny_bundle_dir.name` as a spec's bundle.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # the machine's PostgreSQL (trust auth)
TINY_NET = {"image_size": 16, "nz": 4, "nh": 8, "c": 4, "hidden": 16}  # NetConfig overrides: ~10k params


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained digits bundle (16×16, 1 channel, 16-dim labels with a categorical field)."""
    from models.export import export_placeholder

    return export_placeholder("digits", tmp_path_factory.mktemp("bundles") / "tiny-digits", seed=0, **TINY_NET)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_dir: Path):  # type: ignore[no-untyped-def]
    from models.runtime import Bundle

    return Bundle.load(tiny_bundle_dir, engine="onnx", device="cpu")


@pytest.fixture(scope="session")
def tiny_faces_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained faces-m bundle (16×16 RGB, the 400-dim Basel layout)."""
    from models.export import export_placeholder

    return export_placeholder("faces-m", tmp_path_factory.mktemp("bundles") / "tiny-faces", seed=0, **TINY_NET)


@pytest.fixture(scope="session")
def tiny_faces_bundle(tiny_faces_bundle_dir: Path):  # type: ignore[no-untyped-def]
    from models.runtime import Bundle

    return Bundle.load(tiny_faces_bundle_dir, engine="torchscript", device="cpu")


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[Callable[[str], str]]:
    """`make(prefix)` → a PostgreSQL URL whose search_path is a fresh schema with the tables created
    (before any API or worker starts, so they never race on CREATE TABLE); all dropped at session end."""
    from worker.db import init_db, make_engine

    admin = make_engine(PG_URL)
    schemas: list[str] = []

    def make(prefix: str) -> str:
        schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        except Exception as exc:  # pragma: no cover - machine without PostgreSQL
            pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {exc}")
        schemas.append(schema)
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        init_db(make_engine(url))
        return url

    yield make
    with admin.begin() as conn:
        for schema in schemas:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()
