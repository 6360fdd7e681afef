"""API keys: one key per tenant, stored only as a sha256 digest, checked in constant time.

Keys are 256-bit random tokens (`lf_…`), so a plain sha256 is enough (no slow KDF needed: there is
nothing to brute-force). The digest is looked up by its index, and the stored digest is compared again
with `hmac.compare_digest` so no string comparison of secrets ever short-circuits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.db import Tenant

KEY_PREFIX = "lf_"
_BEARER = "bearer "


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


def authenticate(session: Session, authorization: str | None) -> Tenant:
    """Tenant for an `Authorization: Bearer <key>` header, or 401 saying what is wrong."""
    if not authorization:
        raise _unauthorized("missing Authorization header; send 'Authorization: Bearer <API key>'")
    if not authorization.lower().startswith(_BEARER):
        raise _unauthorized("Authorization header must use the Bearer scheme")
    digest = hash_key(authorization[len(_BEARER):].strip())
    tenant = session.scalar(select(Tenant).where(Tenant.key_hash == digest))
    if tenant is None or not hmac.compare_digest(tenant.key_hash, digest):
        raise _unauthorized("invalid API key")
    return tenant


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})
