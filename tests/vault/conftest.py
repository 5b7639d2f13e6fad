"""Fixtures for the vault's crypto and storage tests.

PBKDF2 at 600,000 iterations is slow on purpose, so the KEKs are derived once per session and the
key rings are assembled from them; one test (test_crypto.py) checks the passphrase path itself.

Storage tests run on both backends. PostgreSQL comes from the suite-wide `postgres_url` fixture
(tests/conftest.py): a fresh schema per test, skipped when no server is reachable unless
NATIVE1API_REQUIRE_POSTGRES=1, which turns the skip into a failure (CI sets it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.logcheck import assert_logs_clean
from vault_service.crypto import KeyRing, derive_kek
from vault_service.storage import KeyStore, open_store

OLD_PASSPHRASE = "old-master-passphrase-for-vault-tests-0001"
NEW_PASSPHRASE = "new-master-passphrase-for-vault-tests-0002"
OTHER_PASSPHRASE = "unrelated-master-passphrase-for-tests-0003"
TEST_SALT = bytes(range(16))

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass(frozen=True)
class Keks:
    """KEKs derived once per session from the passphrases above with `TEST_SALT`."""

    old: bytes
    new: bytes
    other: bytes


@dataclass(frozen=True)
class Rings:
    """Key rings at each stage of a rotation from OLD to NEW."""

    old: KeyRing  # before rotation: OLD is current
    rotated: KeyRing  # during rotation: NEW current, OLD previous
    new_only: KeyRing  # after rotation: OLD dropped
    other: KeyRing  # an unrelated deployment


@pytest.fixture(scope="session")
def keks() -> Keks:
    return Keks(
        old=derive_kek(OLD_PASSPHRASE, TEST_SALT),
        new=derive_kek(NEW_PASSPHRASE, TEST_SALT),
        other=derive_kek(OTHER_PASSPHRASE, TEST_SALT),
    )


@pytest.fixture(scope="session")
def rings(keks: Keks) -> Rings:
    return Rings(
        old=KeyRing.from_keks(keks.old),
        rotated=KeyRing.from_keks(keks.new, [keks.old]),
        new_only=KeyRing.from_keks(keks.new),
        other=KeyRing.from_keks(keks.other),
    )


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL per backend; a sync fixture so it can pull `postgres_url` only when needed."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/vault-data/keys.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[KeyStore]:
    opened = await open_store(store_url)
    yield opened
    await opened.close()


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every vault test runs with DEBUG logging captured, and no line may carry a credential."""
    caplog.set_level(logging.DEBUG)
    yield
    assert_logs_clean(caplog, OLD_PASSPHRASE, NEW_PASSPHRASE, OTHER_PASSPHRASE)
