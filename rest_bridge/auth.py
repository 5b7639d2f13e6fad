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
from rpc_common import tracing

Metadata = tuple[tuple[str, str], ...]

# Firebase ID tokens are ~1 KB; custom claims can add up to 1000 bytes. 8 KiB is generous.
_BEARER: Final = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]{1,8192}=*) *")
# An App Check token is a JWT (base64url segments and dots); anything else is not forwarded,
# so the gRPC services see "missing" and apply APP_CHECK_MODE to that.
_APP_CHECK: Final = re.compile(rb"[A-Za-z0-9\-_.=]{1,8192}")
APP_CHECK_HEADER: Final = b"x-firebase-appcheck"
APP_CHECK_METADATA: Final = "x-firebase-appcheck"


def call_metadata(request: Request) -> Metadata:
    """`authorization`, `x-request-id` and (when sent) `x-firebase-appcheck` metadata for a call
    on the caller's behalf, in one pass over the raw headers; with tracing on, also the
    request span's `traceparent`.

    Raises ApiError 401 when the Authorization header is missing, not a bearer token, or sent
    more than once (two credentials are ambiguous: refused rather than guessed between).
    """
    authorization: list[bytes] = []
    app_check: bytes | None = None
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            authorization.append(value)
        elif name == APP_CHECK_HEADER:
            app_check = value
    if len(authorization) > 1:
        raise errors.ambiguous_token()
    if not authorization or not authorization[0].strip():
        raise errors.missing_token()
    match = _BEARER.fullmatch(authorization[0])
    if match is None:
        raise errors.malformed_token()
    metadata: Metadata = (
        ("authorization", "Bearer " + match.group(1).decode("ascii")),
        ("x-request-id", request_id_of(request.scope)),
    )
    if app_check is not None and _APP_CHECK.fullmatch(app_check):
        metadata += ((APP_CHECK_METADATA, app_check.decode("ascii")),)
    if tracing.enabled:
        metadata += tracing.outgoing_metadata()  # the request's span, for the services' spans
    return metadata
