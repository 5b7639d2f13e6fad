"""Exceptions raised by the vault's domain code (crypto, storage, rewrap).

    VaultError
    ├── VaultConfigError (also a ValueError)  a master secret is unusable at start-up
    ├── DecryptionError                       a sealed record could not be opened, whatever the cause
    └── StorageError                          the key store failed or holds something unexpected
        └── StorageUnavailableError           the database could not be reached (or stayed locked)

No message built here ever contains key material: `DecryptionError` takes no arguments at all, so
nobody can pass a key, a blob or a reason into it.
"""

from __future__ import annotations


class VaultError(Exception):
    """Root of every vault domain error."""


class VaultConfigError(VaultError, ValueError):
    """A setting (e.g. `VAULT_MASTER_KEY`) is missing or invalid; the message names the variable."""


class DecryptionError(VaultError):
    """A stored record could not be opened.

    One error for every cause (bad tag, truncation, unknown version, unknown key id, wrong owner or
    provider), so callers cannot tell an attacker which check failed, and a fixed message so no
    key material can end up in logs or responses.
    """

    MESSAGE = "stored key could not be decrypted"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class StorageError(VaultError):
    """The key store failed, or its contents are not what this version of the vault expects."""


class StorageUnavailableError(StorageError):
    """The database could not be reached or stayed busy; retrying later may succeed."""
