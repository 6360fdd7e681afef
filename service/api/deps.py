"""`Annotated` dependency aliases, so route signatures read like plain typed functions.

Everything comes from `app.state`, filled once by `create_app`: one settings object, one session
factory, one storage client and one bundle catalog per process. The dependencies that only read
`app.state` are `async def`: FastAPI runs a plain `def` dependency in its thread pool, and those hops
were a measurable part of a `/predict` call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.auth import Authenticator
from service.api.limits import Limits
from service.api.predictor import BundleCatalog
from worker.db import Job, Tenant
from worker.settings import Settings
from worker.storage import Storage


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_limits(request: Request) -> Limits:
    return request.app.state.limits


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; committed by the route when it changes something."""
    with request.app.state.session_factory() as session:
        yield session


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


async def get_catalog(request: Request) -> BundleCatalog:
    return request.app.state.catalog


JOB_ID = re.compile(r"[0-9a-f]{32}")  # worker.db.new_id: uuid4 hex

SettingsDep = Annotated[Settings, Depends(get_settings)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CatalogDep = Annotated[BundleCatalog, Depends(get_catalog)]


async def get_tenant(
    request: Request,
    authorization: Annotated[str | None, Header(description="`Bearer <API key>`")] = None,
) -> Tenant:
    """The tenant whose API key is in the `Authorization` header (401 otherwise); see `Authenticator`."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.tenant(authorization)


TenantDep = Annotated[Tenant, Depends(get_tenant)]


def tenant_job(session: Session, tenant: Tenant, job_id: str, kind: str) -> Job:
    """The tenant's job of `kind`, or 404 — another tenant's job is indistinguishable from none.

    An id that is not 32 hex characters names no job and is not sent to the database (PostgreSQL
    refuses NUL bytes in text with an error, not a miss); the message echoes at most 40 characters.
    """
    job = None
    if JOB_ID.fullmatch(job_id):
        job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant.id, Job.kind == kind))
    if job is None:
        shown = job_id if len(job_id) <= 40 else job_id[:40] + "…"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {kind} job with id {shown!r}")
    return job


def input_error(field: str, reason: str, where: str = "body", loc: list[str] | None = None) -> HTTPException:
    """A 422 in FastAPI's validation shape; `loc` points at the field (`labels.yaw_deg` → [where, "labels", "yaw_deg"]).

    The message repeats the field (`labels.yaw_deg: low > high`) so a client printing only `msg` still knows.
    """
    loc = loc or ([where, *field.split(".")] if field else [where])
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         [{"loc": loc, "msg": f"{field}: {reason}", "type": "value_error"}])
