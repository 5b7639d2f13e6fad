"""KeyStore contract on SQLite and PostgreSQL: CRUD, salt, concurrency, crash safety, no plaintext."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.vault.conftest import Keks, Rings
from vault_service.errors import StorageError
from vault_service.storage import KeyStore, SqliteKeyStore, open_store

ROOT = Path(__file__).resolve().parents[2]


def blob_of(rings: Rings, uid: str, key: str, provider: str = "openrouter") -> bytes:
    return rings.new_only.seal(uid, provider, key)


async def test_put_get_delete(store: KeyStore, rings: Rings) -> None:
    assert await store.get("alice") is None
    blob = blob_of(rings, "alice", "sk-alice-1")
    before = datetime.now(UTC)
    written = await store.put("alice", "openrouter", blob)
    assert (written.uid, written.provider, written.blob) == ("alice", "openrouter", blob)
    assert written.updated_at.tzinfo is not None
    assert before - timedelta(seconds=5) <= written.updated_at <= datetime.now(UTC)
    assert await store.get("alice") == written
    assert await store.get("bob") is None
    assert await store.delete("alice") is True
    assert await store.get("alice") is None
    # Deleting again is fine, and says there was nothing.
    assert await store.delete("alice") is False


async def test_put_replaces_the_single_row(store: KeyStore, rings: Rings) -> None:
    await store.put("alice", "openrouter", blob_of(rings, "alice", "sk-first"))
    second = blob_of(rings, "alice", "tgp-second", provider="together")
    await store.put("alice", "together", second)
    stored = await store.get("alice")
    assert stored is not None
    assert (stored.provider, stored.blob) == ("together", second)
    assert rings.new_only.open("alice", stored.provider, stored.blob) == "tgp-second"
    assert await store.list_uids() == ["alice"]


async def test_compare_and_swap(store: KeyStore, rings: Rings) -> None:
    first = blob_of(rings, "alice", "sk-1")
    second = blob_of(rings, "alice", "sk-2")
    written = await store.put("alice", "openrouter", first)
    assert await store.compare_and_swap("alice", second, first) is False  # stale expectation
    assert await store.compare_and_swap("alice", first, second) is True
    stored = await store.get("alice")
    assert stored is not None
    assert stored.blob == second
    # A swap is not a user's change: provider and timestamp stay.
    assert (stored.provider, stored.updated_at) == (written.provider, written.updated_at)
    assert await store.compare_and_swap("alice", first, second) is False
    # It never resurrects a deleted row.
    await store.delete("alice")
    assert await store.compare_and_swap("alice", second, first) is False
    assert await store.get("alice") is None


async def test_listing_pages_through_every_row(store: KeyStore, rings: Rings) -> None:
    uids = [f"user-{i:02d}" for i in range(7)] + ["Zed", "alpha", "ümlaut"]
    for uid in uids:
        await store.put(uid, "openrouter", blob_of(rings, uid, f"key-{uid}"))
    expected = sorted(uids, key=lambda uid: uid.encode())
    assert await store.list_uids() == expected
    for batch in (1, 3, 10, 500):
        seen = [row.uid async for row in store.iter_all(batch)]
        assert seen == expected


async def test_salt_is_created_once_and_stable(store_url: str, store: KeyStore) -> None:
    salt = await store.get_or_create_salt()
    assert isinstance(salt, bytes)
    assert len(salt) == 16
    assert await store.get_or_create_salt() == salt
    again = await open_store(store_url)
    try:
        assert await again.get_or_create_salt() == salt
    finally:
        await again.close()


async def test_concurrent_first_salt_is_one_salt(store_url: str) -> None:
    """Two replicas starting together agree on one salt (insert-if-absent, then re-read)."""
    first, second = await asyncio.gather(open_store(store_url), open_store(store_url))
    try:
        salts = await asyncio.gather(
            *(s.get_or_create_salt() for _ in range(10) for s in (first, second))
        )
        assert len(set(salts)) == 1
    finally:
        await first.close()
        await second.close()


async def test_rows_survive_reopen(store_url: str, store: KeyStore, rings: Rings) -> None:
    blob = blob_of(rings, "alice", "sk-persisted")
    await store.put("alice", "openrouter", blob)
    await store.close()
    reopened = await open_store(store_url)
    try:
        stored = await reopened.get("alice")
        assert stored is not None
        assert stored.blob == blob
    finally:
        await reopened.close()


async def test_fifty_concurrent_puts_for_one_user(
    store_url: str, store: KeyStore, rings: Rings
) -> None:
    """Across two store instances (two connections/processes' worth): one whole winner."""
    other = await open_store(store_url)
    try:
        keys = [f"sk-concurrent-{i:02d}-" + "k" * 40 for i in range(50)]
        blobs = {blob_of(rings, "alice", key): key for key in keys}
        await asyncio.gather(
            *(
                (store if i % 2 else other).put("alice", "openrouter", blob)
                for i, blob in enumerate(blobs)
            )
        )
        stored = await store.get("alice")
        assert stored is not None
        assert stored.blob in blobs
        assert rings.new_only.open("alice", "openrouter", stored.blob) == blobs[stored.blob]
        assert await store.list_uids() == ["alice"]
    finally:
        await other.close()


async def test_many_users_in_parallel_lose_and_mix_nothing(store: KeyStore, rings: Rings) -> None:
    users = [f"user-{i:03d}" for i in range(40)]

    async def life(uid: str, index: int) -> None:
        await store.put(uid, "openrouter", blob_of(rings, uid, f"{uid}-first"))
        await store.put(uid, "together", blob_of(rings, uid, f"{uid}-final", "together"))
        if index % 3 == 0:
            assert await store.delete(uid) is True

    await asyncio.gather(*(life(uid, i) for i, uid in enumerate(users)))
    kept = [uid for i, uid in enumerate(users) if i % 3]
    assert await store.list_uids() == kept
    for i, uid in enumerate(users):
        stored = await store.get(uid)
        if i % 3 == 0:
            assert stored is None
            continue
        assert stored is not None
        assert (stored.uid, stored.provider) == (uid, "together")
        assert rings.new_only.open(uid, "together", stored.blob) == f"{uid}-final"


async def test_bad_rows_are_refused(store: KeyStore) -> None:
    for uid in ("", "x" * 129, "nul\x00uid"):
        with pytest.raises(ValueError, match="uid"):
            await store.put(uid, "openrouter", b"blob")
    with pytest.raises(ValueError, match="provider"):
        await store.put("alice", "", b"blob")
    with pytest.raises(ValueError, match="blob"):
        await store.put("alice", "openrouter", b"")
    assert await store.list_uids() == []


async def test_newer_schema_is_refused(store_url: str, store: KeyStore) -> None:
    await store.close()
    await _set_schema_version(store_url, b"99")
    with pytest.raises(StorageError, match="newer"):
        await open_store(store_url)


async def test_no_plaintext_key_at_rest(store_url: str, store: KeyStore, rings: Rings) -> None:
    api_key = "sk-or-v1-PLAINTEXT-CANARY-" + "9f8e7d6c" * 4
    for uid in ("alice", "bob"):
        await store.put(uid, "openrouter", blob_of(rings, uid, api_key))
    raw = await _raw_contents(store_url)
    assert b"alice" in raw  # the dump really holds the rows
    for needle in (api_key.encode(), api_key.encode().hex().encode(), b"PLAINTEXT-CANARY"):
        assert needle not in raw


async def test_a_killed_writer_never_leaves_a_half_written_key(
    store_url: str, store: KeyStore, keks: Keks, rings: Rings
) -> None:
    """SIGKILL a process in the middle of a put loop; every row left still opens whole."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        store_url,
        keks.new.hex(),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    try:
        for _ in range(40):
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line, "the writer died before being killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    uids = await store.list_uids()
    assert uids == [f"crash-{i}" for i in range(5)]
    for uid in uids:
        stored = await store.get(uid)
        assert stored is not None
        assert re.fullmatch(
            r"sk-crash-\d{6}-x{40}", rings.new_only.open(uid, "openrouter", stored.blob)
        )
    if store_url.startswith("sqlite"):
        assert _sqlite_integrity(store_url) == "ok"


# A separate process: puts forever, printing after each committed put, until it is killed.
_WRITER = """
import asyncio, sys
from vault_service.crypto import KeyRing
from vault_service.storage import open_store

async def main() -> None:
    store = await open_store(sys.argv[1])
    ring = KeyRing.from_keks(bytes.fromhex(sys.argv[2]))
    i = 0
    while True:
        uid = f"crash-{i % 5}"
        await store.put(uid, "openrouter", ring.seal(uid, "openrouter", f"sk-crash-{i:06d}-" + "x" * 40))
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1

asyncio.run(main())
"""


# --- backend-specific ------------------------------------------------------------------------------


async def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path, rings: Rings) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/new-dir/nested/vault.db")
    try:
        await store.put("alice", "openrouter", blob_of(rings, "alice", "sk-x"))
        path = tmp_path / "new-dir" / "nested" / "vault.db"
        modes = _file_modes(path.parent)
        assert modes["vault.db"] == 0o600
        assert modes["vault.db-wal"] & 0o077 == 0  # SQLite gives -wal/-shm the db file's mode
        assert _file_modes(path.parent.parent)["nested"] == 0o700
        assert _sqlite_pragma(path, "journal_mode") == "wal"
    finally:
        await store.close()


async def test_sqlite_relative_and_absolute_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = await open_store("sqlite:///data/vault.db")
    await relative.close()
    assert isinstance(relative, SqliteKeyStore)
    assert (tmp_path / "data" / "vault.db").is_file()
    absolute = await open_store(f"sqlite:///{tmp_path}/abs/vault.db")
    await absolute.close()
    assert (tmp_path / "abs" / "vault.db").is_file()


async def test_unknown_urls_name_the_variable_and_hide_the_rest() -> None:
    for url in ("mysql://root:hunter2secret@db/vault", "hunter2secret", "sqlite://relative.db"):
        with pytest.raises(ValueError, match="VAULT_DATABASE_URL") as caught:
            await open_store(url)
        assert "hunter2secret" not in str(caught.value)
    for url in ("sqlite:///", "sqlite:///dir/", "sqlite:///:memory:"):
        with pytest.raises(ValueError, match="VAULT_DATABASE_URL"):
            await open_store(url)


async def test_operations_after_close_fail_cleanly(store: KeyStore) -> None:
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StorageError):
        await store.get("alice")


# --- helpers (sync on purpose: small local I/O) ------------------------------------------------------


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def _file_modes(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mode & 0o777 for path in directory.iterdir()}


def _sqlite_pragma(path: Path, name: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


def _sqlite_integrity(url: str) -> str:
    return _sqlite_pragma(_sqlite_path(url), "integrity_check")


async def _set_schema_version(url: str, value: bytes) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(_sqlite_path(url))
        try:
            conn.execute("UPDATE vault_meta SET value = ? WHERE name = 'schema_version'", (value,))
            conn.commit()
        finally:
            conn.close()
        return
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as pg:
        await pg.execute("UPDATE vault_meta SET value = %s WHERE name = 'schema_version'", (value,))


async def _raw_contents(url: str) -> bytes:
    """Every byte the database holds for the vault: SQLite files (incl. WAL), or table dumps."""
    if url.startswith("sqlite"):
        directory = _sqlite_path(url).parent
        return b"".join(path.read_bytes() for path in sorted(directory.iterdir()))
    parts: list[bytes] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("vault_keys", "vault_meta"):
            cur = await conn.execute(f"SELECT t::text FROM {table} AS t")  # noqa: S608
            parts.extend(str(text).encode() for (text,) in await cur.fetchall())
        cur = await conn.execute("SELECT blob FROM vault_keys")
        parts.extend(bytes(blob) for (blob,) in await cur.fetchall())
    return b"\n".join(parts)


async def test_sqlite_deleted_records_do_not_linger_in_the_file(
    tmp_path: Path, rings: Rings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """secure_delete: the sealed record of a deleted or replaced key is zeroed, in the database
    file and in its WAL, not left in a free page for anyone who copies the file.

    Debian builds SQLite with secure_delete on by default, so every connection here starts with
    it switched off, as on a build without that default: the store must turn it on itself.
    """
    real_connect = sqlite3.connect

    def connect_without_default(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete=OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect_without_default)
    url = f"sqlite:///{tmp_path}/vault.db"
    store = await open_store(url)
    try:
        gone = blob_of(rings, "alice", "sk-or-v1-deleted-" + "ab" * 24)
        replaced = blob_of(rings, "bob", "sk-or-v1-replaced-" + "cd" * 24)
        await store.put("alice", "openrouter", gone)
        await store.put("bob", "openrouter", replaced)
        await store.put("bob", "openrouter", blob_of(rings, "bob", "sk-or-v1-new-" + "ef" * 24))
        assert await store.delete("alice") is True
    finally:
        await store.close()
    raw = await _raw_contents(url)  # the file and its WAL
    assert gone[-40:] not in raw
    assert replaced[-40:] not in raw
