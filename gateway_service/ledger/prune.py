"""`python -m gateway_service usage prune --before YYYY-MM-DD`: delete old ledger records.

Nothing is deleted unless an operator runs this: the ledger keeps every record by default.
Records of days before `--before` are deleted in chunks of `CHUNK` (short transactions, so a
live gateway's writes are never held up for long); the daily rollups are kept, so `GET
/v1/usage` history still covers those days while `usage export` no longer does. Export first
if the records must be archived.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Mapping
from typing import Final

from gateway_service.ledger.export import database_url, day_argument
from gateway_service.ledger.store import UsageUnavailable

CHUNK: Final = 10_000


def add_arguments(prune: argparse.ArgumentParser) -> None:
    prune.add_argument(
        "--before",
        type=day_argument,
        required=True,
        help="delete the records of UTC days before this one (YYYY-MM-DD); rollups are kept",
    )


def run(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    url = database_url("usage prune", environ)
    if url is None:
        return 1
    try:
        deleted = asyncio.run(_prune(url, args.before))
    except UsageUnavailable as exc:
        print(f"usage prune: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(  # noqa: T201
        f"usage prune: deleted {deleted} records before {args.before.isoformat()}",
        file=sys.stderr,
    )
    return 0


async def _prune(url: str, before: dt.date) -> int:
    from gateway_service.ledger import open_usage_store

    store = await open_usage_store(url)
    total = 0
    try:
        while deleted := await store.prune(before, CHUNK):
            total += deleted
            print(f"usage prune: {total} records deleted so far", file=sys.stderr)  # noqa: T201
    finally:
        await store.aclose()
    return total
