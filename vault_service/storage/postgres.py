"""PostgreSQL backend: psycopg 3 async over a small built-in connection pool (autocommit).

Every write is one statement, so autocommit gives atomicity without explicit transactions; the
only transaction is the start-up migration, serialised across replicas by an advisory lock.
Select the schema with the URL (`?options=-csearch_path%3Dvault`); tables go in its first entry.

Key changes (SPEC §12). Every put, delete and successful compare-and-swap also calls `pg_notify`
in the same statement (a data-modifying CTE), so the notification is sent if and only if the write
commits, and only when a row changed. Channel: `native1api_key_changes` for the `public` schema,
`native1api_key_changes:<schema>` otherwise (a hash of the schema if that passes 63 bytes), so
deployments sharing a database do not hear each other. Payload: `<uid_hash>:<version>:<origin>`, all ASCII, never the uid or key material:

- `uid_hash`: 32 hex characters, `storage.base.uid_hash(uid)`;
- `version`: the write's time in ms since the epoch (for a put, the row's new `updated_at_ms`);
- `origin`: 16 random hex characters naming the store object that wrote (one per process), so
  a vault ignores its own writes, which it has already told its gateways about.

A serving vault `follow_changes`: a dedicated connection (`application_name`
`native1api-vault-listener`) LISTENs on the channel, probes itself every few seconds, and
reconnects with backoff after a database restart or a killed backend; while it is down the
vault's change feed holds the gateways' caches off.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from vault_service.errors import StorageError, StorageUnavailableError
from vault_service.storage.base import (
    META_KDF_SALT,
    META_SCHEMA_VERSION,
    SALT_LEN,
    SCHEMA_VERSION,
    UID_HASH_CHARS,
    ChangeListener,
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
    uid_hash,
)

_LOGGER = logging.getLogger(__name__)

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

_SELECT: Final = "SELECT uid, provider, blob, updated_at_ms FROM vault_keys"
# Each write and its notification in one statement: pg_notify runs once per changed row, and the
# notification is delivered at commit, so a write that fails or rolls back announces nothing.
_UPSERT_NOTIFY: Final = (
    "WITH written AS ("
    "INSERT INTO vault_keys (uid, provider, blob, updated_at_ms) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (uid) DO UPDATE SET provider = excluded.provider, blob = excluded.blob, "
    "updated_at_ms = excluded.updated_at_ms RETURNING 1"
    ") SELECT pg_notify(%s, %s) FROM written"
)
_DELETE_NOTIFY: Final = (
    "WITH written AS (DELETE FROM vault_keys WHERE uid = %s RETURNING 1) "
    "SELECT pg_notify(%s, %s) FROM written"
)
_SWAP_NOTIFY: Final = (
    "WITH written AS (UPDATE vault_keys SET blob = %s WHERE uid = %s AND blob = %s RETURNING 1) "
    "SELECT pg_notify(%s, %s) FROM written"
)

CHANNEL: Final = "native1api_key_changes"
LISTENER_APPLICATION_NAME: Final = "native1api-vault-listener"
_MAX_IDENTIFIER_BYTES: Final = 63  # NAMEDATALEN - 1: longer channel names are refused
_PAYLOAD: Final = re.compile(rf"([0-9a-f]{{{UID_HASH_CHARS}}}):([0-9]{{1,20}}):([0-9a-f]{{16}})")
# The listener's defaults; tests shorten or lengthen them on `PostgresKeyStore.follower`.
LISTEN_RETRY_MIN_SECONDS: Final = 0.1
LISTEN_RETRY_MAX_SECONDS: Final = 5.0
LISTEN_PROBE_SECONDS: Final = 5.0  # an idle LISTEN connection runs SELECT 1 this often...
LISTEN_PROBE_TIMEOUT_SECONDS: Final = 5.0  # ...and is dropped when that takes longer
# TCP keepalives on the LISTEN connection (unless the URL sets them): a silently dead peer is
# noticed by the kernel too, not only by the probe.
_LISTEN_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

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


def channel_for(schema: str) -> str:
    """The NOTIFY channel of the vault whose tables live in `schema`."""
    if schema == "public":
        return CHANNEL
    named = f"{CHANNEL}:{schema}"
    if len(named.encode("utf-8")) <= _MAX_IDENTIFIER_BYTES:
        return named
    return f"{CHANNEL}:{hashlib.sha256(schema.encode('utf-8')).hexdigest()[:16]}"


class ChangeFollower:
    """LISTENs for other processes' key changes on a dedicated connection, reconnecting forever.

    Tells its `ChangeListener` `on_lost` at the start and on every loss, `on_synced` once each
    connection is listening, and `on_change` per notification from another origin. A payload it
    cannot read (a newer format) is treated as "anything may have changed": lost then synced.
    """

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: dict[str, Any],
        channel: str,
        origin: str,
        listener: ChangeListener,
    ) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._channel = channel
        self._origin = origin
        self._listener = listener
        self.retry_min = LISTEN_RETRY_MIN_SECONDS
        self.retry_max = LISTEN_RETRY_MAX_SECONDS
        self.probe_seconds = LISTEN_PROBE_SECONDS
        self.probe_timeout = LISTEN_PROBE_TIMEOUT_SECONDS
        #: The LISTEN connection's server process id while it is listening, else None.
        self.backend_pid: int | None = None
        self._attempted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start following; returns after the first attempt to listen, successful or not."""
        self._listener.on_lost()
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._attempted.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        failures = 0  # attempts since the last time it was listening
        while True:
            listening = False
            problem = ""
            conn: Connection | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, **self._connect_kwargs
                )
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                listening = True
                failures = 0
                self.backend_pid = conn.info.backend_pid
                self._listener.on_synced()
                self._attempted.set()
                await self._receive(conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                problem = type(exc).__name__
            except Exception:  # never let the follower die: the feed would stay as it is
                _LOGGER.exception("the key-change listener failed")
                problem = "unexpected error"
            finally:
                self.backend_pid = None
                if conn is not None:
                    await conn.close()
            self._listener.on_lost()
            self._attempted.set()
            delay = min(self.retry_min * 2 ** min(failures, 16), self.retry_max)
            failures += 1
            _LOGGER.warning(
                "key-change listener %s (%s); retrying in %.1f s",
                "lost its database connection" if listening else "cannot listen",
                problem,
                delay,
            )
            await asyncio.sleep(delay)

    async def _receive(self, conn: Connection) -> None:
        while True:
            async for notify in conn.notifies(timeout=self.probe_seconds):
                self._deliver(notify.payload)
            # Nothing for a while: make sure the connection still works (a silent network
            # partition would otherwise leave the gateways caching what nobody tells them).
            probe = asyncio.ensure_future(conn.execute("SELECT 1"))
            done, _ = await asyncio.wait({probe}, timeout=self.probe_timeout)
            if not done:
                # Caches off now, not after psycopg's own cancellation (up to 10 s more).
                self._listener.on_lost()
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)
                raise TimeoutError("the LISTEN connection did not answer its probe")
            probe.result()

    def _deliver(self, payload: str) -> None:
        match = _PAYLOAD.fullmatch(payload)
        if match is None:
            _LOGGER.warning("unreadable key-change notification; treating every key as changed")
            self._listener.on_lost()
            self._listener.on_synced()
            return
        if match.group(3) != self._origin:
            self._listener.on_change(match.group(1))


