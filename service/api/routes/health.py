"""`/healthz`, `/readyz`, `/metrics`: liveness, dependency readiness and Prometheus figures (no auth)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.api import metrics
from service.api.schemas import Health, Readiness
from worker.settings import Settings
from worker.storage import Storage

router = APIRouter(tags=["health"])

PROBE_TIMEOUT_S = 2.0  # each dependency must answer within this, or the server is unready


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """The process is up and serving requests (it says nothing about its dependencies)."""
    return Health()


@router.get("/readyz", response_model=Readiness, summary="Readiness",
            responses={503: {"model": Readiness, "description": "A dependency is unreachable"}})
def readyz(request: Request) -> JSONResponse:
    """Database, broker and storage reachable: 200, else 503 naming the one that failed."""
    state = request.app.state
    checks = {
        "database": _check(lambda: _ping_db(state.session_factory)),
        "broker": _check(lambda: _ping_broker(state.settings)),
        "storage": _check(lambda: _ping_storage(state.storage)),
    }
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ok" if ready else "unready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=status.HTTP_200_OK if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}})
async def get_metrics(request: Request) -> Response:
    """Requests, latencies, jobs by status, samples generated, queue depth and redeliveries."""
    body, content_type = await run_in_threadpool(metrics.render, request.app.state.metrics)
    return Response(body, media_type=content_type)


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # any failure is "unready", reported with its reason
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


def _ping_db(session_factory: Callable[[], Session]) -> None:
    with session_factory() as session:
        session.execute(text("SELECT 1"))


def _ping_broker(settings: Settings) -> None:
    from kombu import Connection

    with Connection(settings.broker_url, transport_options=settings.broker_transport_options(),
                    connect_timeout=PROBE_TIMEOUT_S) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT_S)
        if conn.transport_cls == "redis" or settings.broker_url.startswith("redis"):
            conn.default_channel.client.ping()


def _ping_storage(storage: Storage) -> None:
    storage.exists("readyz-probe")  # a HEAD on S3, a stat locally; raises when unreachable
