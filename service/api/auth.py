"""API keys: one key per tenant, stored only as a sha256 digest, checked in constant time.

Keys are 256-bit random tokens (`lf_…`), so a plain sha256 is enough (no slow KDF needed: there is
nothing to brute-force). The digest is looked up by its index, and the stored digest is compared again
with `hmac.compare_digest` so no string comparison of secrets ever short-circuits.

Every request is authenticated, and a database round trip per request (a session, a query, two
thread hops) cost more than a whole `/predict` inference. So `Authenticator` keeps the digests it has
verified against the database, with their tenant, for `KEY_CACHE_TTL_S` seconds per API process:
- a cached digest is still compared with `hmac.compare_digest` before it is accepted;
- only successes are cached, so a key created a moment ago works at once and a wrong key is always
  checked against the database;
- revoking a key (deleting its tenant row) takes effect within the TTL in every process: an entry is
  never served past its expiry, and the next request re-reads the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from worker.db import Tenant

KEY_PREFIX = "lf_"
_BEARER = "bearer "
KEY_CACHE_TTL_S = 5.0  # seconds a verified key is trusted without the database (revocation delay)
KEY_CACHE_SIZE = 4096  # entries; past it the cache is cleared (an attacker's wrong keys are never cached)


def hash_key(key: str) -> str:
    """Hex sha256 of an API key: what the `tenants.key_hash` column holds."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (43 url-safe characters after the prefix)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_tenant(session: Session, name: str, key: str | None = None) -> tuple[Tenant, str]:
    """Store a tenant whose key is `key` (or a new random one); returns (tenant, the plain key).

    The plain key exists only in the return value: show it once, it cannot be recovered.
    """
    key = key or new_key()
    tenant = Tenant(name=name, key_hash=hash_key(key))
    session.add(tenant)
    session.flush()
    return tenant, key


def ensure_tenant(session: Session, name: str, key: str) -> Tenant:
    """The tenant owning `key`, created as `name` if the key is new (keys provisioned by env)."""
    tenant = session.scalar(select(Tenant).where(Tenant.key_hash == hash_key(key)))
    return tenant if tenant is not None else create_tenant(session, name, key)[0]


def header_digest(authorization: str | None) -> str:
    """The key digest of an `Authorization: Bearer <key>` header, or 401 saying what is wrong with it."""
    if not authorization:
        raise _unauthorized("missing Authorization header; send 'Authorization: Bearer <API key>'")
    if not authorization.lower().startswith(_BEARER):
        raise _unauthorized("Authorization header must use the Bearer scheme")
    return hash_key(authorization[len(_BEARER):].strip())


def lookup(session: Session, digest: str) -> Tenant:
    """The tenant whose key has sha256 `digest`, or 401."""
    tenant = session.scalar(select(Tenant).where(Tenant.key_hash == digest))
    if tenant is None or not hmac.compare_digest(tenant.key_hash, digest):
        raise _unauthorized("invalid API key")
    return tenant


def authenticate(session: Session, authorization: str | None) -> Tenant:
    """Tenant for an `Authorization: Bearer <key>` header, or 401 saying what is wrong."""
    return lookup(session, header_digest(authorization))


class Authenticator:
    """`authenticate` with a per-process TTL cache of verified digests (see the module docstring)."""

    def __init__(self, session_factory: Callable[[], Session], ttl_s: float = KEY_CACHE_TTL_S,
                 max_entries: int = KEY_CACHE_SIZE) -> None:
        self.session_factory = session_factory
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Tenant]] = {}  # digest → (expiry on the monotonic clock, tenant)
        self._lock = threading.Lock()

    async def tenant(self, authorization: str | None) -> Tenant:
        """The header's tenant: from the cache while fresh, else from the database (off the event loop)."""
        digest = header_digest(authorization)
        cached = self._fresh(digest)
        if cached is not None:
            return cached
        tenant = await run_in_threadpool(self._load, digest)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self.ttl_s, tenant)
        return tenant

    def _fresh(self, digest: str) -> Tenant | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, tenant = entry
        if time.monotonic() >= expires:
            with self._lock:
                if self._entries.get(digest) is entry:
                    del self._entries[digest]
            return None
        return tenant if hmac.compare_digest(tenant.key_hash, digest) else None

    def _load(self, digest: str) -> Tenant:
        with self.session_factory() as session:
            tenant = lookup(session, digest)
            session.expunge(tenant)  # a plain, read-only copy shared by the requests that hit the cache
        return tenant


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})
