"""SQLite backend: stdlib sqlite3 on one dedicated worker thread, WAL journal, file mode 0600.

All statements run on a single-thread executor that owns the connection, so the event loop never
blocks on disk and no two statements of this process interleave. Other processes (a second vault,
the rewrap command) are serialised by SQLite's own locking plus a busy timeout.

A SQLite vault is single-replica: nothing tells it about writes another process makes, so the
gateways following one vault would not hear of a key saved through a second one. A serving vault
(`follow_changes`) holds an exclusive `flock` on `<file>.lock` for its life and warns at start-up
when another process holds it already. The kernel drops the lock when its holder exits, however
it exits, so a crash leaves no false alarm behind.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, Final, ParamSpec, TypeVar

from vault_service.errors import StorageError, StorageUnavailableError
from vault_service.storage.base import (
    META_KDF_SALT,
    META_SCHEMA_VERSION,
    SALT_LEN,
    SCHEMA_VERSION,
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
)

_LOGGER = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

BUSY_TIMEOUT_SECONDS: Final = 10.0

_CREATE_META: Final = (
    "CREATE TABLE IF NOT EXISTS vault_meta (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
)
# MIGRATIONS[n] takes the schema from version n-1 to n.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        # WITHOUT ROWID: the uid primary key is the table's clustered index.
        "CREATE TABLE vault_keys ("
        " uid TEXT PRIMARY KEY NOT NULL,"
        " provider TEXT NOT NULL,"
        " blob BLOB NOT NULL,"
        " updated_at_ms INTEGER NOT NULL"
        ") WITHOUT ROWID",
    ),
}

_UPSERT: Final = (
    "INSERT INTO vault_keys (uid, provider, blob, updated_at_ms) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (uid) DO UPDATE SET provider = excluded.provider, blob = excluded.blob, "
    "updated_at_ms = excluded.updated_at_ms"
)
_SELECT: Final = "SELECT uid, provider, blob, updated_at_ms FROM vault_keys"


def _create_private_file(path: str) -> None:
    """Create the database file as 0600 before SQLite does (its -wal/-shm copy the mode)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            _LOGGER.warning(
                "the vault database file is accessible to other users (mode %o); chmod 600 it",
                mode,
            )
        return
    os.close(fd)


