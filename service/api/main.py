"""The FastAPI application factory: settings → database, storage, bundles, limits, metrics, routes.

`create_app(settings)` builds everything from one `Settings` object (the environment by default), so
the embedded server, uvicorn replicas in docker-compose and the tests all run the same code:
`uvicorn --factory service.api.main:create_app`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from service.api.auth import Authenticator, ensure_tenant
from service.api.limits import BodySizeLimitMiddleware, Limits
from service.api.metrics import JobMetricsCollector, RequestMetricsMiddleware, redis_queue_depth
from service.api.predictor import BundleCatalog
from service.api.routes import datasets, health, labeling, models, predict, preview, render, spec_schema
from service.web import mount_console
from worker.db import get_engine, get_sessionmaker, init_db
from worker.resources import get_storage
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Synthetic labeled datasets from RenderBEGAN bundles, and labels for real images.

Authenticate every call except `/healthz`, `/readyz` and `/metrics` with `Authorization: Bearer <API key>`.
`POST /datasets` queues a dataset (202); poll `GET /datasets/{id}`, then download its WebDataset
shards from `GET /datasets/{id}/shards`. `POST /predict` reads labels out of photos.
"""

# `field: reason` at the start of a model-level validation message names a field deeper than `loc`.
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*(?:\[[0-9]+\])?(?:\.[a-z0-9_\[\]]+)*): ")
MAX_ECHO = 80  # characters of a client's own input repeated in an error (a 5 kB key is not worth echoing)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve app; `settings` defaults to the `LABELFORGE_*` environment."""
    settings = settings or get_settings()
    limits = Limits.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        _init_db_tolerating_races(settings.database_url)
        app.state.session_factory = get_sessionmaker(settings.database_url)
        app.state.authenticator = Authenticator(app.state.session_factory)
        with app.state.session_factory() as session:  # keys provisioned by env become tenants
            for i, key in enumerate(settings.api_keys):
                ensure_tenant(session, f"key-{i}", key.get_secret_value())
            session.commit()
        app.state.storage = get_storage(settings)
        app.state.catalog = BundleCatalog(settings)
        app.state.metrics = JobMetricsCollector(app.state.session_factory, redis_queue_depth(settings.broker_url))
        yield
        app.state.catalog.close()

    app = FastAPI(
        title="labelforge",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={401: {"description": "Missing or invalid API key"}},
    )
    app.state.settings = settings
    app.state.limits = limits
    for router in (datasets.router, labeling.router, predict.router, models.router, health.router,
                   preview.router, render.router, spec_schema.router):
        app.include_router(router)
    mount_console(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    def limit_for(scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and scope["path"].rstrip("/") in ("/datasets", "/preview", "/render"):
            return limits.max_spec_bytes, "max_spec_bytes"
        return limits.max_upload_bytes, "max_upload_mb"

    app.add_middleware(BodySizeLimitMiddleware, limit_for=limit_for)
    app.add_middleware(RequestMetricsMiddleware)
    return app


def _init_db_tolerating_races(url: str) -> None:
    """Create missing tables; when API replicas and workers start together on a fresh PostgreSQL, one
    of two concurrent `CREATE TABLE`s fails on the catalog's unique index, and a second pass then
    finds the tables in place."""
    try:
        init_db(get_engine(url))
    except DBAPIError:
        log.info("tables were being created concurrently; checking again")
        time.sleep(0.5)
        init_db(get_engine(url))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape, with `loc` extended by the field a model-level message names.

    A spec error such as `shard_size: 2000 is larger than count (10)` is raised by a model validator,
    so pydantic reports it at the model's location; moving the named field into `loc` lets clients
    point at the right input without parsing the message. A JSON syntax error also says what the
    parser expected, and overlong keys the client sent are clipped so the answer stays readable.
    """
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = [p for i, p in enumerate(err["loc"]) if i == 0 or p != err["loc"][i - 1]]  # union tags repeat
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        match = _FIELD_PREFIX.match(msg)
        if match and err.get("type") == "value_error":
            loc = [*loc, *match.group(1).split(".")]
        if err.get("type") == "json_invalid" and (err.get("ctx") or {}).get("error"):
            msg = f"{msg}: {err['ctx']['error']}"
        errors.append({"loc": [_clip(p) for p in loc], "msg": _clip(msg, 4 * MAX_ECHO),
                       "type": err.get("type")})
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                        content=jsonable_encoder({"detail": errors}))


def _clip(value: Any, limit: int = MAX_ECHO) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}… ({len(value)} characters)"
    return value


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's HTTP error answers, with two corrections.

    A JSON body it cannot even decode (not UTF-8, nested deeper than the parser's recursion limit)
    gets a bare 400 "There was an error parsing the body"; say which it was, as the 422 `json_invalid`
    a syntax error gets. A 405 lists only the methods of the first route on the path (`/datasets`
    has a GET route and a POST route); `Allow` must list every method the path supports.
    """
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code == status.HTTP_400_BAD_REQUEST and isinstance(cause, (ValueError, RecursionError)):
        reason = ("not UTF-8 text" if isinstance(cause, UnicodeDecodeError)
                  else "JSON nested too deeply" if isinstance(cause, RecursionError) else _clip(str(cause)))
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                            content={"detail": [{"loc": ["body"], "msg": f"body: {reason}", "type": "json_invalid"}]})
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        methods = sorted({m for route in request.app.routes if route.matches(request.scope)[0] == Match.PARTIAL
                          for m in getattr(route, "methods", None) or ()})
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(methods)}
    return await http_exception_handler(request, exc)
