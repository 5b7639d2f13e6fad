"""What a limiter store does, whichever it is (Redis for replicas, in-process for one).

Both stores implement the same rules, and the test suite runs every rule against both:

- **requests**: a bucket of N that refills N per minute, continuously. An admission takes one.
- **concurrency**: a lease per admitted completion, with an expiry that the owning gateway renews
  while the completion runs (`renew`). Settling removes it; a lease whose gateway died expires
  (`LEASE_TTL_MS`), so a crashed replica's slots come back on their own.
- **tokens**: one counter per user per UTC day of tokens spent on the platform account plus the
  reserves of completions still running. Admission adds the reserve, settlement replaces it with
  what was really spent. The day is the reservation's, so a completion that runs over midnight
  settles against the day that admitted it.
- **today**: per user, per UTC day, per provider: requests admitted, prompt and completion tokens.

Every admission and every settlement is one atomic step. A refusal changes nothing. Times are
milliseconds since the epoch, passed in by the caller (the gateway's clock), so a store holds no
clock of its own and tests can drive one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

LimitKind = Literal["requests", "tokens", "concurrency"]

LEASE_TTL_MS: Final = 45_000
"""A lease not renewed for this long is gone: a dead replica's slot frees within 45 s."""
LEASE_RENEW_SECONDS: Final = 15.0
"""How often a gateway renews the leases of the completions it is running."""
DAY_TTL_SECONDS: Final = 48 * 3600
"""How long a user's day record is kept (today's totals, and yesterday's for late settlements)."""
MINUTE_MS: Final = 60_000


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class Quota:
    """The limits an admission is checked against; None: no limit of that kind."""

    requests_per_minute: int | None
    tokens_per_day: int | None
    max_concurrent_requests: int | None


@dataclass(frozen=True, slots=True)
class Admit:
    """One admission: who, against what, and what it would take."""

    user: str
    """The user's key in the store (a hash of the uid, never the uid itself)."""
    quota: Quota
    now_ms: int
    day: str
    """The UTC day, YYYY-MM-DD."""
    day_end_ms: int
    reserve: int
    """Tokens to reserve against `tokens_per_day`; 0 for BYOK requests, which it does not count."""
    provider: str
    lease: str
    """A unique id for this completion's concurrency lease."""
    released: tuple[str, ...] = ()
    """Leases of this user that this gateway has ended but whose settlement may not have
    reached the store yet: removed before counting, so a client that sends its next request the
    moment the previous one ended is never refused for a slot it no longer holds."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The store's answer. On refusal only `limit` and `retry_after_ms` mean anything."""

    admitted: bool
    limit: LimitKind | None = None
    retry_after_ms: int = 0
    bucket: float | None = None
    """Requests left in the bucket after this admission (None without a requests limit)."""
    tokens_used: int = 0
    """The day's platform tokens spent or reserved, this admission included."""
    in_flight: int = 0
    """The user's completions in flight, this one included."""


@dataclass(frozen=True, slots=True)
class Settle:
    """The end of an admitted completion: free its lease, replace its reserve by what it spent."""

    user: str
    day: str
    lease: str
    provider: str
    reserve: int
    spent: int
    """Tokens that count against `tokens_per_day` (0 for BYOK)."""
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ProviderDay:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A user's state, read without changing it (GET /v1/usage)."""

    bucket: float | None
    tokens_used: int
    in_flight: int
    today: Mapping[str, ProviderDay]


class LimitStore(Protocol):
    async def admit(self, admit: Admit) -> Decision:
        """Check every limit and, only if all pass, take from each; one atomic step."""

    async def settle(self, settle: Settle) -> None:
        """Free the lease and settle the reserve; one atomic step."""

    async def renew(self, leases: Sequence[tuple[str, str]], now_ms: int) -> None:
        """Push the expiry of these (user, lease) pairs to `now_ms + LEASE_TTL_MS`."""

    async def snapshot(self, user: str, quota: Quota, now_ms: int, day: str) -> Snapshot:
        """The user's current state."""

    async def aclose(self) -> None: ...


def refill(level: float, last_ms: int, now_ms: int, per_minute: int) -> float:
    """The bucket's level at `now_ms` (the Lua script does the same arithmetic)."""
    if now_ms > last_ms:
        level += (now_ms - last_ms) * per_minute / MINUTE_MS
    return min(float(per_minute), level)


def day_fields(raw: Mapping[str, int]) -> dict[str, ProviderDay]:
    """Per-provider totals from a day record's `req:<p>`, `in:<p>`, `out:<p>` fields."""
    out: dict[str, dict[str, int]] = {}
    names = {"req": "requests", "in": "prompt_tokens", "out": "completion_tokens"}
    for name, value in raw.items():
        kind, sep, provider = name.partition(":")
        if sep and kind in names:
            out.setdefault(provider, {})[names[kind]] = int(value)
    return {provider: ProviderDay(**values) for provider, values in out.items()}