def _migrate(conn: sqlite3.Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock first, so two processes starting at once migrate in turn.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_META)
        found = conn.execute(
            "SELECT value FROM vault_meta WHERE name = ?", (META_SCHEMA_VERSION,)
        ).fetchone()
        version = 0 if found is None else parse_schema_version(found[0])
        check_schema_version(version)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
        if version != SCHEMA_VERSION:
            conn.execute(
                "INSERT INTO vault_meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (META_SCHEMA_VERSION, str(SCHEMA_VERSION).encode("ascii")),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _enable_wal(conn: sqlite3.Connection) -> tuple[object, ...] | None:
    """Switch to WAL, retrying while another connection holds a lock.

    Changing the journal mode needs the database to itself, and SQLite answers SQLITE_BUSY at once
    instead of waiting in the busy handler (two replicas opening a new file together hit this).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            row: tuple[object, ...] | None = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return row
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) in (
                sqlite3.SQLITE_BUSY,
                sqlite3.SQLITE_LOCKED,
            )
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _connect(path: str) -> sqlite3.Connection:
    _create_private_file(path)
    # isolation_level=None: autocommit, so each single-statement write commits atomically on its own.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        mode = _enable_wal(conn)
        if mode is None or str(mode[0]).lower() != "wal":
            raise StorageError("SQLite refused WAL mode for the vault database")
        # FULL: a put that returned survives power loss (NORMAL may drop the last commits in WAL).
        conn.execute("PRAGMA synchronous=FULL")
        # A deleted or replaced key's sealed record is overwritten with zeros, in the file and
        # its WAL, instead of lingering in free pages until something reuses them.
        conn.execute("PRAGMA secure_delete=ON")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _translate(exc: sqlite3.Error) -> StorageError:
    if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StorageUnavailableError("the SQLite vault database stayed locked")
    return StorageError("the SQLite vault database failed")


class SqliteKeyStore(PagedKeyStore):
    """`KeyStore` over one SQLite file. Create with `await SqliteKeyStore.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, path: str) -> None:
        self._conn = conn
        self._executor = executor
        self._closed = False
        self.path = path
        self._replica_lock: int | None = None  # fd of `<file>.lock` once serving

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SqliteKeyStore:
        """Create the directory and file if needed, switch to WAL, and migrate the schema."""
        filename = os.fspath(path)
        if not filename or filename == ":memory:":
            raise ValueError("the SQLite vault needs a file path")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault-sqlite")
        try:
            # The connection is created on the worker thread, the only thread that ever uses it.
            conn = await asyncio.get_running_loop().run_in_executor(executor, _connect, filename)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise _translate(exc) from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor, filename)

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        if self._closed:
            raise StorageError("the key store is closed")
        call = functools.partial(fn, self._conn, *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def put(self, uid: str, provider: str, blob: bytes) -> StoredKey:
        check_row(uid, provider, blob)
        stamp = now_ms()
        await self._run(_execute, _UPSERT, (uid, provider, blob, stamp))
        return row(uid, provider, blob, stamp)

    async def get(self, uid: str) -> StoredKey | None:
        check_uid(uid)
        found = await self._run(_fetchone, f"{_SELECT} WHERE uid = ?", (uid,))
        return None if found is None else row(*found)

    async def delete(self, uid: str) -> bool:
        check_uid(uid)
        return await self._run(_execute, "DELETE FROM vault_keys WHERE uid = ?", (uid,)) > 0

    async def compare_and_swap(self, uid: str, old_blob: bytes, new_blob: bytes) -> bool:
        check_uid(uid)
        check_blob(new_blob)
        changed = await self._run(
            _execute,
            "UPDATE vault_keys SET blob = ? WHERE uid = ? AND blob = ?",
            (new_blob, uid, old_blob),
        )
        return changed == 1

    async def _page(self, after: str | None, limit: int) -> list[StoredKey]:
        # SQLite compares TEXT with BINARY collation: byte order, same as PostgreSQL's "C".
        if after is None:
            rows = await self._run(_fetchall, f"{_SELECT} ORDER BY uid LIMIT ?", (limit,))
        else:
            rows = await self._run(
                _fetchall, f"{_SELECT} WHERE uid > ? ORDER BY uid LIMIT ?", (after, limit)
            )
        return [row(*found) for found in rows]

    async def get_or_create_salt(self) -> bytes:
        return check_salt(await self._run(_salt, os.urandom(SALT_LEN)))

    async def follow_changes(self, listener: ChangeListener) -> None:
        """Nothing to hear from other processes (single replica); claims the file for this vault."""
        if self._replica_lock is None:
            self._replica_lock = _claim_single_replica(self.path)

    async def close(self) -> None:
        if self._replica_lock is not None:
            os.close(self._replica_lock)  # releases the flock
            self._replica_lock = None
        if self._closed:
            return
        self._closed = True
        # Queued after any statement still in flight, on the thread that owns the connection.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


def _claim_single_replica(path: str) -> int | None:
    """Take `<path>.lock` exclusively and return its fd, or warn and return None if another
    process (a second vault on the same file) holds it."""
    lock_path = f"{path}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        _LOGGER.warning(
            "another vault process is serving the SQLite database %s (it holds %s): a SQLite "
            "vault is single-replica, keys saved through one are not pushed to the gateways "
            "following the other, whose caches may serve the old answer for up to "
            "GATEWAY_VAULT_CACHE_SECONDS; run one vault per SQLite file, or PostgreSQL for "
            "several",
            path,
            lock_path,
        )
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _execute(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> int:
    return conn.execute(sql, params).rowcount


def _fetchone(
    conn: sqlite3.Connection, sql: str, params: tuple[object, ...]
) -> tuple[str, str, bytes, int] | None:
    found: tuple[str, str, bytes, int] | None = conn.execute(sql, params).fetchone()
    return found


def _fetchall(
    conn: sqlite3.Connection, sql: str, params: tuple[object, ...]
) -> list[tuple[str, str, bytes, int]]:
    found: list[tuple[str, str, bytes, int]] = conn.execute(sql, params).fetchall()
    return found


def _salt(conn: sqlite3.Connection, candidate: bytes) -> bytes:
    # Insert-if-absent then re-read: whichever process inserted first, everyone reads its salt.
    conn.execute(
        "INSERT INTO vault_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        (META_KDF_SALT, candidate),
    )
    found = conn.execute("SELECT value FROM vault_meta WHERE name = ?", (META_KDF_SALT,)).fetchone()
    if found is None:
        raise StorageError("the KDF salt vanished right after it was written")
    value: bytes = found[0]
    return value
