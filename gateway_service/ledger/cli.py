"""`python -m gateway_service usage ...`: the operators' ledger commands (export, prune)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from gateway_service.ledger import export, prune


def add_parser(commands: Any) -> None:
    """Add `usage export` and `usage prune` to `python -m gateway_service`'s subcommands."""
    usage = commands.add_parser("usage", help="the usage ledger")
    sub = usage.add_subparsers(dest="usage_command", required=True)
    export.add_arguments(
        sub.add_parser(
            "export",
            help="write ledger records as CSV or JSON Lines",
            description="Export the usage ledger's records of a range of UTC days "
            "(USAGE_DATABASE_URL names the database).",
        )
    )
    prune.add_arguments(
        sub.add_parser(
            "prune",
            help="delete the records of old days (the daily rollups are kept)",
            description="Delete ledger records older than a day; history rollups are kept.",
        )
    )


def run(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    if args.usage_command == "export":
        return export.run(args, environ)
    return prune.run(args, environ)
