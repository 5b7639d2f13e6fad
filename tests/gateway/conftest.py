"""Gateway service tests: the whole gRPC back end in process, against the fakes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.logcheck import assert_logs_clean
from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing


@pytest.fixture
async def stack(tmp_path: Path, tokens: TokenFactory, keyring: KeyRing) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, tokens, keyring) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert_logs_clean(caplog)
