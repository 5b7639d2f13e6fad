"""What a ledger store does, and the SQL both backends share.

Tables (created and migrated by the store on first use; `usage_meta` holds the schema version):

- `usage_records`: one row per completion (`LedgerEntry`), never updated. `record_id` is unique,
  so a batch retried after an ambiguous failure is not counted twice.
- `usage_daily`: the per-user rollup, one row per (uid, UTC day, provider, upstream model), kept
  up to date in the same transaction as the rows it sums, so history reads never scan records.

A write is one transaction: the new records, then the rollup deltas in key order (two replicas
upserting the same keys take their row locks in the same order, so they cannot deadlock).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from gateway_service.ledger.entry import LedgerEntry

SCHEMA_VERSION: Final = 1

# The columns of `usage_records` after `id`, in LedgerEntry's order (bar `day`, stored for the
# indexes).
RECORD_COLUMNS: Final = (
    "record_id",
    "request_id",
    "uid",
    "created_at",
    "day",
    "stream",
    "provider",
    "model",
    "upstream_model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "estimated",
    "status",
    "reason",
    "byok",
    "cost_usd",
    "cost_source",
    "latency_ms",
)
ROLLUP_COLUMNS: Final = (
    "uid",
    "day",
    "provider",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "unpriced_requests",
    "estimated_requests",
)


# The SQL below is built from constant identifiers and the driver's placeholder (`?` or `%s`);
# every value is a bound parameter (hence the noqa S608).


def insert_records_sql(mark: str) -> str:
    return (
        f"INSERT INTO usage_records ({', '.join(RECORD_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join([mark] * len(RECORD_COLUMNS))})"
    )


def upsert_rollup_sql(mark: str) -> str:
    # A sum of costs stays NULL only while every completion in it is unpriced.
    return (
        f"INSERT INTO usage_daily ({', '.join(ROLLUP_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join([mark] * len(ROLLUP_COLUMNS))}) "
        "ON CONFLICT (uid, day, provider, model) DO UPDATE SET "
        "requests = usage_daily.requests + excluded.requests, "
        "prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, "
        "completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, "
        "total_tokens = usage_daily.total_tokens + excluded.total_tokens, "
        "cost_usd = CASE WHEN usage_daily.cost_usd IS NULL THEN excluded.cost_usd "
        "WHEN excluded.cost_usd IS NULL THEN usage_daily.cost_usd "
        "ELSE usage_daily.cost_usd + excluded.cost_usd END, "
        "unpriced_requests = usage_daily.unpriced_requests + excluded.unpriced_requests, "
        "estimated_requests = usage_daily.estimated_requests + excluded.estimated_requests"
    )


def history_sql(mark: str) -> str:
    return (
        f"SELECT day, provider, model, requests, prompt_tokens, completion_tokens, total_tokens, "  # noqa: S608
        f"cost_usd, unpriced_requests, estimated_requests FROM usage_daily "
        f"WHERE uid = {mark} AND day >= {mark} AND day <= {mark} ORDER BY day, provider, model"
    )


def export_sql(mark: str, *, by_user: bool) -> str:
    user = f" AND uid = {mark}" if by_user else ""
    return (
        f"SELECT id, {', '.join(RECORD_COLUMNS)} FROM usage_records "  # noqa: S608
        f"WHERE day >= {mark} AND day <= {mark}{user} AND id > {mark} ORDER BY id LIMIT {mark}"
    )


def prune_sql(mark: str) -> str:
    return (
        "DELETE FROM usage_records WHERE id IN "  # noqa: S608
        f"(SELECT id FROM usage_records WHERE day < {mark} ORDER BY day, id LIMIT {mark})"
    )


class UsageUnavailable(Exception):
    """The usage database could not be reached or failed. The message never holds the URL."""


@dataclass(slots=True)
class Rollup:
    """One `usage_daily` row, or the delta a batch adds to it."""

    uid: str
    day: dt.date
    provider: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = None
    unpriced_requests: int = 0
    estimated_requests: int = 0

    def add(self, entry: LedgerEntry) -> None:
        self.requests += 1
        self.prompt_tokens += entry.prompt_tokens
        self.completion_tokens += entry.completion_tokens
        self.total_tokens += entry.total_tokens
        if entry.cost_usd is None:
            self.unpriced_requests += 1
        else:
            self.cost_usd = (self.cost_usd or 0.0) + entry.cost_usd
        self.estimated_requests += int(entry.estimated)

    def row(self) -> tuple[object, ...]:
        """The values in ROLLUP_COLUMNS order."""
        return (
            self.uid,
            self.day,
            self.provider,
            self.model,
            self.requests,
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            self.cost_usd,
            self.unpriced_requests,
            self.estimated_requests,
        )


def rollups(entries: Iterable[LedgerEntry]) -> list[Rollup]:
    """The batch's deltas to `usage_daily`, in key order."""
    sums: dict[tuple[str, dt.date, str, str], Rollup] = {}
    for entry in entries:
        key = (entry.uid, entry.day, entry.provider, entry.upstream_model)
        rollup = sums.get(key)
        if rollup is None:
            rollup = sums[key] = Rollup(*key)
        rollup.add(entry)
    return [sums[key] for key in sorted(sums)]


