"""Per-request behaviour of a fake upstream: faults, timing knobs and the marker syntax.

A `Behavior` says what one request should do differently from the provider's normal answer
(fail with a status, cut the connection, stall, stream more chunks...). Behaviours come from three
places and are merged field by field, later ones winning:

1. the app's defaults (`FakeControl.defaults`, e.g. `chunks=6`),
2. the next queued entry of `FakeControl.push(...)` (programmatic, for in-process tests),
3. markers in the last user message (for subprocess end-to-end tests, where the test cannot reach
   the fake's Python objects): ``[[fake:status=503,retry_after=1]]``.

Marker syntax: ``[[fake:key=value,key=value]]``; several markers may appear and pairs may also be
separated by ``;`` or spaces. A bare key means ``key=1``. Markers are removed from the text before
the deterministic reply is derived from it, so ``"hi [[fake:chunks=3]]"`` gets the reply of ``"hi"``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["MARKER_KEYS", "Behavior", "MarkerError", "parse_markers", "strip_markers"]

_MARKER_RE = re.compile(r"\[\[fake:([^\]]*)\]\]")
_PAIR_SPLIT_RE = re.compile(r"[,;\s]+")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class MarkerError(ValueError):
    """A ``[[fake:...]]`` marker could not be parsed (unknown key or bad value)."""


@dataclass(frozen=True, slots=True)
class Behavior:
    """What one request should do; `None` means "no opinion, use the next layer / provider default".

    Fields (all optional):

    - `status`: answer with this HTTP status and the provider's own error body for it.
    - `retry_after`: send a ``Retry-After`` header (seconds) with that error.
    - `code`: provider error code override (Workers AI ``3036`` instead of ``3040`` for a 429,
      an OpenRouter int code, a Together string code).
    - `text`: send the error as a ``text/plain`` body instead of JSON (Workers AI 500 does this
      by default).
    - `envelope`: Workers AI ``/ai/v1`` only: ``"cloudflare"`` (v4 envelope) or ``"openai"``.
    - `cut_after`: abruptly close the TCP connection after this many content chunks (for a
      non-streaming body: in the middle of the JSON).
    - `error_after`: after this many content chunks, send the provider's mid-stream error frame
      and end the stream.
    - `delay_first`: seconds before the status line (a slow first byte).
    - `chunk_delay`: seconds between content chunks.
    - `chunks`: how many content chunks the reply has (one completion token each).
    - `shape`: Workers AI ``/ai/run`` only: ``"native"``, ``"openai"`` (vLLM-style
      ``chat.completion`` frames) or ``"json"`` (a JSON body even when ``stream:true``).
    - `tool_shape`: Workers AI ``/ai/run`` tool calls: ``"flat"`` (llama-3.x) or ``"openai"``.
    - `finish`: Together only: force the natural finish reason (``"eos"`` or ``"stop"``).
    - `busy`: Workers AI only: the model is out of capacity (``rejectIfBusy`` gets 429 3040).
    - `times`: markers only: the marker acts on the first N requests whose last user message is
      this exact text, later identical requests get the normal reply. ``[[fake:status=503,
      times=1]]`` fails once and lets the client's retry succeed.
    """

    status: int | None = None
    retry_after: float | None = None
    code: int | str | None = None
    text: bool | None = None
    envelope: str | None = None
    cut_after: int | None = None
    error_after: int | None = None
    delay_first: float | None = None
    chunk_delay: float | None = None
    chunks: int | None = None
    shape: str | None = None
    tool_shape: str | None = None
    finish: str | None = None
    busy: bool | None = None
    times: int | None = None

    def merged(self, override: Behavior | None) -> Behavior:
        """Return self with every non-None field of `override` replacing ours."""
        if override is None:
            return self
        changes = {
            f.name: value
            for f in fields(override)
            if (value := getattr(override, f.name)) is not None
        }
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def from_pairs(cls, pairs: dict[str, str]) -> Behavior:
        """Build a Behavior from marker ``key=value`` strings, converting each value."""
        values: dict[str, Any] = {}
        for key, raw in pairs.items():
            convert = _CONVERTERS.get(key)
            if convert is None:
                raise MarkerError(
                    f"unknown fake marker key {key!r}; known: {', '.join(MARKER_KEYS)}"
                )
            try:
                values[key] = convert(raw)
            except ValueError as exc:
                raise MarkerError(f"bad value {raw!r} for fake marker key {key!r}") from exc
        return cls(**values)


def _to_bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(raw)


def _to_nonneg_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _to_nonneg_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also rejects NaN
        raise ValueError(raw)
    return value


def _to_status(raw: str) -> int:
    value = int(raw)
    if not 400 <= value <= 599:
        raise ValueError(raw)
    return value


def _to_code(raw: str) -> int | str:
    # Workers AI and OpenRouter codes are ints, Together codes are strings.
    return int(raw) if raw.lstrip("-").isdigit() else raw


def _choice(*allowed: str) -> Any:
    def convert(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(raw)
        return raw

    return convert


_CONVERTERS: dict[str, Any] = {
    "status": _to_status,
    "retry_after": _to_nonneg_float,
    "code": _to_code,
    "text": _to_bool,
    "envelope": _choice("cloudflare", "openai"),
    "cut_after": _to_nonneg_int,
    "error_after": _to_nonneg_int,
    "delay_first": _to_nonneg_float,
    "chunk_delay": _to_nonneg_float,
    "chunks": _to_nonneg_int,
    "shape": _choice("native", "openai", "json"),
    "tool_shape": _choice("flat", "openai"),
    "finish": _choice("eos", "stop"),
    "busy": _to_bool,
    "times": _to_nonneg_int,
}

MARKER_KEYS: tuple[str, ...] = tuple(_CONVERTERS)


def strip_markers(text: str) -> str:
    """Remove every ``[[fake:...]]`` marker (and the whitespace it leaves at the ends)."""
    if "[[fake:" not in text:  # fast path: almost every benchmark request
        return text
    return _MARKER_RE.sub("", text).strip()


def parse_markers(text: str) -> tuple[str, Behavior | None]:
    """Split `text` into (text without markers, merged Behavior of its markers or None).

    Raises MarkerError on an unknown key or a bad value, so a typo in a test fails loudly instead
    of silently running the happy path.
    """
    if "[[fake:" not in text:
        return text, None
    pairs: dict[str, str] = {}
    for body in _MARKER_RE.findall(text):
        for item in _PAIR_SPLIT_RE.split(body.strip()):
            if not item:
                continue
            key, sep, value = item.partition("=")
            pairs[key.strip()] = value.strip() if sep else "1"
    return _MARKER_RE.sub("", text).strip(), Behavior.from_pairs(pairs)
