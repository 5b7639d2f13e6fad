"""Client-side helpers for tests that talk to a fake: request bodies and SSE collection.

Test-only: it imports httpx-sse (a dev dependency) and no fake imports it, so the runtime package
(`python -m fakes`) does not need it. SSE parsing is httpx-sse's, never hand-rolled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse

__all__ = ["DONE", "sse_data_into", "sse_frames", "user"]

DONE = "[DONE]"


def user(text: str, **extra: Any) -> dict[str, Any]:
    """A chat body with one user message plus any extra fields."""
    return {"messages": [{"role": "user", "content": text}], **extra}


async def sse_frames(
    client: httpx.AsyncClient,
    path: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> tuple[httpx.Response, list[Any]]:
    """POST and collect every SSE data frame: parsed JSON, or the literal ``[DONE]``."""
    frames: list[Any] = []
    async with aconnect_sse(client, "POST", path, json=body, headers=dict(headers or {})) as source:
        async for event in source.aiter_sse():
            frames.append(DONE if event.data == DONE else orjson.loads(event.data))
        return source.response, frames


async def sse_data_into(
    client: httpx.AsyncClient, path: str, body: Mapping[str, Any], sink: list[str]
) -> None:
    """POST and append each raw SSE data string to `sink` as it arrives (for streams that break)."""
    async with aconnect_sse(client, "POST", path, json=body, headers={}) as source:
        async for event in source.aiter_sse():
            sink.append(event.data)
