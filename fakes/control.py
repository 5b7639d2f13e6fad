"""The test-facing control object of a fake upstream: scripted behaviours and observations.

Every fake app carries one `FakeControl` (``app.control``). Tests use it to

- script the next request(s): ``control.fail_next(503, retry_after=1)``, ``control.cut_next(3)``,
  ``control.delay_next(first=2.0)``, or the general ``control.push(Behavior(...), times=2)``;
- change defaults at run time: ``control.defaults = Behavior(chunks=20, chunk_delay=0.01)``;
- observe: ``control.requests`` (method, path, headers, parsed JSON body, outcome),
  ``control.count(path)``, ``control.disconnects`` and ``await control.wait_for_disconnect()``.

The fake usually runs in a background thread (see `fakes.server`) while the test runs in the main
thread, so all shared state is guarded by one lock and waiting is done by polling or a Condition,
never by an asyncio primitive bound to the server's loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fakes.behavior import Behavior

__all__ = ["DisconnectEvent", "FakeControl", "Outcome", "RequestRecord"]

Outcome = Literal["pending", "completed", "cut", "disconnected", "error_frame"]
Scope = Literal["chat", "any"]


@dataclass(slots=True)
class RequestRecord:
    """One request as the fake saw it. Headers are lower-cased; `body` is the parsed JSON or None."""

    seq: int
    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    received_at: float = field(default_factory=time.monotonic)
    status: int | None = None
    behavior: Behavior | None = None
    outcome: Outcome = "pending"
    # Provider-specific observations, e.g. {"max_tokens_defaulted": True} or OpenRouter
    # attribution headers; see each fake's module docstring.
    notes: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """Return one request header by case-insensitive name."""
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class DisconnectEvent:
    """The client went away before the response finished (seen as ASGI ``http.disconnect``)."""

    seq: int
    path: str
    phase: Literal["before_headers", "streaming"]
    content_chunks_sent: int
    at: float  # time.monotonic() when the fake noticed
    elapsed: float  # seconds since the request arrived


@dataclass(slots=True)
class _Queued:
    behavior: Behavior
    remaining: int
    scope: Scope


class _Observer:
    """Bridges `fakes.wire.Reply` callbacks to the record and the control's event list."""

    __slots__ = ("_control", "_record")

    def __init__(self, control: FakeControl, record: RequestRecord) -> None:
        self._control = control
        self._record = record

    def on_complete(self) -> None:
        if self._record.outcome == "pending":
            self._record.outcome = "completed"

    def on_error_frame(self) -> None:
        self._record.outcome = "error_frame"

    def on_cut(self, content_chunks: int) -> None:
        self._record.outcome = "cut"
        self._record.notes["cut_after_chunks"] = content_chunks

    def on_disconnect(
        self, phase: Literal["before_headers", "streaming"], content_chunks: int
    ) -> None:
        self._record.outcome = "disconnected"
        now = time.monotonic()
        event = DisconnectEvent(
            seq=self._record.seq,
            path=self._record.path,
            phase=phase,
            content_chunks_sent=content_chunks,
            at=now,
            elapsed=now - self._record.received_at,
        )
        self._control._add_disconnect(event)


