"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing

POSTGRES_ADMIN_URL = os.environ.get(
    "NATIVE1API_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("NATIVE1API_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def tokens() -> TokenFactory:
    """One signing key for the session (RSA key generation is slow)."""
    return TokenFactory()


@pytest.fixture(scope="session")
def keyring() -> KeyRing:
    """A key ring derived once per session: PBKDF2 at 600k iterations is slow on purpose."""
    return KeyRing("test-master-passphrase-0123456789-abcdef", (), b"\x00" * 16)


def _postgres_available() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {exc}".strip()


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """The PostgreSQL URL; a missing server skips locally but fails in CI."""
    problem = _postgres_available()
    if problem is not None:
        message = f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} ({problem})"
        if os.environ.get("NATIVE1API_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    return POSTGRES_ADMIN_URL


def _redis_available() -> str | None:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis; a missing server skips locally but fails in CI. Tests isolate
    themselves with their own key prefix or user ids, never by flushing the database."""
    problem = _redis_available()
    if problem is not None:
        message = f"Redis not reachable at {REDIS_URL} ({problem})"
        if os.environ.get("NATIVE1API_REQUIRE_REDIS") == "1":
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped after the test.

    Synchronous on purpose: async fixtures cannot be requested lazily (getfixturevalue).
    """
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in postgres_admin else "?"
    yield f"{postgres_admin}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
async def stack(tmp_path: Path, tokens: TokenFactory, keyring: KeyRing) -> AsyncIterator[Stack]:
    """Fake upstreams, a real vault and a real gateway, in process on loopback ports."""
    async with running_stack(tmp_path, tokens, keyring) as running:
        yield running
