"""Prometheus metrics that stay correct with several API processes.

Two kinds of figures, two mechanisms:
- per-request counters and latency histograms are process-local, so with `PROMETHEUS_MULTIPROC_DIR`
  set (uvicorn `--workers N`, gunicorn) prometheus-client writes them to shared files and
  `MultiProcessCollector` sums them at scrape time;
- job figures (jobs by status, samples generated, queue depth, redeliveries) are *read from the
  database at scrape time*: the job record is the source of truth, so every process reports the same
  numbers and nothing double-counts. Redis queue lengths are read from the broker the same way.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.db import JOB_ACTIVE, SHARD_PENDING, SHARD_RUNNING, Job, ShardTask

log = logging.getLogger(__name__)

# Request metrics live in their own registry; in multiprocess mode their values go to files instead.
_REQUEST_REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "labelforge_http_requests", "HTTP requests served", ["method", "route", "status"], registry=_REQUEST_REGISTRY
)
LATENCY = Histogram(
    "labelforge_http_request_duration_seconds", "Time to serve a request, seconds", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=_REQUEST_REGISTRY,
)
PREDICT_IMAGES = Counter("labelforge_predict_images", "Images labeled by /predict", registry=_REQUEST_REGISTRY)
PREDICT_BATCH = Histogram(
    "labelforge_predict_batch_size", "Images per micro-batch run by the in-process predictor",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=_REQUEST_REGISTRY,
)

QueueDepthFn = Callable[[], dict[str, int]]


class RequestMetricsMiddleware:
    """Counts requests and times them, labelled by route *template* (bounded label cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], route, str(status_code)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)


class JobMetricsCollector(Collector):
    """Job figures computed from the database (and broker) each time Prometheus scrapes."""

    def __init__(self, session_factory: Callable[[], Session], queue_depth: QueueDepthFn | None = None) -> None:
        self.session_factory = session_factory
        self.queue_depth = queue_depth

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("labelforge_jobs", "Jobs on record by kind and status", labels=["kind", "status"])
        samples = GaugeMetricFamily(
            "labelforge_samples_generated", "Samples written by jobs on record (dataset and labeling)", labels=["kind"]
        )
        shards = GaugeMetricFamily(
            "labelforge_shards_waiting", "Shards of active jobs not yet stored (the work queue, from the DB)",
            labels=["status"],
        )
        redeliveries = GaugeMetricFamily(
            "labelforge_shard_redeliveries", "Deliveries of shards beyond their first (crash/redelivery count)"
        )
        with self.session_factory() as session:
            for kind, status, n in session.execute(
                select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
            ):
                jobs.add_metric([kind, status], n)
            for kind, n in session.execute(select(Job.kind, func.coalesce(func.sum(Job.done_samples), 0))
                                           .group_by(Job.kind)):
                samples.add_metric([kind], n)
            waiting = dict(session.execute(
                select(ShardTask.status, func.count()).join(Job)
                .where(Job.status.in_(JOB_ACTIVE), ShardTask.status.in_((SHARD_PENDING, SHARD_RUNNING)))
                .group_by(ShardTask.status)
            ).tuples().all())
            redelivered = session.scalar(
                select(func.coalesce(func.sum(ShardTask.deliveries - 1), 0)).where(ShardTask.deliveries > 1)
            )
        for status in (SHARD_PENDING, SHARD_RUNNING):
            shards.add_metric([status], waiting.get(status, 0))
        redeliveries.add_metric([], redelivered or 0)
        yield from (jobs, samples, shards, redeliveries)
        if self.queue_depth is not None:
            depth = GaugeMetricFamily("labelforge_broker_queue_depth", "Messages waiting in the broker",
                                      labels=["queue"])
            try:
                for queue, n in self.queue_depth().items():
                    depth.add_metric([queue], n)
            except Exception as exc:  # a scrape must not fail because the broker is down; /readyz says so
                log.warning("broker queue depth unavailable: %s", exc)
            yield depth


def redis_queue_depth(broker_url: str, queues: tuple[str, ...] = ("gpu", "default")) -> QueueDepthFn | None:
    """LLEN of each Celery queue when the broker is Redis (kombu keeps a queue as one list); else None."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=1, socket_connect_timeout=1)
    return lambda: {q: int(client.llen(q)) for q in queues}


def render(collector: JobMetricsCollector) -> tuple[bytes, str]:
    """The exposition text for one scrape: request metrics (per-process or summed) + job figures."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_REQUEST_REGISTRY)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
