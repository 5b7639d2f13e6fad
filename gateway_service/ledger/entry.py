"""One ledger row per admitted completion, built from the request's log record off the hot path.

Tokens are the provider's when it reported usage. When it did not (a stream cut early, an upstream
error, a client that went away) the row carries what the limiter settled instead, flagged
`estimated`: the prompt estimate plus an estimate of the streamed text when something was
streamed, else 0 (nothing came back). Cost: see `prices`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from gateway_service.ledger.prices import PriceTable
from gateway_service.limits.estimate import text_tokens
from gateway_service.request_log import RequestRecord


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One completion, as stored (`usage_records`)."""

    record_id: str
    """16 random hex characters: makes a retried batch write idempotent (the request id is
    the caller's to choose, so it need not be unique)."""
    request_id: str
    uid: str
    created_at: dt.datetime
    """When the request arrived (UTC); its date is the row's `day`."""
    stream: bool
    provider: str
    model: str
    """The model as the caller asked for it."""
    upstream_model: str
    """The model id as sent to the provider: what it bills, and what prices are keyed by."""
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool
    status: str
    """The gRPC status name the call ended with (OK, CANCELLED, UNAVAILABLE, ...)."""
    reason: str
    """The ErrorInfo reason when it failed (UPSTREAM_ERROR, ...), else empty."""
    byok: bool
    cost_usd: float | None
    cost_source: str | None
    """`provider` (the provider's own figure), `price_table`, or None (unknown)."""
    latency_ms: float

    @property
    def day(self) -> dt.date:
        return self.created_at.date()


def entry_from_record(record: RequestRecord, ended_at: float, prices: PriceTable) -> LedgerEntry:
    """The ledger row of a finished completion; `ended_at` is the epoch time it ended."""
    usage = record.usage
    if usage is not None:
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        total = usage.total_tokens or prompt + completion
        estimated = False
    else:
        # The same figures the limiter settled (Lease.settle).
        if record.streamed_characters:
            prompt, completion = record.prompt_estimate, text_tokens(record.streamed_characters)
        else:
            prompt = completion = 0
        total = prompt + completion
        estimated = True
    cost, source = prices.cost(record.provider, record.upstream_model, usage, prompt, completion)
    started = ended_at - record.latency_ms / 1000
    return LedgerEntry(
        record_id=os.urandom(8).hex(),
        request_id=record.request_id,
        uid=record.uid,
        created_at=dt.datetime.fromtimestamp(started, dt.UTC),
        stream=record.rpc == "StreamChatCompletion",
        provider=record.provider,
        model=record.model,
        upstream_model=record.upstream_model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        estimated=estimated,
        status=record.status,
        reason=record.reason,
        byok=record.byok,
        cost_usd=cost,
        cost_source=source,
        latency_ms=round(record.latency_ms, 3),
    )
