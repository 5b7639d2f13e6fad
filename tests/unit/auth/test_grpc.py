"""`authenticate` on a real grpc.aio server: status code, ErrorInfo reason, the caller's uid."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from rpc_common.auth import (
    AUTH_KEYS_UNAVAILABLE,
    AuthError,
    TokenVerifier,
    authenticate,
    bearer_token,
)
from rpc_common.auth.errors import TOKEN_INVALID, TOKEN_MALFORMED, TOKEN_MISSING
from rpc_common.status import ERROR_DOMAIN, error_info

from .tokens import FakeClock, FakeKeyServer, SigningKey, claims, sign

METHOD = "/test.v1.Probe/WhoAmI"


@pytest.fixture
async def channel(verifier: TokenVerifier) -> AsyncIterator[grpc.aio.Channel]:
    async def who_am_i(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        caller = await authenticate(context, verifier)
        return caller.uid.encode()

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "test.v1.Probe", {"WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def call(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> bytes:
    # No serializers: raw bytes both ways (the project's protos are not needed here).
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
    return await method(b"", metadata=metadata, timeout=10)


async def failed_call(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, str, str]:
    """(code, ErrorInfo reason, details) of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(channel, metadata)
    error = info.value
    details_bin = [v for k, v in error.trailing_metadata() if k == "grpc-status-details-bin"]
    assert len(details_bin) == 1
    assert isinstance(details_bin[0], bytes)
    status = status_pb2.Status.FromString(details_bin[0])
    assert status.code == error.code().value[0]
    info_detail = error_info(status)
    assert info_detail is not None
    assert info_detail.domain == ERROR_DOMAIN
    return error.code(), info_detail.reason, error.details() or ""


async def test_valid_token_reaches_the_handler(
    channel: grpc.aio.Channel, key1: SigningKey, clock: FakeClock
) -> None:
    token = sign(claims(clock(), sub="grpc-user"), key1)
    assert await call(channel, (("authorization", f"Bearer {token}"),)) == b"grpc-user"
    # RFC 6750: the scheme is case-insensitive.
    assert await call(channel, (("authorization", f"bearer {token}"),)) == b"grpc-user"


async def test_missing_metadata_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    code, reason, details = await failed_call(channel, ())
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert reason == TOKEN_MISSING
    assert "authorization" in details


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer ", TOKEN_MISSING),
        ("Bearer", TOKEN_MISSING),
        ("Basic dXNlcjpwYXNz", TOKEN_MALFORMED),
        ("Bearer garbage", TOKEN_MALFORMED),
    ],
)
async def test_bad_authorization_is_unauthenticated(
    channel: grpc.aio.Channel, value: str, expected: str
) -> None:
    code, reason, _ = await failed_call(channel, (("authorization", value),))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert reason == expected


async def test_rejected_token_is_not_echoed(
    channel: grpc.aio.Channel, rogue: SigningKey, clock: FakeClock
) -> None:
    token = sign(claims(clock()), rogue)
    code, reason, details = await failed_call(channel, (("authorization", f"Bearer {token}"),))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert reason == TOKEN_INVALID
    assert token not in details
    assert token.split(".")[2] not in details


async def test_key_fetch_failure_is_unavailable(
    channel: grpc.aio.Channel, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    server.status = 500
    token = sign(claims(clock()), key1)
    code, reason, _ = await failed_call(channel, (("authorization", f"Bearer {token}"),))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert reason == AUTH_KEYS_UNAVAILABLE


def test_bearer_token_parsing() -> None:
    assert bearer_token([("authorization", "BEARER abc")]) == "abc"
    assert bearer_token([("x-other", "1"), ("authorization", "  Bearer   abc  ")]) == "abc"
    for metadata, reason in [
        (None, TOKEN_MISSING),
        ([("authorization", "Bearer a"), ("authorization", "Bearer b")], TOKEN_MALFORMED),
        ([("authorization", b"Bearer a")], TOKEN_MALFORMED),
        ([("authorization", "Token abc")], TOKEN_MALFORMED),
    ]:
        with pytest.raises(AuthError) as info:
            bearer_token(metadata)
        assert info.value.reason == reason
