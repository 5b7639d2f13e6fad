"""Admission control (SPEC §10): every completion is admitted against its caller's tier first.

`Admission.admit` runs after routing (it needs to know whether the platform account pays) and
before any upstream call. It returns a `Lease`, whose `settle` frees the concurrency slot and
replaces the token reserve by what was spent; the servicer calls it on every way a call ends.
While a completion runs, its lease is renewed every `LEASE_RENEW_SECONDS`, so a lease whose
gateway died expires on its own (`LEASE_TTL_MS`).

Settlement runs after the response is on its way, off the request's path (it is one more store
round trip). Until it has reached the store, the ended lease is handed to this user's next
admission to remove first, so a client that fires its next request the moment the last one
ended is never refused for the slot it just gave back; and GET usage waits for the user's pending
settlements, so what it reports includes every completion that has ended.

A refusal is `RESOURCE_EXHAUSTED` with ErrorInfo reason `RATE_LIMITED` (metadata `limit`,
`retry_after`, `tier`) and a `google.rpc.RetryInfo`. An admitted completion carries the
caller's state as `x-ratelimit-*` initial metadata, which the bridge copies into the HTTP head.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Final, Literal

import grpc

from gateway_service.errors import RATE_LIMITED, RATE_LIMITER_UNAVAILABLE
from gateway_service.limits.durations import openai_duration
from gateway_service.limits.estimate import prompt_tokens, text_tokens
from gateway_service.limits.store import (
    LEASE_RENEW_SECONDS,
    MINUTE_MS,
    Admit,
    Decision,
    LimitKind,
    LimitStore,
    Quota,
    Settle,
    StoreUnavailable,
)
from gateway_service.limits.tiers import Tier, TierTable
from gateway_service.metrics import GatewayMetrics
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from rpc_common.auth import Caller
from rpc_common.status import RpcError

_LOGGER: Final = logging.getLogger(__name__)

StorePolicy = Literal["deny", "allow"]
_DAY_MS: Final = 86_400_000
_LOG_EVERY_SECONDS: Final = 60.0


def user_key(uid: str) -> str:
    """The user's key in the limiter store: a hash, so Redis never holds the uid."""
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()[:32]


