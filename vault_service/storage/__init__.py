"""Storage of sealed keys: one `KeyStore` interface, SQLite and PostgreSQL backends.

`await open_store(url)` picks the backend from `VAULT_DATABASE_URL`:

- `sqlite:///data/vault.db`   relative to the working directory
- `sqlite:////abs/path.db`    absolute
- `postgresql://...` or `postgres://...` (libpq URL; choose a schema with `options=-csearch_path=...`)
"""

from __future__ import annotations

from vault_service.storage.base import KeyStore, StoredKey
from vault_service.storage.postgres import PostgresKeyStore
from vault_service.storage.sqlite import SqliteKeyStore

__all__ = ["KeyStore", "PostgresKeyStore", "SqliteKeyStore", "StoredKey", "open_store"]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


async def open_store(url: str) -> KeyStore:
    """Open (creating and migrating as needed) the store named by a `VAULT_DATABASE_URL` value.

    Errors name the variable and at most the URL's scheme: the rest may contain a password.
    """
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX) :]
        if not path or path.endswith("/") or "?" in path or path == ":memory:":
            raise ValueError(
                "VAULT_DATABASE_URL must name a SQLite file, e.g. sqlite:///data/vault.db"
            )
        return await SqliteKeyStore.open(path)
    if url.startswith(_POSTGRES_PREFIXES):
        return await PostgresKeyStore.open(url)
    scheme = url.split(":", 1)[0] if ":" in url else ""
    raise ValueError(
        "VAULT_DATABASE_URL must start with sqlite:/// or postgresql:// "
        f"(got scheme {scheme[:20]!r})"
    )
