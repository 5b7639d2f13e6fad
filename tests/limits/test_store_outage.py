"""The limiter store going away mid-run: `deny` refuses with 503 and recovers, `allow` admits.

Each test runs a Redis server of its own on a free port, stops it and starts it again on the
same port (never the machine's Redis, which other tests share).
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from tests.limits.support import Caller, limited_stack
from tests.support.redis_server import own_redis
from tests.support.rpc import error_details
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing


async def test_deny_gives_unavailable_and_recovers(
    tmp_path: Path, tokens: TokenFactory, keyring: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    with own_redis(tmp_path) as server:
        async with limited_stack(tmp_path, tokens, keyring, redis_url=server.url) as stack:
            user = Caller(stack, "rpm30")
            await user.complete()
            server.stop()
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await user.complete()
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                info = error_details(caught.value)
                assert info.reason == "RATE_LIMITER_UNAVAILABLE"
                assert info.metadata["code"] == "rate_limiter_unavailable"
            call = user.stream()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
            assert error_details(caught.value).reason == "RATE_LIMITER_UNAVAILABLE"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await user.usage()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            # Logged once, not once per request.
            lines = [
                r
                for r in caplog.records
                if "limiter store unavailable during admit" in r.getMessage()
            ]
            assert len(lines) == 1 and lines[0].levelno == logging.ERROR
            metrics = stack.gateway_app.metrics.registry
            assert (
                metrics.get_sample_value(
                    "native1api_gateway_limiter_store_errors_total", {"operation": "admit"}
                )
                == 4
            )
            server.start()  # same port, empty: the scripts must be loaded again
            await user.complete()
            report = await user.usage()
            assert report.remaining.requests_per_minute == 29  # a fresh Redis, one request


async def test_allow_admits_and_counts_it(
    tmp_path: Path, tokens: TokenFactory, keyring: KeyRing
) -> None:
    with own_redis(tmp_path) as server:
        async with limited_stack(
            tmp_path, tokens, keyring, redis_url=server.url, on_store_error="allow"
        ) as stack:
            user = Caller(stack, "zero")  # a tier that would refuse everything
            with pytest.raises(grpc.aio.AioRpcError):
                await user.complete()
            server.stop()
            reply = await user.complete()
            assert reply.completion.choices
            assert [m async for m in user.stream()]
            metrics = stack.gateway_app.metrics.registry
            assert (
                metrics.get_sample_value(
                    "native1api_gateway_admissions_unmetered_total", {"tier": "zero"}
                )
                == 2
            )
            server.start()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await user.complete()
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
