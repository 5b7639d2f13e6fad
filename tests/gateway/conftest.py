"""Gateway service tests: the whole gRPC back end in process, against the fakes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.gateway.upstream_server import UpstreamServer, upstream_server
from tests.support.logcheck import assert_logs_clean


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamServer]:
    """A real HTTP server on a free loopback port that answers as each test scripts it."""
    async with upstream_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert_logs_clean(caplog)
