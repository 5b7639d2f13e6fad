"""Request ids: the one rule for which caller-supplied ids are kept.

An id travels into log lines (`request_id=...`), response headers and upstream headers, so one
that could carry spaces, `=` or newlines would let a caller forge fields in our logs. A supplied
id is kept only when it is short and boring; otherwise a fresh one is made. The bridge applies
this rule to `X-Request-Id`, the gRPC services to `x-request-id` metadata from direct callers.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

_PATTERN: Final = r"[A-Za-z0-9._:\-]{1,128}"
SANE: Final = re.compile(_PATTERN)
SANE_BYTES: Final = re.compile(_PATTERN.encode("ascii"))


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_or_new(value: object) -> str:
    """`value` when it is a sane id (str), else a new id."""
    if isinstance(value, str) and SANE.fullmatch(value):
        return value
    return new_request_id()
