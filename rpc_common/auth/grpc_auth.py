"""`authenticate`: the first call of every servicer method that acts for a user."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from rpc_common.auth.caller import Caller
from rpc_common.auth.errors import TOKEN_MALFORMED, TOKEN_MISSING, AuthError
from rpc_common.auth.verifier import TokenVerifier
from rpc_common.status import RpcError, abort

AUTHORIZATION_KEY = "authorization"


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of the single `authorization: Bearer <token>` entry; raises AuthError.

    The scheme is case-insensitive (RFC 6750 §2.1); several authorization entries are ambiguous
    and rejected rather than guessed between.
    """
    values = [value for key, value in metadata or () if key.lower() == AUTHORIZATION_KEY]
    if not values:
        raise AuthError(TOKEN_MISSING, "missing authorization metadata (Bearer ID token)")
    if len(values) > 1:
        raise AuthError(TOKEN_MALFORMED, "more than one authorization metadata entry")
    value = values[0]
    if not isinstance(value, str):
        raise AuthError(TOKEN_MALFORMED, "authorization metadata must be text")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError(TOKEN_MALFORMED, 'authorization must use the "Bearer" scheme')
    token = token.strip()
    if not token:
        raise AuthError(TOKEN_MISSING, "the Bearer token is empty")
    return token


async def authenticate(
    context: grpc.aio.ServicerContext[Any, Any], verifier: TokenVerifier
) -> Caller:
    """Verify the caller's ID token, or abort the RPC (UNAUTHENTICATED / UNAVAILABLE + ErrorInfo)."""
    try:
        return await verifier.verify(bearer_token(context.invocation_metadata()))
    except RpcError as error:
        await abort(context, error)
