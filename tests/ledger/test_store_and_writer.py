"""The store (both backends) and the writer: batches, rollups, retries, outages, shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from psycopg.conninfo import conninfo_to_dict

from gateway_service.ledger import (
    PriceTable,
    UsageLedger,
    UsageUnavailable,
    entry_from_record,
    open_usage_store,
    sqlite_store,
)
from gateway_service.ledger.settings import SHIPPED_PRICES
from gateway_service.request_log import RequestRecord
from native1api.gateway.v1 import chat_pb2
from tests.ledger.support import read_all

LLAMA = "@cf/meta/llama-3.2-3b-instruct"
DAY = dt.date(2026, 11, 3)
NOON = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC).timestamp()


def record(uid: str, n: int, *, provider: str = "workers-ai", model: str = LLAMA) -> RequestRecord:
    r = RequestRecord(f"r-{uid}-{n}", uid, "CreateChatCompletion", model=LLAMA, provider=provider)
    r.routed(model, provider != "workers-ai", 30)
    r.usage = chat_pb2.Usage(prompt_tokens=10 + n, completion_tokens=n, total_tokens=10 + 2 * n)
    return r


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def written(registry: CollectorRegistry, count: int, within: float) -> None:
    for _ in range(int(within / 0.02)):
        if sample(registry, "native1api_gateway_usage_records_written_total") >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} records were not written within {within} s")


async def test_records_rollups_and_history(usage_url: str) -> None:
    prices = PriceTable.load(SHIPPED_PRICES)
    store = await open_usage_store(usage_url)
    try:
        entries = [entry_from_record(record("u1", n), NOON + n, prices) for n in range(5)]
        entries.append(entry_from_record(record("u1", 9, model="@cf/x/unpriced"), NOON, prices))
        entries.append(entry_from_record(record("u2", 1), NOON, prices))
        assert await store.write(entries[:4]) == 4
        # A batch retried after an ambiguous failure: the stored part is not counted twice.
        assert await store.write(entries) == 3
        rows = await store.history("u1", DAY, DAY)
        assert [(r.day, r.provider, r.model) for r in rows] == [
            (DAY, "workers-ai", "@cf/meta/llama-3.2-3b-instruct"),
            (DAY, "workers-ai", "@cf/x/unpriced"),
        ]
        priced, unpriced = rows
        assert (priced.requests, priced.prompt_tokens, priced.completion_tokens) == (5, 60, 10)
        assert priced.total_tokens == 70
        assert priced.cost_usd == pytest.approx(sum(e.cost_usd or 0 for e in entries[:5]))
        assert (priced.unpriced_requests, unpriced.unpriced_requests) == (0, 1)
        assert unpriced.cost_usd is None  # never a guess, not even 0
        assert (
            await store.history("u1", DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=9)) == []
        )
        # Export pages by id, filtered by user.
        page = await store.export(DAY, DAY, "u1", 0, 4)
        assert [e.request_id for _, e in page] == [f"r-u1-{n}" for n in range(4)]
        rest = await store.export(DAY, DAY, "u1", page[-1][0], 100)
        assert [e.request_id for _, e in rest] == ["r-u1-4", "r-u1-9"]
        assert rest[0][1] == entries[4]  # what was written comes back as it was
        assert [e.uid for _, e in await store.export(DAY, DAY, None, 0, 100)].count("u2") == 1
    finally:
        await store.aclose()


async def test_the_writer_batches_and_flushes_within_the_interval(usage_url: str) -> None:
    registry = CollectorRegistry()
    store = await open_usage_store(usage_url)
    ledger = UsageLedger(store, PriceTable(), registry, batch_size=50, flush_seconds=0.3)
    ledger.start()
    for n in range(120):
        ledger.record(record("w1", n))
    await written(registry, 120, within=5)
    ledger.record(record("w1", 500))
    started = time.monotonic()
    await written(registry, 121, within=5)
    assert time.monotonic() - started < 1.0  # a lone record waits at most about a flush interval
    await ledger.aclose()
    assert len(await read_all(usage_url, dt.date(2000, 1, 1), dt.date(2100, 1, 1))) == 121


async def test_shutdown_writes_everything_queued(usage_url: str) -> None:
    registry = CollectorRegistry()
    store = await open_usage_store(usage_url)
    ledger = UsageLedger(store, PriceTable(), registry, batch_size=100, flush_seconds=60)
    ledger.start()
    for n in range(1000):
        ledger.record(record("s1", n))
    await ledger.aclose()  # the flush interval never came: the close writes all of it
    assert len(await read_all(usage_url, dt.date(2000, 1, 1), dt.date(2100, 1, 1))) == 1000
    assert (
        sample(registry, "native1api_gateway_usage_records_dropped_total", reason="shutdown") == 0
    )


class Relay:
    """A TCP relay to PostgreSQL owned by the test: `stop` is the database going away (every
    connection dropped, nothing listening), `start` its return on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            task = asyncio.get_running_loop().create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


