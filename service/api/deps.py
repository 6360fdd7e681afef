"""`Annotated` dependency aliases, so route signatures read like plain typed functions.

Everything comes from `app.state`, filled once by `create_app`: one settings object, one session
factory, one storage client and one bundle catalog per process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.auth import authenticate
from service.api.limits import Limits
from service.api.predictor import BundleCatalog
from worker.db import Job, Tenant
from worker.settings import Settings
from worker.storage import Storage


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_limits(request: Request) -> Limits:
    return request.app.state.limits


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; committed by the route when it changes something."""
    with request.app.state.session_factory() as session:
        yield session


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_catalog(request: Request) -> BundleCatalog:
    return request.app.state.catalog


SettingsDep = Annotated[Settings, Depends(get_settings)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CatalogDep = Annotated[BundleCatalog, Depends(get_catalog)]


def get_tenant(
    session: SessionDep,
    authorization: Annotated[str | None, Header(description="`Bearer <API key>`")] = None,
) -> Tenant:
    """The tenant whose API key is in the `Authorization` header (401 otherwise)."""
    return authenticate(session, authorization)


TenantDep = Annotated[Tenant, Depends(get_tenant)]


def tenant_job(session: Session, tenant: Tenant, job_id: str, kind: str) -> Job:
    """The tenant's job of `kind`, or 404 — another tenant's job is indistinguishable from none."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant.id, Job.kind == kind))
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {kind} job with id {job_id!r}")
    return job


def input_error(field: str, reason: str, where: str = "body", loc: list[str] | None = None) -> HTTPException:
    """A 422 in FastAPI's validation shape; `loc` points at the field (`labels.yaw_deg` → [where, "labels", "yaw_deg"]).

    The message repeats the field (`labels.yaw_deg: low > high`) so a client printing only `msg` still knows.
    """
    loc = loc or ([where, *field.split(".")] if field else [where])
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         [{"loc": loc, "msg": f"{field}: {reason}", "type": "value_error"}])
