"""Durations as OpenAI writes them in `x-ratelimit-reset-*` (Go's duration format): `20ms`,
`1s`, `1.5s`, `6m0s`, `2h3m4s`."""

from __future__ import annotations


def openai_duration(milliseconds: int) -> str:
    ms = max(0, int(milliseconds))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
