"""PostgreSQL backend: psycopg 3 async over a small built-in connection pool (autocommit).

Every write is one statement, so autocommit gives atomicity without explicit transactions; the
only transaction is the start-up migration, serialised across replicas by an advisory lock.
Select the schema with the URL (`?options=-csearch_path%3Dvault`); tables go in its first entry.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from vault_service.errors import StorageError, StorageUnavailableError
from vault_service.storage.base import (
    META_KDF_SALT,
    META_SCHEMA_VERSION,
    SALT_LEN,
    SCHEMA_VERSION,
    PagedKeyStore,
    StoredKey,
    check_blob,
    check_row,
    check_salt,
    check_schema_version,
    check_uid,
    now_ms,
    parse_schema_version,
    row,
)

DEFAULT_POOL_SIZE: Final = 4
DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 10
# pg_advisory_xact_lock key for migrations: the ASCII bytes of "n1vault\0".
_MIGRATION_LOCK: Final = int.from_bytes(b"n1vault\x00", "big")

_CREATE_META: Final = (
    "CREATE TABLE IF NOT EXISTS vault_meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL)"
)
# MIGRATIONS[n] takes the schema from version n-1 to n.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        # COLLATE "C": byte order, like SQLite, and deterministic for keyset pagination.
        "CREATE TABLE vault_keys ("
        ' uid TEXT COLLATE "C" PRIMARY KEY,'
        " provider TEXT NOT NULL,"
        " blob BYTEA NOT NULL,"
        " updated_at_ms BIGINT NOT NULL"
        ")",
    ),
}

_UPSERT: Final = (
    "INSERT INTO vault_keys (uid, provider, blob, updated_at_ms) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (uid) DO UPDATE SET provider = excluded.provider, blob = excluded.blob, "
    "updated_at_ms = excluded.updated_at_ms"
)
_SELECT: Final = "SELECT uid, provider, blob, updated_at_ms FROM vault_keys"

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


@contextmanager
def _translated() -> Iterator[None]:
    """Map psycopg errors onto the storage errors; server messages never contain plaintext keys."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise StorageUnavailableError("the PostgreSQL vault database is unavailable") from exc
    except psycopg.Error as exc:
        raise StorageError("the PostgreSQL vault database failed") from exc


class _Pool:
    """At most `size` connections, opened lazily; broken or mid-transaction ones are discarded."""

    def __init__(self, conninfo: str, size: int, connect_kwargs: dict[str, Any]) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Connection] = []
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        if self._closed:
            raise StorageError("the key store is closed")
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed or conn.broken:
                with _translated():
                    conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, **self._connect_kwargs
                    )
            try:
                yield conn
            finally:
                reusable = (
                    not self._closed
                    and not conn.closed
                    and not conn.broken
                    and conn.info.transaction_status == TransactionStatus.IDLE
                )
                if reusable:
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


class PostgresKeyStore(PagedKeyStore):
    """`KeyStore` over PostgreSQL. Create with `await PostgresKeyStore.open(url)`."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, conninfo: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> PostgresKeyStore:
        """Connect and migrate the schema. The URL is never echoed: it may hold a password."""
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error:
            raise ValueError("VAULT_DATABASE_URL is not a valid PostgreSQL URL") from None
        if pool_size < 1:
            raise ValueError("pool_size must be positive")
        kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_SECONDS
        store = cls(_Pool(conninfo, pool_size, kwargs))
        try:
            await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def _migrate(self) -> None:
        async with self._pool.connection() as conn:
            with _translated():
                async with conn.transaction():
                    # Replicas starting together would race on CREATE TABLE; they take turns.
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    await conn.execute(_CREATE_META)
                    cur = await conn.execute(
                        "SELECT value FROM vault_meta WHERE name = %s", (META_SCHEMA_VERSION,)
                    )
                    found = await cur.fetchone()
                    version = 0 if found is None else parse_schema_version(found[0])
                    check_schema_version(version)
                    for target in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS[target]:
                            await conn.execute(statement)
                    if version != SCHEMA_VERSION:
                        await conn.execute(
                            "INSERT INTO vault_meta (name, value) VALUES (%s, %s) "
                            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                            (META_SCHEMA_VERSION, str(SCHEMA_VERSION).encode("ascii")),
                        )

    async def _rowcount(self, sql: str, params: tuple[object, ...]) -> int:
        async with self._pool.connection() as conn:
            with _translated():
                cur = await conn.execute(sql, params)
                return cur.rowcount

    async def _fetch(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            with _translated():
                cur = await conn.execute(sql, params)
                return await cur.fetchall()

    async def put(self, uid: str, provider: str, blob: bytes) -> StoredKey:
        check_row(uid, provider, blob)
        stamp = now_ms()
        await self._rowcount(_UPSERT, (uid, provider, blob, stamp))
        return row(uid, provider, blob, stamp)

    async def get(self, uid: str) -> StoredKey | None:
        check_uid(uid)
        found = await self._fetch(f"{_SELECT} WHERE uid = %s", (uid,))
        return row(*found[0]) if found else None

    async def delete(self, uid: str) -> bool:
        check_uid(uid)
        return await self._rowcount("DELETE FROM vault_keys WHERE uid = %s", (uid,)) > 0

    async def compare_and_swap(self, uid: str, old_blob: bytes, new_blob: bytes) -> bool:
        check_uid(uid)
        check_blob(new_blob)
        changed = await self._rowcount(
            "UPDATE vault_keys SET blob = %s WHERE uid = %s AND blob = %s",
            (new_blob, uid, old_blob),
        )
        return changed == 1

    async def _page(self, after: str | None, limit: int) -> list[StoredKey]:
        if after is None:
            rows = await self._fetch(f"{_SELECT} ORDER BY uid LIMIT %s", (limit,))
        else:
            rows = await self._fetch(
                f"{_SELECT} WHERE uid > %s ORDER BY uid LIMIT %s", (after, limit)
            )
        return [row(*found) for found in rows]

    async def get_or_create_salt(self) -> bytes:
        # Insert-if-absent then re-read: the first replica's salt wins and everyone reads it.
        await self._rowcount(
            "INSERT INTO vault_meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (META_KDF_SALT, os.urandom(SALT_LEN)),
        )
        found = await self._fetch("SELECT value FROM vault_meta WHERE name = %s", (META_KDF_SALT,))
        if not found:
            raise StorageError("the KDF salt vanished right after it was written")
        return check_salt(found[0][0])

    async def close(self) -> None:
        await self._pool.close()
