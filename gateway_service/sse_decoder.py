"""An incremental decoder for `text/event-stream` bodies (server-sent events).

It follows the WHATWG HTML standard's event-stream interpretation rules:

- lines end with CR, LF or CRLF, also when the CR ends one network chunk and its LF starts the
  next (that LF must not count as a second, empty line);
- a UTF-8 byte order mark at the very start of the stream is dropped;
- a line starting with ``:`` is a comment; a line without a colon is a field name with an empty
  value; after the colon, one leading space is removed from the value (only one);
- ``data`` values are joined with ``\\n``; ``event`` sets the type (``message`` when absent);
  ``id`` sets the last event id, which carries over to later events, unless the value contains
  NUL; ``retry`` is kept only when it is ASCII digits; any other field is ignored;
- a blank line dispatches the event, but only if at least one ``data`` field was seen (a block
  of only ``event:``/``id:`` lines dispatches nothing);
- bytes are decoded as UTF-8 with replacement characters for invalid sequences.

**A final event without its blank line** (the body ends right after ``data: x\\n``, or in the
middle of a line) is discarded, as the standard says for an incomplete event at end of stream.
The gateway relies on this: a stream whose ``data: [DONE]`` is not followed by the blank line is
treated like any other body that ended before ``[DONE]`` (an interrupted answer), which is what
the gateway did before this decoder existed. `SSEDecoder.pending` tells whether such a partial
event was left over.

The decoder works on bytes and splits lines before decoding, so a multi-byte character split
across network chunks is reassembled before it is decoded (CR and LF are ASCII and never occur
inside a UTF-8 sequence). Only each event's data (and the rare `event`/`id` values) is decoded:
one `bytes.decode` per event. This is on the per-chunk hot path of every streamed answer.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_LINE_BYTES", "EventStreamError", "SSEDecoder", "ServerSentEvent"]

#: A line (or a line plus what is buffered of it) longer than this ends the stream with
#: `EventStreamError` instead of growing without bound. No provider frame comes near it.
MAX_LINE_BYTES: Final = 8 * 1024 * 1024

_BOM: Final = b"\xef\xbb\xbf"
_LF: Final = b"\n"
_CR: Final = b"\r"
_DATA_PREFIX: Final = b"data: "
_COLON: Final = 0x3A  # ord(":")


class EventStreamError(ValueError):
    """The body cannot be read as an event stream (a line over `MAX_LINE_BYTES`)."""


class ServerSentEvent:
    """One dispatched event: its type, its data, and the last event id at dispatch time."""

    __slots__ = ("data", "event", "id")

    def __init__(self, data: str, event: str = "message", id: str = "") -> None:
        self.data = data
        self.event = event
        self.id = id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return (self.data, self.event, self.id) == (other.data, other.event, other.id)

    def __hash__(self) -> int:
        return hash((self.data, self.event, self.id))

    def __repr__(self) -> str:
        return f"ServerSentEvent(data={self.data!r}, event={self.event!r}, id={self.id!r})"


class SSEDecoder:
    """Feed it the body's bytes as they arrive; it returns the events each chunk completes."""

    __slots__ = (
        "_at_start",
        "_data",
        "_event",
        "_last_id",
        "_partial",
        "_partial_size",
        "_skip_lf",
        "retry",
    )

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # the current line so far (no line end seen yet)
        self._partial_size = 0
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF belongs to it
        self._at_start = True  # no line completed yet (where a BOM may stand)
        self._data: list[bytes] | None = None  # None: no `data` field in this event yet
        self._event = b""
        self._last_id = ""
        #: The last valid `retry` value (milliseconds), for callers that reconnect.
        self.retry: int | None = None

    @property
    def pending(self) -> bool:
        """Whether anything of an event (a line, or fields without their blank line) is left."""
        return bool(self._partial) or self._data is not None or bool(self._event)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode the next bytes of the body; returns the events they complete, in order."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        has_cr = _CR in chunk
        if not has_cr and _LF not in chunk:
            # No line ends yet: keep the piece (a list, so long lines are not copied again and
            # again as they grow).
            self._partial.append(chunk)
            self._partial_size += len(chunk)
            if self._partial_size > MAX_LINE_BYTES:
                raise EventStreamError("an event-stream line is too long")
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
        if has_cr:
            if chunk[-1] == 0x0D:
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", _LF).replace(_CR, _LF)
        lines = chunk.split(_LF)
        rest = lines.pop()  # after the last line end: the start of a line not complete yet
        if rest:
            if len(rest) > MAX_LINE_BYTES:
                raise EventStreamError("an event-stream line is too long")
            self._partial.append(rest)
            self._partial_size = len(rest)
        if self._at_start:
            self._at_start = False
            if lines[0].startswith(_BOM):
                lines[0] = lines[0][3:]
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data is not None:
                    events.append(self._dispatch(data))
                    data = None
                self._event = b""
                continue
            # The hot path: `data: <payload>`.
            if line.startswith(_DATA_PREFIX):
                if data is None:
                    data = [line[6:]]
                else:
                    data.append(line[6:])
                continue
            if line[0] == _COLON:
                continue  # a comment (keep-alives such as `: OPENROUTER PROCESSING`)
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                if data is None:
                    data = [value]
                else:
                    data.append(value)
            elif name == b"event":
                self._event = value
            elif name == b"id":
                if b"\0" not in value:
                    self._last_id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                # ASCII digits only (bytes.isdigit is ASCII-only); anything else is ignored.
                self.retry = int(value)
        self._data = data
        return events

    def _dispatch(self, data: list[bytes]) -> ServerSentEvent:
        raw = data[0] if len(data) == 1 else b"\n".join(data)
        event = self._event.decode("utf-8", "replace") if self._event else "message"
        return ServerSentEvent(raw.decode("utf-8", "replace"), event, self._last_id)
