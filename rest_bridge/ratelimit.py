"""The caller's rate-limit state, from the gateway's initial metadata into the HTTP head.

The gateway decides and formats everything (SPEC §10: `x-ratelimit-*` as OpenAI names them);
the bridge only copies the entries with that prefix, for unary and streaming responses alike.
"""

from __future__ import annotations

from typing import Final

import grpc

PREFIX: Final = "x-ratelimit-"
EXPOSED: Final = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def state_headers(metadata: grpc.aio.Metadata | None) -> list[tuple[bytes, bytes]]:
    """The `x-ratelimit-*` entries of a call's initial metadata, as raw ASGI headers."""
    if not metadata:
        return []
    return [
        (key.encode("latin-1"), value.encode("latin-1"))
        for key, value in metadata
        if key.startswith(PREFIX) and isinstance(value, str)
    ]
