"""Prometheus metrics of one app (its own registry: several apps in a process, e.g. in
tests, do not mix their counts), served as text at ``GET /metrics``.

* ``fruitlens_requests_total{endpoint, status}``: HTTP requests answered;
* ``fruitlens_errors_total{kind}``: error replies by kind (``truncated``, ``too_many_bytes``…);
* ``fruitlens_request_duration_seconds{endpoint}``: latency histogram;
* ``fruitlens_batch_size``: images per inference call (micro-batching at work);
* ``fruitlens_inference_duration_seconds``: time of each inference call;
* ``fruitlens_images_total{outcome}``: images classified (``ok``) or refused (``error``);
* ``fruitlens_ready``: 1 once the model is loaded; ``fruitlens_queue_depth``: images waiting.
"""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["ENDPOINTS", "Metrics", "MetricsMiddleware"]

#: Paths counted under their own name; any other path is counted as ``other``.
ENDPOINTS = ("/", "/v1/predict", "/healthz", "/readyz", "/metrics")

_LATENCY_BUCKETS = (
    0.002,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


class Metrics:
    """The metrics of one app, in a fresh ``prometheus_client.CollectorRegistry``."""

    def __init__(self, queue_depth: Callable[[], float] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "fruitlens_requests",
            "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"],
            registry=reg,
        )
        self.errors = Counter(
            "fruitlens_errors", "Error replies, by error kind", ["kind"], registry=reg
        )
        self.latency = Histogram(
            "fruitlens_request_duration_seconds",
            "Time from request to response, by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            "fruitlens_batch_size",
            "Images per inference call (concurrent requests are micro-batched)",
            buckets=_BATCH_BUCKETS,
            registry=reg,
        )
        self.inference = Histogram(
            "fruitlens_inference_duration_seconds",
            "Duration of each inference call (decode + model, a whole batch)",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.images = Counter(
            "fruitlens_images", "Images classified or refused", ["outcome"], registry=reg
        )
        self.ready = Gauge("fruitlens_ready", "1 once the model is loaded", registry=reg)
        self.queue_depth = Gauge(
            "fruitlens_queue_depth", "Images waiting for an inference call", registry=reg
        )
        if queue_depth is not None:
            self.queue_depth.set_function(queue_depth)

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in ENDPOINTS else "other"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """``(Prometheus text, its content type)``."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP request in ``metrics``
    (``Starlette(middleware=[Middleware(MetricsMiddleware, metrics=m)])``)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe_request(scope.get("path", ""), status[0], elapsed)
