"""Reading a JSON request body: content type, size (enforced by the edge middleware), parse."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from rest_bridge import errors


def is_json_media_type(content_type: str) -> bool:
    """`application/json` or `application/<something>+json`, any parameters, any case."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request) -> Any:
    """The parsed body. A missing Content-Type is tolerated (many HTTP tools omit it); any other
    type is 415. Malformed JSON (and invalid UTF-8, lone surrogates) is 400, never 422."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json_media_type(content_type):
        raise errors.unsupported_media_type(content_type)
    # The edge middleware's `receive` raises BodyTooLarge (413) as soon as the limit is passed.
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.invalid_json() from None
