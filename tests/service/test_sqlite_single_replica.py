"""A SQLite vault is single-replica: a second vault serving the same file is warned about at start-up.

The claim is an exclusive flock on `<file>.lock`, released by the kernel however its holder ends,
so a vault that crashed leaves no false alarm for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from tests.service.test_vault_service import settings
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing
from vault_service.server import VaultApp, build_vault

WARNING = "single-replica"
_REPO = Path(__file__).resolve().parents[2]

# The same claim a serving vault makes (build_vault → SqliteKeyStore.follow_changes), from
# another process, which then waits to be killed.
_HOLDER = textwrap.dedent(
    """
    import asyncio, sys, time
    from vault_service.change_feed import ChangeFeed
    from vault_service.storage.sqlite import SqliteKeyStore

    async def main():
        store = await SqliteKeyStore.open(sys.argv[1])
        await store.follow_changes(ChangeFeed())
        print("serving", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def _vault(path: Path, keyring: KeyRing, tokens: TokenFactory) -> VaultApp:
    app = await build_vault(
        settings(f"sqlite:///{path}"), keyring=keyring, verifier=tokens.verifier()
    )
    await app.serving.start()
    return app


async def _stop(app: VaultApp) -> None:
    await app.serving.stop(None)
    await app.aclose()


def _warned(caplog: pytest.LogCaptureFixture) -> bool:
    return any(WARNING in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_a_second_vault_on_the_same_sqlite_file_is_warned_about(
    tmp_path: Path, keyring: KeyRing, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "vault.db"
    first = await _vault(db, keyring, tokens)
    try:
        assert not _warned(caplog)
        second = await _vault(db, keyring, tokens)
        await _stop(second)
        assert _warned(caplog)
    finally:
        await _stop(first)
    caplog.clear()
    third = await _vault(db, keyring, tokens)  # the first one is gone: no warning
    await _stop(third)
    assert not _warned(caplog)


async def test_no_false_alarm_after_a_crash(
    tmp_path: Path, keyring: KeyRing, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "vault.db"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(db), stdout=asyncio.subprocess.PIPE, cwd=_REPO
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        assert line.strip() == b"serving"
        vault = await _vault(db, keyring, tokens)  # another process serves the file
        await _stop(vault)
        assert _warned(caplog)
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up of any kind
        await asyncio.wait_for(holder.wait(), 10)
    caplog.clear()
    vault = await _vault(db, keyring, tokens)
    await _stop(vault)
    assert not _warned(caplog)
