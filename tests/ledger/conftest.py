"""Usage ledger fixtures: every test that touches a database runs on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.logcheck import assert_logs_clean


@pytest.fixture(params=["sqlite", "postgres"])
def usage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger database: a SQLite file, or a fresh PostgreSQL schema (`postgres_url`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/usage.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert_logs_clean(caplog)