def record_row(entry: LedgerEntry) -> tuple[object, ...]:
    """The values in RECORD_COLUMNS order (`created_at` and `day` as the driver adapts them)."""
    return (
        entry.record_id,
        entry.request_id,
        entry.uid,
        entry.created_at,
        entry.day,
        entry.stream,
        entry.provider,
        entry.model,
        entry.upstream_model,
        entry.prompt_tokens,
        entry.completion_tokens,
        entry.total_tokens,
        entry.estimated,
        entry.status,
        entry.reason,
        entry.byok,
        entry.cost_usd,
        entry.cost_source,
        entry.latency_ms,
    )


def entry_from_row(row: Sequence[Any]) -> LedgerEntry:
    """A LedgerEntry from RECORD_COLUMNS values as either driver returns them."""
    created = row[3]
    if isinstance(created, str):  # SQLite: ISO 8601 text
        created = dt.datetime.fromisoformat(created)
    assert isinstance(created, dt.datetime)
    return LedgerEntry(
        record_id=str(row[0]),
        request_id=str(row[1]),
        uid=str(row[2]),
        created_at=created.astimezone(dt.UTC),
        stream=bool(row[5]),
        provider=str(row[6]),
        model=str(row[7]),
        upstream_model=str(row[8]),
        prompt_tokens=int(row[9]),
        completion_tokens=int(row[10]),
        total_tokens=int(row[11]),
        estimated=bool(row[12]),
        status=str(row[13]),
        reason=str(row[14]),
        byok=bool(row[15]),
        cost_usd=None if row[16] is None else float(row[16]),
        cost_source=None if row[17] is None else str(row[17]),
        latency_ms=float(row[18]),
    )


def rollup_from_row(uid: str, row: Sequence[Any]) -> Rollup:
    """A Rollup from a history_sql row."""
    day = row[0]
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    assert isinstance(day, dt.date)
    cost = row[7]
    return Rollup(
        uid,
        day,
        str(row[1]),
        str(row[2]),
        int(row[3]),
        int(row[4]),
        int(row[5]),
        int(row[6]),
        None if cost is None else float(cost),
        int(row[8]),
        int(row[9]),
    )


class UsageStore(Protocol):
    """A ledger database (SQLite or PostgreSQL)."""

    async def write(self, entries: Sequence[LedgerEntry]) -> int:
        """Store the entries and their rollups in one transaction; returns how many were new
        (an entry whose record_id is already stored is skipped). Raises UsageUnavailable."""
        ...

    async def history(self, uid: str, first: dt.date, last: dt.date) -> list[Rollup]:
        """The user's rollup rows from `first` to `last` inclusive, by day, provider, model."""
        ...

    async def export(
        self, first: dt.date, last: dt.date, uid: str | None, after: int, limit: int
    ) -> list[tuple[int, LedgerEntry]]:
        """Up to `limit` records of those days (one user's, if `uid`) with id > `after`, by id."""
        ...

    async def prune(self, before: dt.date, limit: int) -> int:
        """Delete up to `limit` records of days before `before` (rollups are kept); returns how
        many. Called in a loop, so no transaction holds its locks for long."""
        ...

    async def aclose(self) -> None: ...
