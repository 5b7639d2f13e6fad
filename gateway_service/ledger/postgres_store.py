"""The ledger on PostgreSQL: psycopg 3 async, one connection for writes and one for reads.

Several gateway replicas share one database. Each batch is one transaction; the schema is
created or migrated on first connect, serialised across replicas by an advisory lock. Select the
schema with the URL (`?options=-csearch_path%3Dusage`); tables go in its first entry.

A connection that fails is dropped and the next call opens a new one, so the ledger follows a
database restart by itself. Every call has a time limit: a database that stops answering makes
calls fail (the writer keeps its batch and retries) instead of hanging.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gateway_service.ledger.entry import LedgerEntry
from gateway_service.ledger.store import (
    SCHEMA_VERSION,
    Rollup,
    UsageUnavailable,
    entry_from_row,
    export_sql,
    history_sql,
    insert_records_sql,
    prune_sql,
    record_row,
    rollup_from_row,
    rollups,
    upsert_rollup_sql,
)

_T = TypeVar("_T")
Connection = psycopg.AsyncConnection[tuple[Any, ...]]

CONNECT_TIMEOUT_SECONDS: Final = 5
CALL_TIMEOUT_SECONDS: Final = 30.0
# pg_advisory_xact_lock key for migrations: the ASCII bytes of "n1usage\0".
_MIGRATION_LOCK: Final = int.from_bytes(b"n1usage\x00", "big")

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        "CREATE TABLE usage_records ("
        " id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " record_id TEXT NOT NULL UNIQUE,"
        " request_id TEXT NOT NULL,"
        " uid TEXT NOT NULL,"
        " created_at TIMESTAMPTZ NOT NULL,"
        " day DATE NOT NULL,"
        " stream BOOLEAN NOT NULL,"
        " provider TEXT NOT NULL,"
        " model TEXT NOT NULL,"
        " upstream_model TEXT NOT NULL,"
        " prompt_tokens BIGINT NOT NULL,"
        " completion_tokens BIGINT NOT NULL,"
        " total_tokens BIGINT NOT NULL,"
        " estimated BOOLEAN NOT NULL,"
        " status TEXT NOT NULL,"
        " reason TEXT NOT NULL,"
        " byok BOOLEAN NOT NULL,"
        " cost_usd DOUBLE PRECISION,"
        " cost_source TEXT,"
        " latency_ms DOUBLE PRECISION NOT NULL"
        ")",
        "CREATE INDEX usage_records_day ON usage_records (day, id)",
        "CREATE INDEX usage_records_uid_day ON usage_records (uid, day, id)",
        "CREATE TABLE usage_daily ("
        " uid TEXT NOT NULL,"
        " day DATE NOT NULL,"
        " provider TEXT NOT NULL,"
        " model TEXT NOT NULL,"
        " requests BIGINT NOT NULL,"
        " prompt_tokens BIGINT NOT NULL,"
        " completion_tokens BIGINT NOT NULL,"
        " total_tokens BIGINT NOT NULL,"
        " cost_usd DOUBLE PRECISION,"
        " unpriced_requests BIGINT NOT NULL,"
        " estimated_requests BIGINT NOT NULL,"
        " PRIMARY KEY (uid, day, provider, model)"
        ")",
    ),
}


async def _migrate(conn: Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS usage_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        cur = await conn.execute("SELECT value FROM usage_meta WHERE name = 'schema_version'")
        found = await cur.fetchone()
        version = 0 if found is None else int(found[0])
        if version > SCHEMA_VERSION:
            raise UsageUnavailable(
                f"the usage database has schema version {version}, newer than this gateway's "
                f"{SCHEMA_VERSION}: upgrade the gateway"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                await conn.execute(statement)
        if version != SCHEMA_VERSION:
            await conn.execute(
                "INSERT INTO usage_meta (name, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )


class _Link:
    """One lazily opened connection, used by one call at a time, replaced after any failure."""

    def __init__(self, url: str, store: PostgresUsageStore) -> None:
        self._url = url
        self._store = store
        self._lock = asyncio.Lock()
        self._conn: Connection | None = None

    async def run(self, fn: Callable[[Connection], Awaitable[_T]]) -> _T:
        async with self._lock:
            try:
                async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
                    if self._conn is None or self._conn.closed or self._conn.broken:
                        self._conn = await self._connect()
                    return await fn(self._conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self.close()
                # The type only: a server message may quote the URL's user or database.
                raise UsageUnavailable(
                    f"the PostgreSQL usage database is unavailable ({type(exc).__name__})"
                ) from exc
            except BaseException:
                await self.close()  # cancelled mid-call: the connection's state is unknown
                raise

    async def _connect(self) -> Connection:
        kwargs: dict[str, Any] = {}
        if "connect_timeout" not in conninfo_to_dict(self._url):
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        conn: Connection = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, **kwargs
        )
        try:
            await self._store.ensure_schema(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()


class PostgresUsageStore:
    """`UsageStore` over a PostgreSQL database; connects on first use."""

    def __init__(self, url: str) -> None:
        self._writer = _Link(url, self)
        self._reader = _Link(url, self)
        self._migrated = False

    async def ensure_schema(self, conn: Connection) -> None:
        if not self._migrated:
            await _migrate(conn)
            self._migrated = True

    async def write(self, entries: Sequence[LedgerEntry]) -> int:
        async def write(conn: Connection) -> int:
            async with conn.transaction():
                ids = [e.record_id for e in entries]
                cur = await conn.execute(
                    "SELECT record_id FROM usage_records WHERE record_id = ANY(%s)", (ids,)
                )
                stored = {row[0] for row in await cur.fetchall()}
                new = [e for e in entries if e.record_id not in stored]
                async with conn.cursor() as cursor:
                    await cursor.executemany(insert_records_sql("%s"), [record_row(e) for e in new])
                    await cursor.executemany(
                        upsert_rollup_sql("%s"), [r.row() for r in rollups(new)]
                    )
            return len(new)

        if not entries:
            return 0
        return await self._writer.run(write)

    async def history(self, uid: str, first: dt.date, last: dt.date) -> list[Rollup]:
        async def read(conn: Connection) -> list[Rollup]:
            cur = await conn.execute(history_sql("%s"), (uid, first, last))
            return [rollup_from_row(uid, row) for row in await cur.fetchall()]

        return await self._reader.run(read)

    async def export(
        self, first: dt.date, last: dt.date, uid: str | None, after: int, limit: int
    ) -> list[tuple[int, LedgerEntry]]:
        params: list[object] = [first, last]
        if uid is not None:
            params.append(uid)
        params += [after, limit]

        async def read(conn: Connection) -> list[tuple[int, LedgerEntry]]:
            cur = await conn.execute(export_sql("%s", by_user=uid is not None), params)
            return [(int(row[0]), entry_from_row(row[1:])) for row in await cur.fetchall()]

        return await self._reader.run(read)

    async def prune(self, before: dt.date, limit: int) -> int:
        async def delete(conn: Connection) -> int:
            cur = await conn.execute(prune_sql("%s"), (before, limit))
            return cur.rowcount

        return await self._writer.run(delete)

    async def aclose(self) -> None:
        await self._writer.close()
        await self._reader.close()
