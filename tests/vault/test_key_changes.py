"""PostgreSQL key-change notifications (SPEC §12): what a write announces, and who hears it.

See vault_service/storage/postgres.py for the channel and payload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from vault_service.change_feed import ChangeFeed
from vault_service.errors import StorageError
from vault_service.storage.base import uid_hash
from vault_service.storage.postgres import CHANNEL, ChangeFollower, PostgresKeyStore, channel_for

pytestmark = pytest.mark.postgres

BLOB = b"sealed-record-1"
OTHER_BLOB = b"sealed-record-2"


class Recorder:
    """A `ChangeListener` that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.changed = asyncio.Event()

    def on_change(self, uid_hash: str) -> None:
        self.events.append(uid_hash)
        self.changed.set()

    def on_lost(self) -> None:
        self.events.append("lost")

    def on_synced(self) -> None:
        self.events.append("synced")

    async def until(self, count: int) -> list[str]:
        changes: list[str] = []
        for _ in range(200):
            changes = [e for e in self.events if e not in ("lost", "synced")]
            if len(changes) >= count:
                return changes
            await asyncio.sleep(0.01)
        raise AssertionError(f"heard {changes}, expected {count} changes")


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[PostgresKeyStore]:
    store = await PostgresKeyStore.open(postgres_url)
    yield store
    await store.close()


@pytest.fixture
async def listen(
    postgres_url: str, pg_store: PostgresKeyStore
) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    """A plain connection LISTENing on the store's channel, as an operator would."""
    conn = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(pg_store.channel)))
    yield conn
    await conn.close()


async def next_payloads(conn: psycopg.AsyncConnection[tuple[object, ...]], count: int) -> list[str]:
    payloads = [n.payload async for n in conn.notifies(timeout=2.0, stop_after=count)]
    assert len(payloads) == count
    return payloads


