"""The ledger on SQLite: stdlib sqlite3 on one dedicated worker thread, WAL journal, mode 0600.

The single worker thread owns the connection, so the event loop never blocks on disk and no two
statements of this process interleave; other processes (a second gateway on the same file, the
export command) are serialised by SQLite's locking and a busy timeout. Each batch is one
`BEGIN IMMEDIATE` transaction and one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

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

BUSY_TIMEOUT_SECONDS: Final = 10.0
_IN_CHUNK: Final = 500  # record ids per `IN (...)`: far below SQLite's variable limit
_STORED_QUERY: Final = (
    "SELECT record_id FROM usage_records WHERE record_id IN ("  # noqa: S608 (placeholders only)
    + ", ".join("?" * _IN_CHUNK)
    + ")"
)

# MIGRATIONS[n] takes the schema from version n-1 to n.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        "CREATE TABLE usage_records ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"  # never reused: export pages by id
        " record_id TEXT NOT NULL UNIQUE,"
        " request_id TEXT NOT NULL,"
        " uid TEXT NOT NULL,"
        " created_at TEXT NOT NULL,"  # ISO 8601, UTC
        " day TEXT NOT NULL,"  # YYYY-MM-DD (UTC)
        " stream INTEGER NOT NULL,"
        " provider TEXT NOT NULL,"
        " model TEXT NOT NULL,"
        " upstream_model TEXT NOT NULL,"
        " prompt_tokens INTEGER NOT NULL,"
        " completion_tokens INTEGER NOT NULL,"
        " total_tokens INTEGER NOT NULL,"
        " estimated INTEGER NOT NULL,"
        " status TEXT NOT NULL,"
        " reason TEXT NOT NULL,"
        " byok INTEGER NOT NULL,"
        " cost_usd REAL,"
        " cost_source TEXT,"
        " latency_ms REAL NOT NULL"
        ")",
        "CREATE INDEX usage_records_day ON usage_records (day, id)",
        "CREATE INDEX usage_records_uid_day ON usage_records (uid, day, id)",
        "CREATE TABLE usage_daily ("
        " uid TEXT NOT NULL,"
        " day TEXT NOT NULL,"
        " provider TEXT NOT NULL,"
        " model TEXT NOT NULL,"
        " requests INTEGER NOT NULL,"
        " prompt_tokens INTEGER NOT NULL,"
        " completion_tokens INTEGER NOT NULL,"
        " total_tokens INTEGER NOT NULL,"
        " cost_usd REAL,"
        " unpriced_requests INTEGER NOT NULL,"
        " estimated_requests INTEGER NOT NULL,"
        " PRIMARY KEY (uid, day, provider, model)"
        ") WITHOUT ROWID",
    ),
}


def _sqlite_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _migrate(conn: sqlite3.Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock first, so two processes starting at once migrate in turn.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS usage_meta (name TEXT PRIMARY KEY NOT NULL, value TEXT)"
        )
        found = conn.execute(
            "SELECT value FROM usage_meta WHERE name = 'schema_version'"
        ).fetchone()
        version = 0 if found is None else int(found[0])
        if version > SCHEMA_VERSION:
            raise UsageUnavailable(
                f"the usage database has schema version {version}, newer than this gateway's "
                f"{SCHEMA_VERSION}: upgrade the gateway"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
        if version != SCHEMA_VERSION:
            conn.execute(
                "INSERT INTO usage_meta (name, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _connect(path: str) -> sqlite3.Connection:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    # Created 0600 before SQLite does: it holds user ids (its -wal/-shm copy the mode).
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a written batch survives power loss
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _write(conn: sqlite3.Connection, entries: Sequence[LedgerEntry]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = [e.record_id for e in entries]
        stored: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            # Always _IN_CHUNK parameters (the list padded with its own first id): one statement
            # text, so one prepared statement. A text per batch size would fill the connection's
            # statement cache with hundreds of prepared statements (measured: the gateway's RSS
            # grew ~0.15 MiB per 1,000 completions in the soak until then).
            chunk += [chunk[0]] * (_IN_CHUNK - len(chunk))
            found = conn.execute(_STORED_QUERY, chunk)
            stored.update(row[0] for row in found)
        new = [e for e in entries if e.record_id not in stored]
        conn.executemany(
            insert_records_sql("?"), [tuple(map(_sqlite_value, record_row(e))) for e in new]
        )
        conn.executemany(
            upsert_rollup_sql("?"), [tuple(map(_sqlite_value, r.row())) for r in rollups(new)]
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(new)


class SqliteUsageStore:
    """`UsageStore` over one SQLite file. Create with `await SqliteUsageStore.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor

    @classmethod
    async def open(cls, path: str) -> SqliteUsageStore:
        """Create the directory and file if needed, switch to WAL, and migrate the schema."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-sqlite")
        try:
            # The connection is created on the worker thread, the only thread that ever uses it.
            conn = await asyncio.get_running_loop().run_in_executor(executor, _connect, path)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise UsageUnavailable(f"the SQLite usage database failed: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor)

    async def _run(self, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise UsageUnavailable(f"the SQLite usage database failed: {exc}") from exc

    async def write(self, entries: Sequence[LedgerEntry]) -> int:
        return await self._run(lambda: _write(self._conn, entries))

    async def history(self, uid: str, first: dt.date, last: dt.date) -> list[Rollup]:
        def read() -> list[Rollup]:
            rows = self._conn.execute(
                history_sql("?"), (uid, first.isoformat(), last.isoformat())
            ).fetchall()
            return [rollup_from_row(uid, row) for row in rows]

        return await self._run(read)

    async def export(
        self, first: dt.date, last: dt.date, uid: str | None, after: int, limit: int
    ) -> list[tuple[int, LedgerEntry]]:
        params: list[object] = [first.isoformat(), last.isoformat()]
        if uid is not None:
            params.append(uid)
        params += [after, limit]

        def read() -> list[tuple[int, LedgerEntry]]:
            rows = self._conn.execute(export_sql("?", by_user=uid is not None), params)
            return [(int(row[0]), entry_from_row(row[1:])) for row in rows.fetchall()]

        return await self._run(read)

    async def prune(self, before: dt.date, limit: int) -> int:
        def delete() -> int:
            return self._conn.execute(prune_sql("?"), (before.isoformat(), limit)).rowcount

        return await self._run(delete)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)
