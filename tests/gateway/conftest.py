"""Gateway service tests: the whole gRPC back end in process, against the fakes."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.support.logcheck import assert_logs_clean


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert_logs_clean(caplog)
