"""Bridge fixtures: the real gRPC stack in process and the real app served on loopback.

The stack and the default bridge are module-scoped (one event loop per module, so every test
module sets `pytestmark = pytest.mark.asyncio(loop_scope="module")`): building the stack costs
about a second, and the tests isolate themselves with their own user ids and prompts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from gateway_service.upstream_http import HttpSettings
from tests.bridge.support import Bridge, bridge_settings, serve_bridge
from tests.support.logcheck import assert_logs_clean
from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, tokens: TokenFactory, keyring: KeyRing
) -> AsyncIterator[Stack]:
    # No upstream retries: a scripted 429/503 is answered at once instead of after backoff.
    async with running_stack(
        tmp_path_factory.mktemp("stack"), tokens, keyring, http=HttpSettings(max_retries=0)
    ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bridge(stack: Stack) -> AsyncIterator[Bridge]:
    async with serve_bridge(bridge_settings(stack.gateway_address, stack.vault_address)) as b:
        yield b


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert_logs_clean(caplog)