async def test_records_arrive_after_postgres_comes_back(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    params = conninfo_to_dict(postgres_url)
    relay = Relay(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    await relay.start()
    host = f"{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}"
    assert host in postgres_url
    url = postgres_url.replace(host, f"127.0.0.1:{relay.port}", 1) + "&connect_timeout=2"
    registry = CollectorRegistry()
    ledger = UsageLedger(await open_usage_store(url), PriceTable(), registry, flush_seconds=0.1)
    ledger.start()
    try:
        ledger.record(record("o1", 0))
        assert await ledger.flushed(within=5)
        await relay.stop()  # PostgreSQL is gone
        enqueue_times = []
        for n in range(1, 301):
            started = time.perf_counter()
            ledger.record(record("o1", n))
            enqueue_times.append(time.perf_counter() - started)
        assert max(enqueue_times) < 0.005  # the request path never waits for the database
        await asyncio.sleep(1.0)
        assert sample(registry, "native1api_gateway_usage_write_errors_total") >= 1
        assert sample(registry, "native1api_gateway_usage_queue_depth") == 300
        assert any("usage database unavailable" in r.getMessage() for r in caplog.records)
        await relay.start()  # it is back
        assert await ledger.flushed(within=10)
    finally:
        await ledger.aclose()
        await relay.stop()
    entries = await read_all(postgres_url, dt.date(2000, 1, 1), dt.date(2100, 1, 1))
    assert sorted(e.request_id for e in entries) == sorted(f"r-o1-{n}" for n in range(301))
    dropped = sample(
        registry, "native1api_gateway_usage_records_dropped_total", reason="queue_full"
    )
    assert dropped == 0


class DownStore:
    """A database that refuses every write at once."""

    def __init__(self) -> None:
        self.attempts = 0

    async def write(self, entries: object) -> int:
        self.attempts += 1
        raise UsageUnavailable("the usage database is down (test)")

    async def history(self, *args: object) -> list[object]:
        return []

    async def export(self, *args: object) -> list[object]:
        return []

    async def prune(self, *args: object) -> int:
        return 0

    async def aclose(self) -> None:
        pass


async def test_a_failing_database_is_retried_with_backoff_under_traffic() -> None:
    store = DownStore()
    ledger = UsageLedger(
        store,  # type: ignore[arg-type]
        PriceTable(),
        CollectorRegistry(),
        batch_size=5,
        flush_seconds=0.05,
        shutdown_flush_seconds=0.1,
    )
    ledger.start()
    for n in range(150):  # 1.5 s of traffic, each record waking the writer
        ledger.record(record("b1", n))
        await asyncio.sleep(0.01)
    # Waits of 0.05, 0.1, 0.2, 0.4, 0.8 s: a handful of attempts, not one per record.
    assert 3 <= store.attempts <= 8
    await ledger.aclose()


async def test_a_full_queue_drops_counted_and_logged_never_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    ledger = UsageLedger(
        DownStore(),  # type: ignore[arg-type]
        PriceTable(),
        registry,
        queue_max=50,
        batch_size=10,
        flush_seconds=0.05,
        shutdown_flush_seconds=0.3,
    )
    ledger.start()
    for n in range(100):
        ledger.record(record("q1", n))
    await asyncio.sleep(0.3)
    # The queue held 50; the writer took a batch of 10 out of it, so 10 more found room.
    full = sample(registry, "native1api_gateway_usage_records_dropped_total", reason="queue_full")
    assert 40 <= full <= 50
    assert any(
        r.levelno == logging.ERROR and "records lost (queue_full)" in r.getMessage()
        for r in caplog.records
    )
    await ledger.aclose()
    lost = sample(registry, "native1api_gateway_usage_records_dropped_total", reason="shutdown")
    assert full + lost == 100  # every record is either written or counted lost


class _Recording:
    """A SQLite connection that remembers every statement text it was given."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.texts: set[str] = set()

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.texts.add(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self.texts.add(sql)
        return self._conn.executemany(sql, rows)


def test_batches_of_any_size_share_their_statement_texts(tmp_path: Path) -> None:
    """Each distinct text is a prepared statement in the connection's cache: one per batch size
    made the gateway's memory grow with every new size (the soak caught it)."""
    prices = PriceTable.load(SHIPPED_PRICES)
    conn = sqlite_store._connect(str(tmp_path / "usage.db"))
    recording = _Recording(conn)
    try:
        written_total = 0
        for size in (1, 2, 7, 33, 120, 499, 500, 501):
            batch = [entry_from_record(record(f"s{size}", n), NOON, prices) for n in range(size)]
            written_total += sqlite_store._write(cast(sqlite3.Connection, recording), batch)
    finally:
        conn.close()
    assert written_total == sum((1, 2, 7, 33, 120, 499, 500, 501))
    # BEGIN, COMMIT, the duplicate check, the insert and the rollup upsert: nothing per size.
    assert len(recording.texts) == 5, sorted(t[:60] for t in recording.texts)
