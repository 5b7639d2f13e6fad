"""Re-seal every stored key under the current master key, online and without losing a write.

Each row is handled on its own: read, re-seal in memory (plaintext never leaves `KeyRing`), then
`compare_and_swap`. If the row changed in between (a user saved a new key, or deleted theirs), the
swap fails and the row is read again: a new value sealed under the current KEK is left alone, a
new value under an old KEK (an un-upgraded replica) is re-sealed, a deleted row stays deleted.
Nothing is ever written over a value this job did not read.

Each successful swap is announced like any write (PostgreSQL NOTIFY, see `storage.postgres`), so
every vault replica tells its gateways to drop that user's cached answer; on SQLite there is no
other process to tell, and a re-sealed key decrypts to the same answer anyway.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Final

from vault_service.crypto import KeyRing
from vault_service.errors import DecryptionError
from vault_service.storage.base import DEFAULT_BATCH_SIZE, KeyStore, StoredKey

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class RewrapReport:
    """Counts of one run; `total` = rewrapped + already_current + failed + vanished."""

    total: int
    rewrapped: int
    already_current: int
    failed: int
    vanished: int = 0


class _Outcome(enum.Enum):
    REWRAPPED = "rewrapped"
    ALREADY_CURRENT = "already_current"
    FAILED = "failed"
    VANISHED = "vanished"


async def rewrap_all(
    store: KeyStore,
    keyring: KeyRing,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> RewrapReport:
    """Move every row sealed under a previous KEK to the current one; safe while serving."""
    counts = dict.fromkeys(_Outcome, 0)
    async for stored in store.iter_all(batch_size):
        counts[await _rewrap_row(store, keyring, stored, max_attempts)] += 1
    report = RewrapReport(
        total=sum(counts.values()),
        rewrapped=counts[_Outcome.REWRAPPED],
        already_current=counts[_Outcome.ALREADY_CURRENT],
        failed=counts[_Outcome.FAILED],
        vanished=counts[_Outcome.VANISHED],
    )
    _LOGGER.info(
        "rewrap: %d rows, %d re-sealed, %d already current, %d failed, %d deleted meanwhile",
        report.total,
        report.rewrapped,
        report.already_current,
        report.failed,
        report.vanished,
    )
    return report


async def _rewrap_row(
    store: KeyStore, keyring: KeyRing, stored: StoredKey, max_attempts: int
) -> _Outcome:
    current = stored
    for _ in range(max_attempts):
        try:
            if not keyring.needs_rewrap(current.blob):
                return _Outcome.ALREADY_CURRENT
            new_blob = keyring.reseal(current.uid, current.provider, current.blob)
        except DecryptionError:
            # The uid is an opaque account id, not a secret; the operator needs it to follow up.
            _LOGGER.warning(
                "rewrap: the key of uid %s cannot be opened with the configured master keys",
                current.uid,
            )
            return _Outcome.FAILED
        if await store.compare_and_swap(current.uid, current.blob, new_blob):
            return _Outcome.REWRAPPED
        latest = await store.get(current.uid)
        if latest is None:
            return _Outcome.VANISHED
        current = latest
    _LOGGER.warning("rewrap: uid %s kept changing; left for the next run", stored.uid)
    return _Outcome.FAILED
