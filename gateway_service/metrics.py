"""Prometheus metrics of the gateway: requests, latency, tokens, streams in flight.

Labels are bounded: rpc, provider, gRPC status, and the model only for completions a provider
actually served. Never a user id, token or key.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway_service.request_log import RequestRecord
from rpc_common.auth import app_check_counter

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """The gateway's series, in their own registry (one per server, so tests stay isolated)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "native1api_gateway_requests",
            "Completions and model listings by RPC, provider and final gRPC status.",
            ["rpc", "provider", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "native1api_gateway_request_seconds",
            "Wall time of an RPC, upstream included.",
            ["rpc", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "native1api_gateway_tokens",
            "Tokens the upstream reported, by provider, model and kind (prompt/completion).",
            ["provider", "model", "kind"],
            registry=self.registry,
        )
        self.streams_in_flight = Gauge(
            "native1api_gateway_streams_in_flight",
            "Streaming completions currently open.",
            registry=self.registry,
        )

        # Admission control (SPEC §10). Tier names come from the limits file, so they are bounded.
        self.admissions = Counter(
            "native1api_gateway_admissions",
            "Completions admitted, by tier.",
            ["tier"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "native1api_gateway_admission_refusals",
            "Completions refused, by tier and limit (requests, tokens, concurrency, "
            "store_unavailable).",
            ["tier", "limit"],
            registry=self.registry,
        )
        self.unmetered_admissions = Counter(
            "native1api_gateway_admissions_unmetered",
            "Completions admitted without a limit check because the limiter store was down "
            "(LIMITS_ON_STORE_ERROR=allow).",
            ["tier"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "native1api_gateway_limiter_store_errors",
            "Limiter store failures by operation (admit, settle, renew, usage).",
            ["operation"],
            registry=self.registry,
        )
        self._admitted: dict[str, Counter] = {}
        # Firebase App Check (SPEC §11): verifications by result (valid, missing, invalid, ...).
        self.app_check = app_check_counter("gateway", self.registry)

    def admitted(self, tier: str) -> None:
        child = self._admitted.get(tier)
        if child is None:  # labels() costs a lock and a lookup: once per tier, not per request
            child = self._admitted[tier] = self.admissions.labels(tier)
        child.inc()

    def refused(self, tier: str, limit: str) -> None:
        self.refusals.labels(tier, limit).inc()

    def store_error(self, operation: str) -> None:
        self.store_errors.labels(operation).inc()

    def observe(self, record: RequestRecord) -> None:
        provider = record.provider or "none"
        self.requests.labels(record.rpc, provider, record.status).inc()
        self.latency.labels(record.rpc, provider).observe(record.latency_ms / 1000)
        usage = record.usage
        if usage is not None and record.status == "OK":
            self.tokens.labels(provider, record.model, "prompt").inc(usage.prompt_tokens)
            self.tokens.labels(provider, record.model, "completion").inc(usage.completion_tokens)
