"""`python -m vault_service` serves the vault; `python -m vault_service rewrap` re-seals all keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from rpc_common import aio, tracing
from rpc_common.config import ConfigError
from rpc_common.logging import configure_logging
from vault_service.config import VaultSettings

_LOGGER = logging.getLogger("vault_service")


async def _rewrap(settings: VaultSettings) -> int:
    from vault_service.rewrap import rewrap_all
    from vault_service.server import open_keyring
    from vault_service.storage import open_store

    store = await open_store(settings.database_url)
    try:
        keyring = await open_keyring(settings, store)
        report = await rewrap_all(store, keyring)
    finally:
        await store.close()
    _LOGGER.info(
        "rewrap done: %d rows, %d re-sealed, %d already current, %d failed",
        report.total,
        report.rewrapped,
        report.already_current,
        report.failed,
    )
    if report.failed:
        _LOGGER.error(
            "%d rows could not be opened with the configured master keys: keep their old "
            "secret in VAULT_PREVIOUS_MASTER_KEYS until they are re-saved",
            report.failed,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vault_service", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "rewrap"],
        default="serve",
        help="serve (default) or rewrap every stored key under VAULT_MASTER_KEY",
    )
    args = parser.parse_args(argv)
    try:
        settings = VaultSettings.from_env()
    except ConfigError as exc:
        print(f"vault_service: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, service="vault")
    if args.command == "rewrap":
        return asyncio.run(_rewrap(settings))
    try:
        tracing.setup("vault_service")  # before the server is built: it decides the interceptors
    except ConfigError as exc:
        print(f"vault_service: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    from vault_service.server import serve

    try:
        aio.run(serve(settings))
    finally:
        tracing.shutdown()  # the last spans, drained calls' included, go to the collector
    return 0


if __name__ == "__main__":
    sys.exit(main())
