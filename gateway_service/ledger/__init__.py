"""The usage ledger: one durable record per admitted completion, per-user daily rollups, history
and export.

- `entry`: the record (tokens as reported, or the settlement's estimate, flagged), `prices`: cost.
- `writer.UsageLedger`: the bounded queue the request path appends to, written in batches.
- `store`, `sqlite_store`, `postgres_store`: the database (`USAGE_DATABASE_URL`).
- `history`: `GetUsage`'s date range and history.
- `cli` (`python -m gateway_service usage ...`): `export` (CSV / JSON Lines) and `prune`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway_service.ledger.entry import LedgerEntry, entry_from_record
from gateway_service.ledger.prices import PriceTable
from gateway_service.ledger.settings import SQLITE_PREFIX, UsageSettings, check_database_url
from gateway_service.ledger.sqlite_store import SqliteUsageStore
from gateway_service.ledger.store import UsageStore, UsageUnavailable
from gateway_service.ledger.writer import UsageLedger

__all__ = [
    "LedgerEntry",
    "PriceTable",
    "UsageLedger",
    "UsageSettings",
    "UsageStore",
    "UsageUnavailable",
    "entry_from_record",
    "open_usage_store",
    "start_ledger",
]


async def open_usage_store(url: str) -> UsageStore:
    """The store a `USAGE_DATABASE_URL` names. SQLite is opened (and migrated) now, so a path
    that cannot be written fails at start-up; PostgreSQL connects on first use, so a database
    that is down at start-up delays the ledger's writes, not the gateway."""
    check_database_url(url)
    if url.startswith(SQLITE_PREFIX):
        return await SqliteUsageStore.open(url[len(SQLITE_PREFIX) :])
    # Imported only when used: psycopg costs a gateway on SQLite ~9 MiB of memory for nothing.
    from gateway_service.ledger.postgres_store import PostgresUsageStore

    return PostgresUsageStore(url)


async def start_ledger(settings: UsageSettings, registry: CollectorRegistry) -> UsageLedger | None:
    """Open the store and start the writer; None when the settings keep no ledger."""
    if not settings.database_url:
        return None
    try:
        store = await open_usage_store(settings.database_url)
    except UsageUnavailable as exc:
        raise UsageUnavailable(f"USAGE_DATABASE_URL: {exc}") from exc
    ledger = UsageLedger(
        store,
        settings.prices,
        registry,
        queue_max=settings.queue_max,
        batch_size=settings.batch_size,
        flush_seconds=settings.flush_seconds,
        shutdown_flush_seconds=settings.shutdown_flush_seconds,
    )
    ledger.start()
    return ledger
