"""Fixtures: session-wide RSA keys, a fake clock, a fake key endpoint and a verifier on both."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from rpc_common.auth import TokenVerifier

from .tokens import CERTS_URL, PROJECT, FakeClock, FakeKeyServer, SigningKey, make_signing_key


@pytest.fixture(scope="session")
def key1() -> SigningKey:
    return make_signing_key("kid-1")


@pytest.fixture(scope="session")
def key2() -> SigningKey:
    return make_signing_key("kid-2")


@pytest.fixture(scope="session")
def rogue() -> SigningKey:
    """A key Google never published, used with a real kid to forge signatures."""
    return make_signing_key("kid-1")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(key1: SigningKey) -> FakeKeyServer:
    return FakeKeyServer(keys=[key1])


@pytest.fixture
async def http(server: FakeKeyServer) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


@pytest.fixture
async def verifier(http: httpx.AsyncClient, clock: FakeClock) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier(PROJECT, certs_url=CERTS_URL, http=http, clock=clock)
    yield verifier
    await verifier.aclose()