class PostgresKeyStore(PagedKeyStore):
    """`KeyStore` over PostgreSQL. Create with `await PostgresKeyStore.open(url)`."""

    def __init__(
        self, pool: _Pool, conninfo: str = "", connect_kwargs: dict[str, Any] | None = None
    ) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._connect_kwargs = dict(connect_kwargs or {})
        self._channel = CHANNEL
        #: Names this store's writes in their notifications (so it can skip its own).
        self.origin = os.urandom(8).hex()
        #: The LISTEN side, once `follow_changes` was called.
        self.follower: ChangeFollower | None = None

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
        store = cls(_Pool(conninfo, pool_size, kwargs), conninfo, kwargs)
        try:
            await store._migrate()
            found = await store._fetch("SELECT current_schema()", ())
            store._channel = channel_for(str(found[0][0]))
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

    def _announce(self, uid: str, version: int) -> tuple[str, str]:
        """pg_notify's arguments for a change to `uid`'s row."""
        return (self._channel, f"{uid_hash(uid)}:{version}:{self.origin}")

    @property
    def channel(self) -> str:
        """The NOTIFY channel this store writes to and its follower listens on."""
        return self._channel

    async def put(self, uid: str, provider: str, blob: bytes) -> StoredKey:
        check_row(uid, provider, blob)
        stamp = now_ms()
        await self._rowcount(
            _UPSERT_NOTIFY, (uid, provider, blob, stamp, *self._announce(uid, stamp))
        )
        return row(uid, provider, blob, stamp)

    async def get(self, uid: str) -> StoredKey | None:
        check_uid(uid)
        found = await self._fetch(f"{_SELECT} WHERE uid = %s", (uid,))
        return row(*found[0]) if found else None

    async def delete(self, uid: str) -> bool:
        check_uid(uid)
        return await self._rowcount(_DELETE_NOTIFY, (uid, *self._announce(uid, now_ms()))) > 0

    async def compare_and_swap(self, uid: str, old_blob: bytes, new_blob: bytes) -> bool:
        check_uid(uid)
        check_blob(new_blob)
        changed = await self._rowcount(
            _SWAP_NOTIFY, (new_blob, uid, old_blob, *self._announce(uid, now_ms()))
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

    async def follow_changes(self, listener: ChangeListener) -> None:
        if self.follower is not None:
            raise RuntimeError("this store already follows changes")
        kwargs = {
            **{k: v for k, v in _LISTEN_KEEPALIVES.items() if k not in self._param_names()},
            **self._connect_kwargs,
            "application_name": LISTENER_APPLICATION_NAME,
        }
        self.follower = ChangeFollower(self._conninfo, kwargs, self._channel, self.origin, listener)
        await self.follower.start()

    def _param_names(self) -> set[str]:
        return set(conninfo_to_dict(self._conninfo))

    async def close(self) -> None:
        if self.follower is not None:
            await self.follower.close()
        await self._pool.close()