async def test_each_write_announces_a_uid_hash_and_a_version_never_the_uid_or_key(
    pg_store: PostgresKeyStore, listen: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    written = await pg_store.put("alice", "openrouter", BLOB)
    [payload] = await next_payloads(listen, 1)
    hashed, version, origin = payload.split(":")
    assert hashed == uid_hash("alice")
    assert int(version) == int(written.updated_at.timestamp() * 1000)
    assert origin == pg_store.origin
    assert "alice" not in payload
    assert BLOB.decode() not in payload

    # Writes that change nothing announce nothing: the next notification is the sentinel's.
    assert not await pg_store.delete("nobody")
    assert not await pg_store.compare_and_swap("alice", OTHER_BLOB, BLOB)
    await pg_store.put("sentinel-1", "openrouter", BLOB)
    [sentinel] = await next_payloads(listen, 1)
    assert sentinel.startswith(uid_hash("sentinel-1") + ":")

    # A rewrap's swap and a delete each announce once.
    assert await pg_store.compare_and_swap("alice", BLOB, OTHER_BLOB)
    assert await pg_store.delete("alice")
    await pg_store.put("sentinel-2", "openrouter", BLOB)
    swapped, deleted, last = await next_payloads(listen, 3)
    assert swapped.startswith(uid_hash("alice") + ":")
    assert deleted.startswith(uid_hash("alice") + ":")
    assert last.startswith(uid_hash("sentinel-2") + ":")


async def test_a_write_that_rolls_back_announces_nothing(
    postgres_url: str,
    pg_store: PostgresKeyStore,
    listen: psycopg.AsyncConnection[tuple[object, ...]],
) -> None:
    # A deferred constraint trigger fails at COMMIT, after the statement (and its pg_notify) ran.
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(
            "CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.uid = 'doomed' THEN RAISE EXCEPTION 'refused at commit'; END IF; "
            "RETURN NULL; END $$"
        )
        await admin.execute(
            "CREATE CONSTRAINT TRIGGER refuse_doomed AFTER INSERT OR UPDATE ON vault_keys "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_doomed()"
        )
    with pytest.raises(StorageError):
        await pg_store.put("doomed", "openrouter", BLOB)
    assert await pg_store.get("doomed") is None
    await pg_store.put("sentinel", "openrouter", BLOB)
    [payload] = await next_payloads(listen, 1)
    assert payload.startswith(uid_hash("sentinel") + ":")


async def test_a_follower_hears_other_writers_but_not_its_own_store(
    postgres_url: str, pg_store: PostgresKeyStore
) -> None:
    recorder = Recorder()
    await pg_store.follow_changes(recorder)
    assert recorder.events == ["lost", "synced"]
    other = await PostgresKeyStore.open(postgres_url)
    try:
        await other.put("bob", "openrouter", BLOB)
        await pg_store.put("own", "openrouter", BLOB)  # its vault publishes this one itself
        await other.compare_and_swap("bob", BLOB, OTHER_BLOB)
        await other.delete("bob")
        heard = await recorder.until(3)
    finally:
        await other.close()
    assert heard == [uid_hash("bob")] * 3
    assert recorder.events[:2] == ["lost", "synced"]


async def test_an_unreadable_notification_counts_as_every_key_changed(
    pg_store: PostgresKeyStore, listen: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    recorder = Recorder()
    await pg_store.follow_changes(recorder)
    await listen.execute("SELECT pg_notify(%s, %s)", (pg_store.channel, "v9:something-new"))
    await listen.execute(
        "SELECT pg_notify(%s, %s)", (pg_store.channel, f"{uid_hash('x')}:1:{'0' * 16}")
    )
    await recorder.until(1)
    assert recorder.events == ["lost", "synced", "lost", "synced", uid_hash("x")]


async def test_an_unreachable_database_keeps_the_feed_off() -> None:
    feed = ChangeFeed()
    follower = ChangeFollower(
        "postgresql://postgres@127.0.0.1:1/test", {"connect_timeout": 2}, CHANNEL, "0" * 16, feed
    )
    follower.retry_min = 0.05
    await follower.start()  # returns after the first (failed) attempt
    try:
        assert not feed.live
        assert follower.backend_pid is None
        await asyncio.sleep(0.2)  # retrying meanwhile, still off
        assert not feed.live
    finally:
        await follower.close()


class StallingProxy:
    """A TCP relay to PostgreSQL that can stop relaying without closing anything: to the vault,
    a network partition (its packets just stop being answered)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            task = asyncio.get_running_loop().create_task(pump)
            self._tasks.add(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


async def test_a_silently_dead_connection_is_noticed_by_the_probe(postgres_url: str) -> None:
    params = conninfo_to_dict(postgres_url)
    recorder = Recorder()
    async with StallingProxy(
        str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
    ) as proxy:
        follower = ChangeFollower(
            make_conninfo(postgres_url, host="127.0.0.1", port=proxy.port),
            {"connect_timeout": 2},
            CHANNEL,
            "0" * 16,
            recorder,
        )
        follower.probe_seconds = 0.1
        follower.probe_timeout = 0.3
        await follower.start()
        try:
            assert recorder.events == ["lost", "synced"]
            await asyncio.sleep(0.3)  # a few probes answered: still synced
            assert recorder.events == ["lost", "synced"]
            proxy.flowing.clear()  # the partition: nothing answers, nothing is closed
            for _ in range(100):
                if recorder.events[-1] == "lost":
                    break
                await asyncio.sleep(0.01)
            assert recorder.events[-1] == "lost"
            proxy.flowing.set()  # the network heals: it listens again
            for _ in range(300):
                if recorder.events[-1] == "synced":
                    break
                await asyncio.sleep(0.01)
            assert recorder.events[-1] == "synced"
        finally:
            await follower.close()


def test_channel_names() -> None:
    assert channel_for("public") == "native1api_key_changes"
    assert channel_for("vault") == "native1api_key_changes:vault"
    long = channel_for("s" * 63)
    assert long.startswith("native1api_key_changes:")
    assert len(long.encode()) <= 63
    assert long != channel_for("s" * 62 + "t")
