"""Usage ledger settings, read from the environment with the rest of the gateway's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway_service.ledger.prices import PriceTable
from rpc_common.config import ConfigError, optional, positive_float, positive_int

DEFAULT_DATABASE_URL: Final = "sqlite:///data/usage.db"
# The price table shipped with the code, found from a checkout (config/prices.toml beside the
# packages). An installed package has none beside it: the image sets USAGE_PRICES_FILE to
# /app/config/prices.toml (compose does), else every cost is unknown and a warning says so.
SHIPPED_PRICES: Final = Path(__file__).resolve().parents[2] / "config" / "prices.toml"

SQLITE_PREFIX: Final = "sqlite:///"
POSTGRES_PREFIXES: Final = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class UsageSettings:
    """Where and how the ledger is written. `database_url` empty means no ledger: only settings
    built in code (tests) have that; from the environment the default is a SQLite file."""

    database_url: str = field(default="", repr=False)  # a PostgreSQL URL may hold a password
    prices: PriceTable = field(default_factory=PriceTable)
    queue_max: int = 100_000
    batch_size: int = 500
    flush_seconds: float = 1.0
    shutdown_flush_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> UsageSettings:
        url = optional(environ, "USAGE_DATABASE_URL", DEFAULT_DATABASE_URL)
        check_database_url(url)
        raw_prices = environ.get("USAGE_PRICES_FILE", "").strip()
        prices_path: Path | None = None
        if raw_prices:
            prices_path = Path(raw_prices)
            if not prices_path.is_file():
                raise ConfigError(f"USAGE_PRICES_FILE: no such file: {raw_prices!r}")
        elif SHIPPED_PRICES.is_file():
            prices_path = SHIPPED_PRICES
        return cls(
            database_url=url,
            prices=PriceTable.load(prices_path),
            queue_max=positive_int(environ, "USAGE_QUEUE_MAX", 100_000),
            batch_size=positive_int(environ, "USAGE_BATCH_SIZE", 500),
            flush_seconds=positive_float(environ, "USAGE_FLUSH_SECONDS", 1.0),
            shutdown_flush_seconds=positive_float(environ, "USAGE_SHUTDOWN_FLUSH_SECONDS", 10.0),
        )


def check_database_url(url: str) -> None:
    """Raise ConfigError unless `url` names a SQLite file or a PostgreSQL database.

    The message names the variable and at most the URL's scheme: the rest may hold a password.
    """
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        if not path or path.endswith("/") or "?" in path or path == ":memory:":
            raise ConfigError(
                "USAGE_DATABASE_URL must name a SQLite file, e.g. sqlite:///data/usage.db"
            )
        return
    if url.startswith(POSTGRES_PREFIXES):
        return
    scheme = url.split(":", 1)[0] if ":" in url else ""
    raise ConfigError(
        "USAGE_DATABASE_URL must start with sqlite:/// or postgresql:// "
        f"(got scheme {scheme[:20]!r})"
    )
