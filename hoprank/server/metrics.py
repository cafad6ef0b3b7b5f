"""Prometheus metrics: request counts by route and status, latency, in-flight, queued,
running, rejected and cancelled requests, and the torch worker's jobs.

Cancellation is counted twice, at both ends: ``hoprank_requests_cancelled_total{reason}``
(``timeout``, ``disconnect``, ``cancelled``) with ``hoprank_requests_abandoned_seconds_total``
(how long those requests had been running when they were given up), and, for in-process
engines, ``hoprank_engine_abandoned_seconds_total`` (worker time spent on model calls
after their caller had gone: at most one forward pass or one generated token each) with
``hoprank_engine_jobs_dropped_total`` (calls dropped before they started) and
``hoprank_engine_jobs_stopped_total`` (calls stopped while running). The engine
figures are those of the process's default torch worker
(:func:`~hoprank.llm.runtime.worker.default_worker`), the one every engine the service
loads runs on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hoprank.llm.runtime.worker import TorchWorker, default_worker

__all__ = ["Metrics", "MetricsMiddleware"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The service's metrics in their own registry (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hoprank_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hoprank_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "hoprank_http_requests_in_flight", "HTTP requests being served", registry=self.registry
        )
        self.queued = Gauge(
            "hoprank_requests_queued", "model requests waiting for a running slot", registry=self.registry
        )
        self.rejected = Counter(
            "hoprank_requests_rejected",
            "requests refused because the server was full",
            registry=self.registry,
        )
        self.running = Gauge(
            "hoprank_requests_running", "model requests holding a running slot", registry=self.registry
        )
        self.cancelled = Counter(
            "hoprank_requests_cancelled",
            "model requests given up before they finished, by reason (timeout, disconnect, cancelled)",
            ["reason"],
            registry=self.registry,
        )
        self.abandoned_seconds = Counter(
            "hoprank_requests_abandoned_seconds",
            "seconds cancelled requests had been running (in a slot) when they were given up",
            registry=self.registry,
        )
        self.registry.register(_WorkerCollector(default_worker()))
        self.documents = Counter(
            "hoprank_rerank_documents", "documents reranked, by ranker", ["ranker"], registry=self.registry
        )
        self.tokens = Counter(
            "hoprank_llm_tokens", "LLM tokens used, by kind", ["kind"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _WorkerCollector(Collector):
    """A torch worker's counters (:meth:`hoprank.llm.runtime.worker.TorchWorker.stats`)."""

    def __init__(self, worker: TorchWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        s = self.worker.stats()
        yield GaugeMetricFamily(
            "hoprank_engine_jobs_queued",
            "in-process model calls waiting for the torch worker",
            value=s.pending,
        )
        yield GaugeMetricFamily(
            "hoprank_engine_jobs_running",
            "in-process model calls running on the torch worker",
            value=s.running,
        )
        for name, doc, value in (
            ("dropped", "model calls dropped before they started (their caller had gone)", s.dropped),
            ("stopped", "model calls stopped while running (their caller had gone)", s.stopped),
            ("rejected", "model calls refused because the worker queue was full", s.rejected),
            ("completed", "model calls completed", s.completed),
        ):
            yield CounterMetricFamily(f"hoprank_engine_jobs_{name}", doc, value=value)
        yield CounterMetricFamily(
            "hoprank_engine_abandoned_seconds",
            "worker seconds spent on model calls after their caller had gone",
            value=s.abandoned_seconds,
        )


class MetricsMiddleware:
    """Outermost ASGI middleware: counts every HTTP response, including 401/413/429."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = (route.path if isinstance(route, Route | Mount) else "") or "<unmatched>"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - t0)
