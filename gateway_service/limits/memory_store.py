"""The in-process limiter store: exact for one gateway replica, nothing to run.

Same rules as the Redis store (see `store`), in plain dicts. Every method runs without awaiting
anything, so on one event loop each admission and settlement is atomic as it is in Redis.
Entries that a Redis key would let expire are swept when leases are renewed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway_service.limits.store import (
    DAY_TTL_SECONDS,
    LEASE_TTL_MS,
    MINUTE_MS,
    Admit,
    Decision,
    Quota,
    Settle,
    Snapshot,
    day_fields,
    refill,
)

_DAY_TTL_MS = DAY_TTL_SECONDS * 1000


@dataclass(slots=True)
class _Day:
    counters: dict[str, int] = field(default_factory=dict)
    expires_ms: int = 0

    def add(self, name: str, amount: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount


class MemoryStore:
    """`LimitStore` in this process's memory."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, int]] = {}
        self._leases: dict[str, dict[str, int]] = {}
        self._days: dict[tuple[str, str], _Day] = {}

    async def admit(self, admit: Admit) -> Decision:
        quota, now = admit.quota, admit.now_ms
        rpm = quota.requests_per_minute
        level = None
        if rpm is not None:
            level = self._level(admit.user, rpm, now)
            if level < 1:
                wait = MINUTE_MS if rpm == 0 else -(-(1 - level) * MINUTE_MS // rpm)
                return Decision(False, "requests", int(wait))
        leases = self._live_leases(admit.user, now)
        for lease in admit.released:
            leases.pop(lease, None)
        conc = quota.max_concurrent_requests
        if conc is not None and len(leases) >= conc:
            return Decision(False, "concurrency", 1000)
        day = self._days.get((admit.user, admit.day))
        used = day.counters.get("budget", 0) if day is not None else 0
        tpd = quota.tokens_per_day
        if tpd is not None and admit.reserve > 0 and used + admit.reserve > tpd:
            return Decision(False, "tokens", max(1, admit.day_end_ms - now))
        # Every limit passed: take from each.
        if rpm is not None and level is not None:
            level -= 1
            previous = self._buckets.get(admit.user)
            self._buckets[admit.user] = (level, max(now, previous[1] if previous else now))
        leases[admit.lease] = now + LEASE_TTL_MS
        self._leases[admit.user] = leases
        if day is None:
            day = self._days[(admit.user, admit.day)] = _Day()
        day.expires_ms = now + _DAY_TTL_MS
        if admit.reserve:
            day.add("budget", admit.reserve)
        day.add(f"req:{admit.provider}", 1)
        return Decision(
            True,
            bucket=level,
            tokens_used=day.counters.get("budget", 0),
            in_flight=len(leases),
        )

    async def settle(self, settle: Settle) -> None:
        leases = self._leases.get(settle.user)
        if leases is not None:
            leases.pop(settle.lease, None)
            if not leases:
                del self._leases[settle.user]
        day = self._days.get((settle.user, settle.day))
        if day is None:
            day = self._days[(settle.user, settle.day)] = _Day()
        if settle.spent != settle.reserve:
            day.add("budget", settle.spent - settle.reserve)
        day.add(f"in:{settle.provider}", settle.prompt_tokens)
        day.add(f"out:{settle.provider}", settle.completion_tokens)

    async def renew(self, leases: Sequence[tuple[str, str]], now_ms: int) -> None:
        expiry = now_ms + LEASE_TTL_MS
        for user, lease in leases:
            held = self._leases.get(user)
            if held is not None and lease in held:
                held[lease] = expiry
        self._sweep(now_ms)

    async def snapshot(self, user: str, quota: Quota, now_ms: int, day: str) -> Snapshot:
        rpm = quota.requests_per_minute
        record = self._days.get((user, day))
        counters = record.counters if record is not None else {}
        return Snapshot(
            bucket=None if rpm is None else self._level(user, rpm, now_ms),
            tokens_used=counters.get("budget", 0),
            in_flight=len(self._live_leases(user, now_ms)),
            today=day_fields(counters),
        )

    async def aclose(self) -> None:
        return None

    def _level(self, user: str, rpm: int, now: int) -> float:
        previous = self._buckets.get(user)
        if previous is None or now - previous[1] >= MINUTE_MS:
            return float(rpm)  # a bucket idle for a minute is full (Redis lets its key expire)
        return refill(min(previous[0], float(rpm)), previous[1], now, rpm)

    def _live_leases(self, user: str, now: int) -> dict[str, int]:
        held = self._leases.get(user, {})
        return {lease: expiry for lease, expiry in held.items() if expiry > now}

    def _sweep(self, now: int) -> None:
        """Drop what Redis would have expired, so memory stays bounded by active users."""
        self._buckets = {u: b for u, b in self._buckets.items() if now - b[1] < MINUTE_MS}
        leases = {u: self._live_leases(u, now) for u in self._leases}
        self._leases = {u: held for u, held in leases.items() if held}
        self._days = {k: d for k, d in self._days.items() if d.expires_ms > now}
