"""Prometheus metrics of the bridge, in a registry owned by one app (tests build many apps).

Label values are bounded by construction: route templates (never raw paths), a fixed set of
methods, status codes, provider names, and model ids only from completions a provider served,
capped in number. No user id, token or key ever becomes a label.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from native1api.gateway.v1 import chat_pb2

UNMATCHED_ROUTE: Final = "unmatched"
OTHER: Final = "other"
MAX_MODEL_LABELS: Final = 200
_MAX_MODEL_LENGTH: Final = 128
_METHODS: Final = frozenset({"GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH"})
_LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
)  # fmt: skip
_FIRST_CHUNK_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip


class BridgeMetrics:
    """The bridge's series. Hot-path methods cache label children to stay cheap."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "native1api_bridge_requests",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "native1api_bridge_request_duration_seconds",
            "HTTP request latency (whole stream for SSE) by route template, method and status.",
            ("route", "method", "status"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._tokens = Counter(
            "native1api_bridge_upstream_tokens",
            "Tokens the providers reported, by provider, model and kind (prompt or completion).",
            ("provider", "model", "kind"),
            registry=self.registry,
        )
        self.streams_in_flight = Gauge(
            "native1api_bridge_streams_in_flight",
            "SSE chat streams currently open.",
            registry=self.registry,
        )
        self._first_chunk = Histogram(
            "native1api_bridge_stream_first_chunk_seconds",
            "Time from receiving a streaming request to the first chunk from the gateway.",
            ("provider",),
            buckets=_FIRST_CHUNK_BUCKETS,
            registry=self.registry,
        )
        self.connections_open = Gauge(
            "native1api_bridge_http_connections",
            "Client HTTP connections open now (refused ones are not counted).",
            registry=self.registry,
        )
        self._connections_refused = Counter(
            "native1api_bridge_http_connections_refused",
            "Connections the HTTP edge closed before or instead of serving a request, by reason "
            "(header_too_large, header_timeout, body_timeout, too_many_connections, invalid_http).",
            ("reason",),
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._models: set[str] = set()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = OTHER  # any token is a valid HTTP method; keep the label set fixed
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            labels = (route, method, str(status))
            children = (self._requests.labels(*labels), self._latency.labels(*labels))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def connection_refused(self, reason: str) -> None:
        """One connection closed by an edge limit; `reason` is one of a fixed few."""
        self._connections_refused.labels(reason).inc()

    def observe_first_chunk(self, provider: str, seconds: float) -> None:
        self._first_chunk.labels(provider).observe(seconds)

    def record_usage(self, provider: str, model: str, usage: chat_pb2.Usage) -> None:
        """Count the tokens of one served completion."""
        label = self._model_label(model)
        if usage.prompt_tokens > 0:
            self._tokens.labels(provider, label, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens > 0:
            self._tokens.labels(provider, label, "completion").inc(usage.completion_tokens)

    def _model_label(self, model: str) -> str:
        # Only models a provider actually served get here, but BYOK providers accept any id
        # their catalog has: cap the distinct values so a caller cannot grow the registry.
        if model in self._models:
            return model
        if len(model) > _MAX_MODEL_LENGTH or len(self._models) >= MAX_MODEL_LABELS:
            return OTHER
        self._models.add(model)
        return model

    def render(self) -> bytes:
        return generate_latest(self.registry)
