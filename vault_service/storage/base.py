"""The `KeyStore` contract shared by the SQLite and PostgreSQL backends, and what they share.

Schema (identical on both backends; SQL types differ only where the dialects do):

    vault_meta  (name TEXT PRIMARY KEY, value BLOB/BYTEA NOT NULL)
                rows: 'schema_version' → ASCII digits, 'kdf_salt' → 16 random bytes
    vault_keys  (uid TEXT PRIMARY KEY, provider TEXT NOT NULL, blob BLOB/BYTEA NOT NULL,
                 updated_at_ms INTEGER/BIGINT NOT NULL)

One row per user: a user has at most one BYOK key, and saving replaces it. `blob` is a sealed
record from `vault_service.crypto`; the store never sees a plaintext key.

Key changes (SPEC §12): every put, delete and successful compare-and-swap is announced to the
other processes using the same database, so each vault can tell its gateways to drop a cached
answer. PostgreSQL does it with NOTIFY, in the write's own statement (see `storage.postgres`);
SQLite is single-replica and only warns when a second vault serves the same file.
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

from vault_service.errors import StorageError

SCHEMA_VERSION: Final = 1
SALT_LEN: Final = 16
META_SCHEMA_VERSION: Final = "schema_version"
META_KDF_SALT: Final = "kdf_salt"

# Firebase uids (the token's `sub`) are at most 128 characters (SPEC §4).
MAX_UID_CHARS: Final = 128
MAX_PROVIDER_CHARS: Final = 64
MAX_BLOB_BYTES: Final = 64 * 1024
DEFAULT_BATCH_SIZE: Final = 500
UID_HASH_CHARS: Final = 32


def uid_hash(uid: str) -> str:
    """How key changes name a user: the first 32 hex characters of SHA-256 over the UTF-8 uid.

    The same digest as the gateway's request log (`uid_hash=`, its first 16 characters), so a
    change can be matched with log lines. Not a secret and not a key; it only keeps the uid itself
    out of database notifications. The gateway computes it the same way (`vault_client`).
    """
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()[:UID_HASH_CHARS]


class ChangeListener(Protocol):
    """Told about key changes made by other processes sharing the database (`follow_changes`)."""

    def on_change(self, uid_hash: str) -> None:
        """Another process saved, deleted or re-sealed the key of the user with this hash."""

    def on_lost(self) -> None:
        """Changes made elsewhere may go unheard from now on (e.g. the database connection died)."""

    def on_synced(self) -> None:
        """Changes made elsewhere are heard again; any made before this call may have been missed."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One stored row. `blob` is ciphertext, but is kept out of repr to keep logs short."""

    uid: str
    provider: str
    blob: bytes = field(repr=False)
    updated_at: datetime


class KeyStore(Protocol):
    """Async storage of sealed keys, one per user. Every write is a single atomic statement."""

    async def put(self, uid: str, provider: str, blob: bytes) -> StoredKey:
        """Insert or replace the user's row atomically; returns what was stored."""
        ...

    async def get(self, uid: str) -> StoredKey | None:
        """The user's row, or None."""
        ...

    async def delete(self, uid: str) -> bool:
        """Remove the user's row; False when there was none (deleting twice is fine)."""
        ...

    async def compare_and_swap(self, uid: str, old_blob: bytes, new_blob: bytes) -> bool:
        """Replace the blob only if it still equals `old_blob` (so rewrap never clobbers a put).

        Provider and `updated_at` are kept: a rewrap is not a user's change.
        """
        ...

    async def list_uids(self) -> list[str]:
        """Every uid, in byte order."""
        ...

    def iter_all(self, batch_size: int = DEFAULT_BATCH_SIZE) -> AsyncIterator[StoredKey]:
        """Every row in uid byte order, fetched in pages (no long-lived cursor or transaction)."""
        ...

    async def get_or_create_salt(self) -> bytes:
        """The deployment's KDF salt, created on first call; every replica gets the same bytes."""
        ...

    async def follow_changes(self, listener: ChangeListener) -> None:
        """Tell `listener` about writes other processes make, until `close` (a serving vault).

        Writes made through this store object are not reported back: its caller publishes them.
        PostgreSQL: LISTENs on a dedicated connection, reconnecting with backoff; `on_lost` first,
        then `on_synced` once listening (returns after the first attempt). SQLite: nothing to
        hear (one replica); warns if another vault process already follows the same file.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads; idempotent."""
        ...


class PagedKeyStore(abc.ABC):
    """Implements the listing half of `KeyStore` on top of one keyset-paginated query."""

    @abc.abstractmethod
    async def _page(self, after: str | None, limit: int) -> list[StoredKey]:
        """Up to `limit` rows with uid > `after` (all when None), in uid byte order."""

    async def iter_all(self, batch_size: int = DEFAULT_BATCH_SIZE) -> AsyncIterator[StoredKey]:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        after: str | None = None
        while True:
            rows = await self._page(after, batch_size)
            for row in rows:
                yield row
            if len(rows) < batch_size:
                return
            after = rows[-1].uid

    async def list_uids(self) -> list[str]:
        return [row.uid async for row in self.iter_all()]


def check_uid(uid: str) -> None:
    """Reject uids no Firebase token can carry; NUL is also refused (PostgreSQL text cannot hold it)."""
    if not isinstance(uid, str) or not uid or len(uid) > MAX_UID_CHARS or "\x00" in uid:
        raise ValueError(f"uid must be a string of 1 to {MAX_UID_CHARS} characters without NUL")


def check_row(uid: str, provider: str, blob: bytes) -> None:
    """Validate a row before writing it."""
    check_uid(uid)
    if (
        not isinstance(provider, str)
        or not provider
        or len(provider) > MAX_PROVIDER_CHARS
        or "\x00" in provider
    ):
        raise ValueError(
            f"provider must be a string of 1 to {MAX_PROVIDER_CHARS} characters without NUL"
        )
    check_blob(blob)


def check_blob(blob: bytes) -> None:
    """A blob is non-empty bytes of bounded size."""
    if not isinstance(blob, bytes) or not blob or len(blob) > MAX_BLOB_BYTES:
        raise ValueError(f"blob must be 1 to {MAX_BLOB_BYTES} bytes")


def now_ms() -> int:
    """Wall-clock time in integer milliseconds, the unit of `updated_at_ms`."""
    return time.time_ns() // 1_000_000


def from_ms(value: int) -> datetime:
    """`updated_at_ms` as an aware UTC datetime."""
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def row(uid: str, provider: str, blob: bytes, updated_at_ms: int) -> StoredKey:
    """Build a `StoredKey` from database values."""
    return StoredKey(uid, provider, bytes(blob), from_ms(int(updated_at_ms)))


def parse_schema_version(value: bytes) -> int:
    """Decode the stored schema version (ASCII digits)."""
    try:
        return int(bytes(value).decode("ascii"))
    except ValueError:
        raise StorageError("the vault schema version in the database is unreadable") from None


def check_schema_version(found: int) -> None:
    """Refuse a database written by a newer vault: older code could corrupt it."""
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"the vault database has schema version {found}, newer than the {SCHEMA_VERSION} "
            "this build understands; upgrade the vault"
        )


def check_salt(value: bytes) -> bytes:
    """The stored salt must be exactly `SALT_LEN` bytes."""
    salt = bytes(value)
    if len(salt) != SALT_LEN:
        raise StorageError("the stored KDF salt has the wrong length; the database is damaged")
    return salt
