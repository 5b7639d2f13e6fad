"""The event-stream decoder against the WHATWG event-stream parsing rules, chunk splits included."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_service.sse_decoder import (
    MAX_LINE_BYTES,
    EventStreamError,
    ServerSentEvent,
    SSEDecoder,
)


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def datas(*chunks: bytes) -> list[str]:
    return [event.data for event in decode(*chunks)]


E = ServerSentEvent


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        # Line ends: LF, CRLF and CR alone, also mixed.
        (b"data: a\n\n", [E("a")]),
        (b"data: a\r\n\r\n", [E("a")]),
        (b"data: a\r\r", [E("a")]),
        (b"data: a\r\n\ndata: b\r\rdata: c\n\r\n", [E("a"), E("b"), E("c")]),
        # Comments, including keep-alives between events.
        (b": OPENROUTER PROCESSING\n\ndata: a\n\n", [E("a")]),
        (b":\n:comment\ndata: a\n: in the middle\n\n", [E("a")]),
        # Only one leading space is removed; no space is fine too.
        (b"data:a\n\n", [E("a")]),
        (b"data:  a\n\n", [E(" a")]),
        (b"data: a \n\n", [E("a ")]),
        # A field without a colon: the whole line is the name, the value is empty.
        (b"data\n\n", [E("")]),
        (b"data\ndata\n\n", [E("\n")]),
        # Multi-line data is joined with LF.
        (b"data: a\ndata: b\ndata:\n\n", [E("a\nb\n")]),
        (b'data: {\ndata:  "x": 1}\n\n', [E('{\n "x": 1}')]),
        # Event types.
        (b"event: ping\ndata: a\n\ndata: b\n\n", [E("a", "ping"), E("b")]),
        (b"event:\ndata: a\n\n", [E("a")]),
        # No data field: nothing is dispatched (and the type does not leak to the next event).
        (b"event: x\n\ndata: a\n\n", [E("a")]),
        (b"id: 1\n\n\n\n", []),
        (b"\n\n\n", []),
        # Ids carry over to later events; an id with NUL is ignored; an empty id resets it.
        (b"id: 1\ndata: a\n\ndata: b\n\n", [E("a", id="1"), E("b", id="1")]),
        (b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", [E("a", id="1"), E("b", id="1")]),
        (b"id: 1\ndata: a\n\nid\ndata: b\n\n", [E("a", id="1"), E("b", id="")]),
        # Unknown fields are ignored; field names are case-sensitive.
        (b"foo: bar\nData: x\ndata: a\n\n", [E("a")]),
        # A BOM at the start is dropped; later ones are data.
        (b"\xef\xbb\xbfdata: a\n\n", [E("a")]),
        (b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n", []),  # the second BOM makes an unknown field
        (b"data: \xef\xbb\xbfa\n\n", [E("\ufeffa")]),
        # UTF-8, and replacement characters for invalid bytes.
        ("data: żółw 🐢\n\n".encode(), [E("żółw 🐢")]),
        (b"data: a\xffb\n\n", [E("a\ufffdb")]),
        # A final event without its blank line is discarded (end of stream mid-event).
        (b"data: a\n\ndata: [DONE]\n", [E("a")]),
        (b"data: a\n\ndata: [DONE]", [E("a")]),
        (b"data: [DONE]\r", []),
    ],
)
def test_rules(stream: bytes, expected: list[ServerSentEvent]) -> None:
    assert decode(stream) == expected
    # Byte by byte: the same events.
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == expected


def test_cr_at_the_end_of_a_chunk_then_lf() -> None:
    # CRLF split across two network chunks is one line end, not a line end and a blank line.
    assert datas(b"data: a\r", b"\ndata: b\r\n\r\n") == ["a\nb"]
    assert datas(b"data: a\r", b"\n", b"\r", b"\n") == ["a"]
    # A CR then an empty chunk then the LF.
    assert datas(b"data: a\r", b"", b"\n\r\n") == ["a"]
    # A CR that is not followed by LF still ends its line.
    assert datas(b"data: a\r", b"data: b\r\r") == ["a\nb"]


def test_multibyte_character_split_across_chunks() -> None:
    raw = "data: 🐢ż\n\n".encode()
    for cut in range(len(raw)):
        assert datas(raw[:cut], raw[cut:]) == ["🐢ż"]


def test_retry_takes_ascii_digits_only() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"retry: 1500\n\n")
    assert decoder.retry == 1500
    for bad in (b"retry: 15x\n", b"retry: -1\n", b"retry: +2\n", b"retry: \xd9\xa3\n", b"retry:\n"):
        decoder.feed(bad)
        assert decoder.retry == 1500


def test_pending_tells_an_unfinished_event() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\n")
    assert not decoder.pending
    decoder.feed(b"data: [DONE]\n")
    assert decoder.pending
    decoder.feed(b"\n")
    assert not decoder.pending
    decoder.feed(b"data: x")
    assert decoder.pending


def test_a_line_without_end_is_bounded() -> None:
    decoder = SSEDecoder()
    piece = b"x" * (1024 * 1024)
    for _ in range(MAX_LINE_BYTES // len(piece)):
        decoder.feed(piece)  # up to the limit: kept
    with pytest.raises(EventStreamError):
        decoder.feed(piece)


# ---- any split of a stream gives the same events ---------------------------------------------

_LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])
_VALUES = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=12
).map(str.encode)
_LINES = st.one_of(
    st.tuples(st.just(b"data: "), _VALUES),
    st.tuples(st.just(b"data:"), _VALUES),
    st.tuples(st.just(b"data"), st.just(b"")),
    st.tuples(st.just(b"event: "), _VALUES),
    st.tuples(st.just(b"id: "), _VALUES),
    st.tuples(st.just(b"retry: "), st.integers(0, 10_000).map(lambda n: str(n).encode())),
    st.tuples(st.just(b": "), _VALUES),
    st.tuples(st.just(b""), st.just(b"")),  # a blank line: dispatch
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_LINES, _LINE_ENDS), max_size=30))
    body = b"".join(name + value + end for (name, value), end in lines)
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    return body


@settings(max_examples=300, deadline=None)
@given(streams(), st.data())
def test_any_split_gives_the_same_events(stream: bytes, data: st.DataObject) -> None:
    whole = SSEDecoder()
    expected = whole.feed(stream)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    split = SSEDecoder()
    got = [event for piece in pieces for event in split.feed(piece)]
    assert got == expected
    assert split.retry == whole.retry
    # And byte by byte.
    single = SSEDecoder()
    assert [e for i in range(len(stream)) for e in single.feed(stream[i : i + 1])] == expected


@settings(max_examples=200, deadline=None)
@given(streams())
def test_matches_a_reference_reading_of_the_rules(stream: bytes) -> None:
    assert SSEDecoder().feed(stream) == _reference(stream)


def _reference(stream: bytes) -> list[ServerSentEvent]:
    """A direct, slow transcription of the standard's algorithm, for comparison."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\r":
            lines.append(current)
            current = ""
            if i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
        elif ch == "\n":
            lines.append(current)
            current = ""
        else:
            current += ch
        i += 1
    events: list[ServerSentEvent] = []
    data = ""
    event_type = ""
    last_id = ""
    for line in lines:
        if line == "":
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append(ServerSentEvent(data, event_type or "message", last_id))
            data = ""
            event_type = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id" and "\0" not in value:
            last_id = value
    return events
