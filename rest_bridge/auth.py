"""The caller's credential, forwarded to the gRPC services as metadata.

The bridge does not verify tokens: the gRPC services do, so internal gRPC callers get exactly the
same checks (SPEC §1). It only checks that an `Authorization: Bearer <token>` header is present
and shaped like a bearer token (RFC 6750's b64token), which also guarantees the value is valid
gRPC ASCII metadata.
"""

from __future__ import annotations

import re
from typing import Final

from starlette.requests import Request

from rest_bridge import errors
from rest_bridge.middleware import request_id_of

Metadata = tuple[tuple[str, str], ...]

# Firebase ID tokens are ~1 KB; custom claims can add up to 1000 bytes. 8 KiB is generous.
_BEARER: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]{1,8192}=*) *")


def call_metadata(request: Request) -> Metadata:
    """`authorization` and `x-request-id` metadata for a call on the caller's behalf.

    Raises ApiError 401 when the header is missing or not a bearer token.
    """
    header = request.headers.get("authorization")
    if header is None or not header.strip():
        raise errors.missing_token()
    match = _BEARER.fullmatch(header)
    if match is None:
        raise errors.malformed_token()
    return (
        ("authorization", "Bearer " + match.group(1)),
        ("x-request-id", request_id_of(request.scope)),
    )
