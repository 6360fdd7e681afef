"""The API-key cache: verified keys skip the database for a while, revoked keys stop within the TTL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi import HTTPException
from sqlalchemy import delete

from service.api.auth import Authenticator, create_tenant
from worker.db import Tenant, get_sessionmaker, init_db, make_engine

TTL_S = 0.5


@pytest.fixture
def session_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/auth.db"
    init_db(make_engine(url))
    return get_sessionmaker(url)


def add_tenant(session_factory, name: str, key: str | None = None) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        tenant, key = create_tenant(session, name, key)
        session.commit()
        return tenant.id, key


def status_of(auth: Authenticator, header: str | None) -> int | str:
    """The tenant id the header authenticates as, or the HTTP status it is refused with."""
    try:
        return asyncio.run(auth.tenant(header)).id
    except HTTPException as exc:
        return exc.status_code


def test_revoked_key_stops_working_within_the_ttl(session_factory) -> None:  # type: ignore[no-untyped-def]
    tenant_id, key = add_tenant(session_factory, "alice")
    auth = Authenticator(session_factory, ttl_s=TTL_S)
    assert status_of(auth, f"Bearer {key}") == tenant_id
    revoked_at = time.monotonic()
    with session_factory() as session:
        session.execute(delete(Tenant).where(Tenant.id == tenant_id))
        session.commit()
    while time.monotonic() - revoked_at < TTL_S + 0.2:
        result = status_of(auth, f"Bearer {key}")
        if result == 401:
            break
        assert result == tenant_id  # still the cached verdict, never someone else's tenant
        time.sleep(0.05)
    assert status_of(auth, f"Bearer {key}") == 401
    assert time.monotonic() - revoked_at <= TTL_S + 0.2


def test_new_keys_work_at_once_and_wrong_keys_are_never_cached(session_factory) -> None:  # type: ignore[no-untyped-def]
    auth = Authenticator(session_factory, ttl_s=60)
    key = "lf_created-after-a-failed-try-0000000000"
    assert status_of(auth, f"Bearer {key}") == 401  # not yet a key …
    tenant_id, _ = add_tenant(session_factory, "bob", key)
    assert status_of(auth, f"Bearer {key}") == tenant_id  # … and accepted as soon as it is one
    assert status_of(auth, f"Bearer {key}x") == 401
    assert status_of(auth, f"Basic {key}") == 401
    assert status_of(auth, None) == 401


def test_cached_keys_keep_their_own_tenant(session_factory) -> None:  # type: ignore[no-untyped-def]
    auth = Authenticator(session_factory, ttl_s=60)
    a_id, a_key = add_tenant(session_factory, "a")
    b_id, b_key = add_tenant(session_factory, "b")
    for _ in range(3):  # the first round fills the cache, the later ones read it
        assert status_of(auth, f"Bearer {a_key}") == a_id
        assert status_of(auth, f"Bearer {b_key}") == b_id