class FakeControl:
    """Scripted behaviour plus a record of everything a fake upstream saw."""

    def __init__(self, defaults: Behavior | None = None, *, record_limit: int = 10_000) -> None:
        #: Lowest-priority behaviour layer (chunk count, chunk delay, ...). Replace it freely.
        self.defaults: Behavior = defaults or Behavior()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[_Queued] = deque()
        # Bounded so a long benchmark run against the fake does not grow memory without limit.
        self._records: deque[RequestRecord] = deque(maxlen=record_limit)
        self._counts: Counter[str] = Counter()
        self._disconnects: list[DisconnectEvent] = []
        self._marker_hits: Counter[str] = Counter()
        self._seq = itertools.count(1)

    # ---- scripting -------------------------------------------------------------------------

    def push(
        self,
        behavior: Behavior | None = None,
        *,
        times: int = 1,
        scope: Scope = "chat",
        **fields: Any,
    ) -> None:
        """Queue a behaviour for the next `times` requests.

        `scope="chat"` (default) applies it to completion requests only; `scope="any"` also to
        model listings and key checks. Keyword fields are a shortcut: ``push(status=503)``.
        """
        merged = (behavior or Behavior()).merged(Behavior(**fields) if fields else None)
        with self._lock:
            self._queue.append(_Queued(merged, times, scope))

    def fail_next(
        self,
        status: int,
        *,
        retry_after: float | None = None,
        code: int | str | None = None,
        text: bool | None = None,
        times: int = 1,
        scope: Scope = "chat",
    ) -> None:
        """The next request(s) get `status` with the provider's error body (and ``Retry-After``)."""
        self.push(
            Behavior(status=status, retry_after=retry_after, code=code, text=text),
            times=times,
            scope=scope,
        )

    def cut_next(self, after: int, *, times: int = 1) -> None:
        """The next request(s) have their TCP connection closed after `after` content chunks."""
        self.push(Behavior(cut_after=after), times=times)

    def error_next(self, after: int, *, times: int = 1) -> None:
        """The next request(s) get the provider's mid-stream error frame after `after` chunks."""
        self.push(Behavior(error_after=after), times=times)

    def delay_next(
        self, *, first: float | None = None, chunk: float | None = None, times: int = 1
    ) -> None:
        """The next request(s) wait `first` seconds before the first byte and `chunk` between chunks."""
        self.push(Behavior(delay_first=first, chunk_delay=chunk), times=times)

    def clear_queue(self) -> None:
        """Drop every queued behaviour."""
        with self._lock:
            self._queue.clear()

    def reset(self) -> None:
        """Forget queued behaviours, records, counters and disconnect events (not the defaults)."""
        with self._lock:
            self._queue.clear()
            self._records.clear()
            self._counts.clear()
            self._disconnects.clear()
            self._marker_hits.clear()

    # ---- observations ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._records)

    def requests_to(self, path_part: str) -> list[RequestRecord]:
        """Recorded requests whose path contains `path_part`."""
        return [r for r in self.requests if path_part in r.path]

    @property
    def last(self) -> RequestRecord:
        """The most recent request (IndexError if none)."""
        with self._lock:
            return self._records[-1]

    @property
    def counts(self) -> dict[str, int]:
        """Snapshot of the per-path request counter (never truncated by `record_limit`)."""
        with self._lock:
            return dict(self._counts)

    def count(self, path: str | None = None) -> int:
        """Requests seen for exactly `path`, or in total when `path` is None."""
        with self._lock:
            return self._counts[path] if path is not None else sum(self._counts.values())

    @property
    def disconnects(self) -> list[DisconnectEvent]:
        """Snapshot of the client-disconnect events."""
        with self._lock:
            return list(self._disconnects)

    def wait_for_disconnect_sync(self, within: float = 1.0, *, count: int = 1) -> DisconnectEvent:
        """Block until at least `count` disconnects were seen; return the latest.

        Raises TimeoutError. Use from sync code or threads; in async tests use
        `wait_for_disconnect`, which does not block the event loop.
        """
        deadline = time.monotonic() + within
        with self._changed:
            while len(self._disconnects) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"fake saw {len(self._disconnects)} disconnect(s), wanted {count}"
                    )
                self._changed.wait(left)
            return self._disconnects[-1]

    async def wait_for_disconnect(self, within: float = 1.0, *, count: int = 1) -> DisconnectEvent:
        """Async version of `wait_for_disconnect_sync`: wait up to `within` seconds.

        Polls every 10 ms, which is safe whichever thread or loop the fake runs on.
        """
        deadline = time.monotonic() + within
        while True:
            with self._lock:
                if len(self._disconnects) >= count:
                    return self._disconnects[-1]
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"fake saw {len(self.disconnects)} disconnect(s), wanted {count}"
                )
            await asyncio.sleep(0.01)

    # ---- used by the fake apps -------------------------------------------------------------

    def record(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        raw_body: bytes,
        body: Any,
    ) -> RequestRecord:
        """Create, store and count a record for an incoming request."""
        rec = RequestRecord(next(self._seq), method, path, query, dict(headers), raw_body, body)
        with self._lock:
            self._records.append(rec)
            self._counts[path] += 1
        return rec

    def resolve(self, marker: Behavior | None, *, chat: bool, marker_text: str = "") -> Behavior:
        """Defaults, then the next matching queued behaviour (consumed), then the marker.

        A marker with ``times=N`` only counts for the first N requests carrying `marker_text`.
        """
        queued: Behavior | None = None
        with self._lock:
            if marker is not None and marker.times is not None:
                seen = self._marker_hits[marker_text]
                self._marker_hits[marker_text] = seen + 1
                if seen >= marker.times:
                    marker = None
            for entry in self._queue:
                if chat or entry.scope == "any":
                    queued = entry.behavior
                    entry.remaining -= 1
                    if entry.remaining <= 0:
                        self._queue.remove(entry)
                    break
        return self.defaults.merged(queued).merged(marker)

    def observer(self, record: RequestRecord) -> _Observer:
        """Callbacks that a `fakes.wire.Reply` uses to report how the response ended."""
        return _Observer(self, record)

    def _add_disconnect(self, event: DisconnectEvent) -> None:
        with self._changed:
            self._disconnects.append(event)
            self._changed.notify_all()
