"""The Redis limiter store: one budget per user, shared by every gateway replica.

Each admission and each settlement is one Lua script (`admit.lua`, `settle.lua`), run with
`EVALSHA` (redis-py loads the script once and reloads it only after a `SCRIPT FLUSH` or a
restart). Reads for GET /v1/usage and lease renewals are pipelines.

Keys, per user (the hash of the uid, never the uid itself), in one hash slot `{user}` so the
scripts also run on Redis Cluster:

- `<prefix>{user}:rpm`: the request bucket (`level`, `ts`), expires a minute after its last use;
- `<prefix>{user}:leases`: the concurrency leases (sorted set, score = expiry in ms);
- `<prefix>{user}:day:<YYYY-MM-DD>`: the day's token budget and per-provider totals, 48 h.

Every Redis failure (refused, reset, timed out, loading, read-only replica...) surfaces as
`StoreUnavailable`, and the admission policy (`LIMITS_ON_STORE_ERROR`) decides what it means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway_service.limits.store import (
    DAY_TTL_SECONDS,
    LEASE_TTL_MS,
    Admit,
    Decision,
    LimitKind,
    Quota,
    Settle,
    Snapshot,
    StoreUnavailable,
    day_fields,
    refill,
)

DEFAULT_PREFIX: Final = "n1a:limits:"
_LIMIT_KINDS: Final[dict[bytes, LimitKind]] = {
    b"requests": "requests",
    b"tokens": "tokens",
    b"concurrency": "concurrency",
}
_T = TypeVar("_T")


def _script(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _none(value: int | None) -> int:
    return -1 if value is None else value


class RedisStore:
    """`LimitStore` on Redis (`LIMITS_REDIS_URL`)."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, url_for_logs: str = ""
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._where = url_for_logs or "Redis"
        self._admit = client.register_script(_script("admit.lua"))
        self._settle = client.register_script(_script("settle.lua"))

    @classmethod
    def from_url(
        cls, url: str, *, timeout_seconds: float = 0.5, prefix: str = DEFAULT_PREFIX
    ) -> RedisStore:
        """A store on `url`. Commands time out after `timeout_seconds`, and a dropped
        connection is retried once at once: admission waits for Redis, so a dead Redis must
        fail fast rather than after redis-py's default backoff."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        return cls(client, prefix=prefix, url_for_logs=_redacted(url))

    def _keys(self, user: str) -> tuple[str, str]:
        base = f"{self._prefix}{{{user}}}:"
        return base + "rpm", base + "leases"

    def _day_key(self, user: str, day: str) -> str:
        return f"{self._prefix}{{{user}}}:day:{day}"

    async def admit(self, admit: Admit) -> Decision:
        quota = admit.quota
        bucket, leases = self._keys(admit.user)
        reply = await self._call(
            self._admit,
            keys=[bucket, leases, self._day_key(admit.user, admit.day)],
            args=[
                admit.now_ms,
                _none(quota.requests_per_minute),
                _none(quota.max_concurrent_requests),
                _none(quota.tokens_per_day),
                admit.reserve,
                admit.provider,
                admit.lease,
                LEASE_TTL_MS,
                DAY_TTL_SECONDS,
                admit.day_end_ms,
                *admit.released,
            ],
        )
        admitted, limit, retry_ms, level, used, in_flight = reply
        if not admitted:
            return Decision(False, _LIMIT_KINDS[limit], int(retry_ms))
        return Decision(
            True,
            bucket=None if level < 0 else level / 1000,
            tokens_used=int(used),
            in_flight=int(in_flight),
        )

    async def settle(self, settle: Settle) -> None:
        _, leases = self._keys(settle.user)
        await self._call(
            self._settle,
            keys=[leases, self._day_key(settle.user, settle.day)],
            args=[
                settle.lease,
                settle.spent - settle.reserve,
                settle.provider,
                settle.prompt_tokens,
                settle.completion_tokens,
                DAY_TTL_SECONDS,
            ],
        )

    async def renew(self, leases: Sequence[tuple[str, str]], now_ms: int) -> None:
        if not leases:
            return
        expiry = now_ms + LEASE_TTL_MS
        pipe = self._redis.pipeline(transaction=False)
        for user, lease in leases:
            key = self._keys(user)[1]
            pipe.zadd(key, {lease: expiry}, xx=True)  # never resurrects a settled lease
            pipe.pexpire(key, LEASE_TTL_MS)
        await self._guard(pipe.execute)

    async def snapshot(self, user: str, quota: Quota, now_ms: int, day: str) -> Snapshot:
        bucket_key, leases_key = self._keys(user)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(bucket_key, "level", "ts")
        pipe.zcount(leases_key, f"({now_ms}", "+inf")
        pipe.hgetall(self._day_key(user, day))
        (level_raw, ts_raw), in_flight, day_raw = await self._guard(pipe.execute)
        rpm = quota.requests_per_minute
        bucket = None
        if rpm is not None:
            if level_raw is None:
                bucket = float(rpm)
            else:
                bucket = refill(min(float(level_raw), rpm), int(ts_raw), now_ms, rpm)
        counters = {k.decode(): int(v) for k, v in day_raw.items()}
        return Snapshot(
            bucket=bucket,
            tokens_used=counters.get("budget", 0),
            in_flight=int(in_flight),
            today=day_fields(counters),
        )

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _call(self, script: Any, *, keys: list[str], args: list[Any]) -> Any:
        return await self._guard(lambda: script(keys=keys, args=args))

    async def _guard(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await operation()
        except (RedisError, OSError) as exc:
            # The exception text names host and port at most; the URL (and its password) never.
            raise StoreUnavailable(f"{self._where}: {type(exc).__name__}") from exc


def _redacted(url: str) -> str:
    """The URL without credentials, for log lines."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "Redis"
    return f"{scheme}://{rest.rpartition('@')[2]}"
