"""`python -m gateway_service`: serve GatewayService until SIGTERM.

`python -m gateway_service usage export|prune ...`: the usage ledger's operator commands
(`ledger.cli`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from gateway_service.config import GatewaySettings
from gateway_service.limits.tiers import missing_default
from rpc_common import aio, tracing
from rpc_common.config import ConfigError
from rpc_common.logging import configure_logging

_LOGGER = logging.getLogger("gateway_service")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        return _command(args)
    try:
        settings = GatewaySettings.from_env()
    except ConfigError as exc:
        print(f"gateway_service: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, service="gateway")
    try:
        tracing.setup("gateway_service")  # before the server is built: it decides the interceptors
    except ConfigError as exc:
        print(f"gateway_service: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    _LOGGER.info(
        "Workers AI at %s (account %s); vault at %s",
        settings.workers_ai_base_url,
        settings.cloudflare_account_id,
        settings.vault_addr,
    )
    _announce_limits(settings)
    _announce_usage(settings)
    from gateway_service.server import serve

    try:
        aio.run(serve(settings))
    finally:
        tracing.shutdown()  # the last spans, drained calls' included, go to the collector
    return 0


def _command(argv: list[str]) -> int:
    """The operators' subcommands; no arguments at all means: serve."""
    from gateway_service.ledger import cli

    parser = argparse.ArgumentParser(prog="python -m gateway_service")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(commands)
    args = parser.parse_args(argv)
    return cli.run(args)


def _announce_usage(settings: GatewaySettings) -> None:
    usage = settings.usage
    url = usage.database_url
    # Never the whole URL: a PostgreSQL one may hold a password.
    where = url if url.startswith("sqlite:") else url.split(":", 1)[0] + "://..."
    _LOGGER.info(
        "usage ledger: %s, batches of up to %d every %.1f s, queue of %d",
        where,
        usage.batch_size,
        usage.flush_seconds,
        usage.queue_max,
    )
    if not usage.prices.prices:
        _LOGGER.warning(
            "usage ledger: no price table (USAGE_PRICES_FILE), so costs are recorded only when "
            "the provider reports them (OpenRouter); every other cost is null"
        )


def _announce_limits(settings: GatewaySettings) -> None:
    limits = settings.limits
    if not limits.tiers.source:
        _LOGGER.warning(
            "LIMITS_FILE is not set: there are no limits, so any signed-in user (anonymous "
            "sign-ins included) can spend the platform account without bound; set LIMITS_FILE "
            "(see the README's Limits section)"
        )
        return
    if missing_default(limits.tiers):
        _LOGGER.warning(
            "%s has no [tiers.default]: callers without a tier have no limits",
            limits.tiers.source,
        )
    _LOGGER.info(
        "limits: tiers %s from %s (tier claim %r), store %s, on store error: %s",
        ", ".join(sorted(limits.tiers.tiers)),
        limits.tiers.source,
        limits.tiers.claim,
        "Redis" if limits.redis_url else "in process (one replica)",
        limits.on_store_error,
    )


if __name__ == "__main__":
    sys.exit(main())
