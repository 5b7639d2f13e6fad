"""The ledger's writer: the request path enqueues, a background task writes in batches.

`UsageLedger.record` is all a completion pays: an O(1) append to a bounded in-memory queue, never
a wait. The writer task wakes every `flush_seconds` (or as soon as a batch is full), turns the
queued records into ledger rows (tokens, estimate, cost) and writes up to `batch_size` of them per
transaction.

When the database fails, the writer keeps the batch it holds and retries it after
`flush_seconds`, doubling up to RETRY_MAX_SECONDS while it keeps failing; meanwhile the queue keeps accepting records up to `queue_max`, and records that
find it full are dropped. On shutdown (`aclose`, after the server has drained) everything queued
is written within `shutdown_flush_seconds`; what cannot be is dropped. Every drop is counted in
`native1api_gateway_usage_records_dropped_total{reason}` and logged (at most once a minute):
never silent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway_service.ledger.entry import LedgerEntry, entry_from_record
from gateway_service.ledger.prices import PriceTable
from gateway_service.ledger.store import UsageStore, UsageUnavailable
from gateway_service.request_log import RequestRecord

_LOGGER: Final = logging.getLogger(__name__)
_LOG_EVERY_SECONDS: Final = 60.0
# The longest wait between two attempts while the database is failing.
RETRY_MAX_SECONDS: Final = 5.0
# Rows built between two yields to the event loop: about 0.5 ms of work.
_BUILD_SLICE: Final = 100


class LedgerMetrics:
    """The ledger's series, in the gateway's registry. No user ids in any label."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "native1api_gateway_usage_records_written",
            "Usage ledger records written to the usage database.",
            registry=registry,
        )
        self.dropped = Counter(
            "native1api_gateway_usage_records_dropped",
            "Usage ledger records lost, by reason: queue_full (the database was down for too "
            "long), shutdown (not written before the gateway stopped).",
            ["reason"],
            registry=registry,
        )
        self.write_errors = Counter(
            "native1api_gateway_usage_write_errors",
            "Failed batch writes to the usage database (each is retried).",
            registry=registry,
        )
        self.queued = Gauge(
            "native1api_gateway_usage_queue_depth",
            "Usage ledger records waiting to be written.",
            registry=registry,
        )
        for reason in ("queue_full", "shutdown"):  # present at 0 for alerts
            self.dropped.labels(reason)


class UsageLedger:
    """Takes finished completions on the request path; writes them off it (see module doc)."""

    def __init__(
        self,
        store: UsageStore,
        prices: PriceTable,
        registry: CollectorRegistry,
        *,
        queue_max: int = 100_000,
        batch_size: int = 500,
        flush_seconds: float = 1.0,
        shutdown_flush_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.prices = prices
        self.metrics = LedgerMetrics(registry)
        self.metrics.queued.set_function(lambda: len(self._queue) + len(self._batch))
        self._queue: collections.deque[tuple[float, RequestRecord]] = collections.deque()
        self._queue_max = queue_max
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._shutdown_flush_seconds = shutdown_flush_seconds
        self._batch: list[LedgerEntry] = []  # taken from the queue, not yet written
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._enqueued = 0  # records accepted so far
        self._done = 0  # of those, written or dropped
        self._task: asyncio.Task[None] | None = None
        self._last_logged: dict[str, float] = {}
        self._failures = 0  # failed writes in a row

    # -- the request path ------------------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        """Queue a finished completion. Never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self._queue_max:
            self._drop("queue_full", 1)
            return
        queue.append((time.time(), record))
        self._enqueued += 1
        if len(queue) >= self._batch_size:
            self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (call on the serving loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Write what is queued (for up to `shutdown_flush_seconds`), then close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with asyncio.timeout(self._shutdown_flush_seconds):
                while self._queue or self._batch:
                    if not await self._write_batch():
                        await asyncio.sleep(min(0.5, self._flush_seconds))
        except TimeoutError:
            pass
        lost = len(self._queue) + len(self._batch)
        if lost:
            self._queue.clear()
            self._batch = []
            self._drop("shutdown", lost)
        await self.store.aclose()

    async def flushed(self, within: float) -> bool:
        """Wait until every record queued before this call is written (or dropped); False if
        that takes longer than `within` seconds. For readers who want their latest completions."""
        target = self._enqueued
        deadline = time.monotonic() + within
        while self._done < target:
            self._wake.set()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            progress = self._progress
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await progress.wait()
        return True

    # -- the writer ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_seconds):
                    await self._wake.wait()
            self._wake.clear()
            while self._queue or self._batch:
                if not await self._write_batch():
                    # Back off (the queue keeps filling meanwhile): busy traffic keeps waking the
                    # writer, and a database that refuses at once must not be hammered.
                    await asyncio.sleep(self._retry_delay())
                    break
                if len(self._queue) < self._batch_size and not self._wake.is_set():
                    break  # a partial batch: wait for the next tick to gather more

    def _retry_delay(self) -> float:
        """`flush_seconds`, doubling with each failure in a row, at most RETRY_MAX_SECONDS."""
        doubled: float = self._flush_seconds * 2.0 ** min(self._failures - 1, 10)
        return min(doubled, max(RETRY_MAX_SECONDS, self._flush_seconds))

    async def _take(self) -> None:
        """Fill the batch from the queue (the rows are built here, off the request path)."""
        queue, prices = self._queue, self.prices
        while queue and len(self._batch) < self._batch_size:
            if len(self._batch) % _BUILD_SLICE == _BUILD_SLICE - 1:
                await asyncio.sleep(0)  # let requests run between slices of a large batch
            ended_at, record = queue.popleft()
            try:
                self._batch.append(entry_from_record(record, ended_at, prices))
            except Exception:  # a bug must not stop the ledger; the record is counted lost
                _LOGGER.exception("could not build a usage ledger record")
                self._drop("invalid", 1)

    async def _write_batch(self) -> bool:
        """Write one batch; False when the database failed (the batch is kept)."""
        await self._take()
        batch = self._batch
        if not batch:
            return True
        try:
            await self.store.write(batch)
        except UsageUnavailable as exc:
            self.metrics.write_errors.inc()
            self._failures += 1
            self._log_every_minute(
                "write",
                "usage database unavailable (%s); %d records waiting, newer ones are dropped "
                "past %d (native1api_gateway_usage_records_dropped_total)",
                exc,
                len(self._queue) + len(batch),
                self._queue_max,
            )
            return False
        self._batch = []
        self.metrics.written.inc(len(batch))
        self._finished(len(batch))
        if self._failures:
            self._failures = 0
            _LOGGER.info("usage database reachable again; writing the queued records")
        return True

    def _drop(self, reason: str, count: int) -> None:
        self.metrics.dropped.labels(reason).inc(count)
        if reason != "queue_full":
            self._finished(count)
        self._log_every_minute(
            f"drop:{reason}",
            "usage ledger: %d records lost (%s); counted in "
            "native1api_gateway_usage_records_dropped_total",
            count,
            reason,
        )

    def _finished(self, count: int) -> None:
        self._done += count
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _log_every_minute(self, key: str, message: str, *args: object) -> None:
        """At most one line a minute per kind: a dead database must not flood the log."""
        now = time.monotonic()
        if now - self._last_logged.get(key, -math.inf) < _LOG_EVERY_SECONDS:
            return
        self._last_logged[key] = now
        _LOGGER.error(message, *args)