class Lease:
    """One admitted completion. `settle` is idempotent and never raises."""

    __slots__ = (
        "_admission",
        "_settled",
        "byok",
        "day",
        "lease_id",
        "metadata",
        "prompt_estimate",
        "provider",
        "reserve",
        "user",
    )

    def __init__(
        self,
        admission: Admission | None,
        *,
        user: str = "",
        lease_id: str = "",
        day: str = "",
        provider: str = "",
        byok: bool = False,
        reserve: int = 0,
        prompt_estimate: int = 0,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._admission = admission
        self._settled = admission is None
        self.user = user
        self.lease_id = lease_id
        self.day = day
        self.provider = provider
        self.byok = byok
        self.reserve = reserve
        self.prompt_estimate = prompt_estimate
        self.metadata = metadata

    def settle(self, usage: chat_pb2.Usage | None, streamed_characters: int = 0) -> None:
        """Free the slot and count what was spent: the provider's usage when it reported one,
        else (a stream cut short) the prompt estimate plus an estimate of what was streamed,
        else (nothing came back) nothing. Returns at once; the store is updated in the
        background (`Admission.release`)."""
        if self._settled or self._admission is None:
            return
        self._settled = True
        if usage is not None:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
        elif streamed_characters:
            prompt, completion = self.prompt_estimate, text_tokens(streamed_characters)
        else:
            prompt = completion = 0
        settle = Settle(
            user=self.user,
            day=self.day,
            lease=self.lease_id,
            provider=self.provider,
            reserve=self.reserve,
            spent=0 if self.byok else prompt + completion,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
        self._admission.release(self, settle)


UNMETERED: Final = Lease(None)


class Admission:
    """Admits completions against tiers, in a store shared by every replica (or in process)."""

    def __init__(
        self,
        tiers: TierTable,
        store: LimitStore,
        *,
        metrics: GatewayMetrics,
        max_tokens_for: Callable[[chat_pb2.ChatCompletionRequest], int],
        on_store_error: StorePolicy = "deny",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tiers = tiers
        self._store = store
        self._metrics = metrics
        self._max_tokens_for = max_tokens_for
        self._on_store_error = on_store_error
        self._clock = clock
        self._live: dict[str, Lease] = {}
        self._renewer: asyncio.Task[None] | None = None
        # user -> {lease id: its settlement in flight}; emptied as settlements land.
        self._settling: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._last_logged: dict[str, float] = {}
        self._day = ("", 0)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start renewing the leases of running completions (call on the serving loop)."""
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self.settled()
        await self._store.aclose()

    async def settled(self) -> None:
        """Wait until every settlement started so far has reached the store."""
        pending = [task for tasks in self._settling.values() for task in tasks.values()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- admission -------------------------------------------------------------------------

    async def admit(
        self,
        caller: Caller,
        request: chat_pb2.ChatCompletionRequest,
        *,
        provider: str,
        byok: bool,
    ) -> Lease:
        """Admit one completion or raise the refusal (`RpcError`)."""
        tier = self.tiers.for_claims(caller.claims)
        now_ms = int(self._clock() * 1000)
        day, day_end = self._utc_day(now_ms)
        prompt_estimate = prompt_tokens(request)
        # BYOK requests do not spend the platform's tokens (the user's key pays for them).
        reserve = 0 if byok else prompt_estimate + self._max_tokens_for(request)
        user = user_key(caller.uid)
        settling = self._settling.get(user)
        admit = Admit(
            user=user,
            quota=_quota(tier),
            now_ms=now_ms,
            day=day,
            day_end_ms=day_end,
            reserve=reserve,
            provider=provider,
            lease=os.urandom(9).hex(),
            released=tuple(settling) if settling else (),
        )
        try:
            decision = await self._store.admit(admit)
        except StoreUnavailable as exc:
            return self._store_failed(tier, exc)
        if not decision.admitted:
            self._metrics.refused(tier.name, decision.limit or "requests")
            raise refusal(tier, decision, reserve, day_end - now_ms)
        self._metrics.admitted(tier.name)
        lease = Lease(
            self,
            user=admit.user,
            lease_id=admit.lease,
            day=day,
            provider=provider,
            byok=byok,
            reserve=reserve,
            prompt_estimate=prompt_estimate,
            metadata=state_metadata(tier, decision, day_end - now_ms),
        )
        self._live[admit.lease] = lease
        return lease

    def release(self, lease: Lease, settle: Settle) -> None:
        """Settle in the store in the background (a task of its own: no cancellation of the
        call can stop it half way); see the module docstring for why nothing is lost."""
        self._live.pop(lease.lease_id, None)
        task = asyncio.get_running_loop().create_task(self._settle(settle))
        self._settling.setdefault(settle.user, {})[settle.lease] = task

    async def _settle(self, settle: Settle) -> None:
        try:
            await self._store.settle(settle)
        except StoreUnavailable as exc:
            # The lease expires on its own; the reserve stays counted (errs on the budget's side).
            self._metrics.store_error("settle")
            self._log_store_error("settle", exc)
        finally:
            tasks = self._settling.get(settle.user)
            if tasks is not None:
                tasks.pop(settle.lease, None)
                if not tasks:
                    del self._settling[settle.user]

    def _store_failed(self, tier: Tier, exc: StoreUnavailable) -> Lease:
        self._metrics.store_error("admit")
        self._log_store_error("admit", exc)
        if self._on_store_error == "allow":
            self._metrics.unmetered_admissions.labels(tier.name).inc()
            return UNMETERED
        self._metrics.refused(tier.name, "store_unavailable")
        raise RpcError(
            grpc.StatusCode.UNAVAILABLE,
            RATE_LIMITER_UNAVAILABLE,
            "The rate limiter is unavailable, so the request cannot be admitted; retry shortly.",
            {"code": "rate_limiter_unavailable", "retry_after": "1"},
            retry_delay=1.0,
        )

    def _log_store_error(self, operation: str, exc: StoreUnavailable) -> None:
        """At most one line a minute per operation: a dead store must not flood the log."""
        now = time.monotonic()
        if now - self._last_logged.get(operation, -math.inf) < _LOG_EVERY_SECONDS:
            return
        self._last_logged[operation] = now
        policy = "denying" if self._on_store_error == "deny" else "admitting unmetered"
        _LOGGER.error(
            "limiter store unavailable during %s (%s); %s completions "
            "(LIMITS_ON_STORE_ERROR=%s); counted in native1api_gateway_limiter_store_errors",
            operation,
            exc,
            policy,
            self._on_store_error,
        )

    # -- usage -----------------------------------------------------------------------------

    async def usage(self, caller: Caller) -> gateway_service_pb2.GetUsageResponse:
        tier = self.tiers.for_claims(caller.claims)
        user = user_key(caller.uid)
        settling = self._settling.get(user)
        if settling:
            # Report every completion that has ended, settled.
            await asyncio.gather(*settling.values(), return_exceptions=True)
        now_ms = int(self._clock() * 1000)
        day, day_end = self._utc_day(now_ms)
        try:
            snap = await self._store.snapshot(user, _quota(tier), now_ms, day)
        except StoreUnavailable as exc:
            self._metrics.store_error("usage")
            self._log_store_error("usage", exc)
            raise RpcError(
                grpc.StatusCode.UNAVAILABLE,
                RATE_LIMITER_UNAVAILABLE,
                "The rate limiter is unavailable, so usage cannot be read; retry shortly.",
                {"code": "rate_limiter_unavailable", "retry_after": "1"},
                retry_delay=1.0,
            ) from None
        response = gateway_service_pb2.GetUsageResponse(tier=tier.name, in_flight=snap.in_flight)
        limits, remaining, reset = response.limits, response.remaining, response.reset_seconds
        rpm, tpd, conc = tier.requests_per_minute, tier.tokens_per_day, tier.max_concurrent_requests
        if rpm is not None and snap.bucket is not None:
            limits.requests_per_minute = rpm
            remaining.requests_per_minute = math.floor(snap.bucket)
            reset.requests_per_minute = _time_to_full(rpm, snap.bucket) / 1000
        if tpd is not None:
            limits.tokens_per_day = tpd
            remaining.tokens_per_day = max(0, tpd - snap.tokens_used)
            reset.tokens_per_day = (day_end - now_ms) / 1000
        if conc is not None:
            limits.max_concurrent_requests = conc
            remaining.max_concurrent_requests = max(0, conc - snap.in_flight)
        today = response.today
        today.date = day
        for provider, totals in sorted(snap.today.items()):
            entry = today.by_provider[provider]
            entry.requests = totals.requests
            entry.prompt_tokens = totals.prompt_tokens
            entry.completion_tokens = totals.completion_tokens
            today.requests += totals.requests
            today.prompt_tokens += totals.prompt_tokens
            today.completion_tokens += totals.completion_tokens
        return response

    # -- helpers ---------------------------------------------------------------------------

    def _utc_day(self, now_ms: int) -> tuple[str, int]:
        """(YYYY-MM-DD, end of that UTC day in ms), computed once a day."""
        day, end = self._day
        if not end - _DAY_MS <= now_ms < end:
            start = now_ms - now_ms % _DAY_MS
            end = start + _DAY_MS
            day = time.strftime("%Y-%m-%d", time.gmtime(start / 1000))
            self._day = (day, end)
        return day, end

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            leases = [(lease.user, lease.lease_id) for lease in self._live.values()]
            try:
                await self._store.renew(leases, int(self._clock() * 1000))
            except StoreUnavailable as exc:
                self._metrics.store_error("renew")
                self._log_store_error("renew", exc)


def _quota(tier: Tier) -> Quota:
    return Quota(tier.requests_per_minute, tier.tokens_per_day, tier.max_concurrent_requests)


def _time_to_full(rpm: int, bucket: float) -> int:
    """Milliseconds until the request bucket is full again."""
    return 0 if rpm <= 0 else math.ceil(max(0.0, rpm - bucket) * MINUTE_MS / rpm)


def state_metadata(
    tier: Tier, decision: Decision, to_day_end_ms: int
) -> tuple[tuple[str, str], ...]:
    """`x-ratelimit-*` for the limits the tier has, as OpenAI names and writes them."""
    out: list[tuple[str, str]] = []
    rpm, tpd = tier.requests_per_minute, tier.tokens_per_day
    if rpm is not None and decision.bucket is not None:
        out += (
            ("x-ratelimit-limit-requests", str(rpm)),
            ("x-ratelimit-remaining-requests", str(math.floor(decision.bucket))),
            ("x-ratelimit-reset-requests", openai_duration(_time_to_full(rpm, decision.bucket))),
        )
    if tpd is not None:
        out += (
            ("x-ratelimit-limit-tokens", str(tpd)),
            ("x-ratelimit-remaining-tokens", str(max(0, tpd - decision.tokens_used))),
            ("x-ratelimit-reset-tokens", openai_duration(to_day_end_ms)),
        )
    return tuple(out)


def refusal(tier: Tier, decision: Decision, reserve: int, to_day_end_ms: int) -> RpcError:
    """The RESOURCE_EXHAUSTED status for a refused admission, with a message that says which
    limit, the tier, and when to retry."""
    kind: LimitKind = decision.limit or "requests"
    wait_ms = max(1, decision.retry_after_ms)
    wait = openai_duration(wait_ms)
    name = tier.name
    if kind == "requests":
        rpm = tier.requests_per_minute or 0
        if rpm == 0:
            message = f"Your tier '{name}' allows no requests."
        else:
            message = (
                f"Rate limit reached for requests: your tier '{name}' allows {rpm} requests "
                f"per minute. Retry in {wait}."
            )
    elif kind == "concurrency":
        conc = tier.max_concurrent_requests or 0
        if conc == 0:
            message = f"Your tier '{name}' allows no requests."
        else:
            message = (
                f"Too many concurrent requests: your tier '{name}' allows {conc} at once. "
                "Retry when one of them has finished."
            )
    else:
        tpd = tier.tokens_per_day or 0
        if tpd == 0:
            message = f"Your tier '{name}' allows no tokens on the platform models."
        elif reserve > tpd:
            message = (
                f"This request needs up to {reserve} tokens (prompt estimate + max_tokens), "
                f"more than your tier '{name}' allows in a day ({tpd}); lower max_tokens."
            )
        else:
            message = (
                f"Token limit reached: your tier '{name}' allows {tpd} tokens per day on the "
                f"platform models and this request needs up to {reserve} (prompt estimate + "
                f"max_tokens). Retry with a lower max_tokens, or in {openai_duration(to_day_end_ms)}"
                " when the UTC day resets."
            )
    return RpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        RATE_LIMITED,
        message,
        {
            "limit": kind,
            "retry_after": f"{wait_ms / 1000:.3f}",
            "tier": name,
            "code": "rate_limit_exceeded",
        },
        retry_delay=wait_ms / 1000,
    )
