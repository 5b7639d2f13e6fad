"""`python -m gateway_service usage export`: the ledger's records as CSV or JSON Lines.

    python -m gateway_service usage export --from 2026-11-01 --to 2026-11-30 \\
        [--user UID] [--format csv|jsonl] [--output FILE]

Reads `USAGE_DATABASE_URL` (nothing else: no secrets needed) and writes every record of those UTC
days (both inclusive; one user's with `--user`) in the order they were written, to stdout or
`--output`. Pages of `PAGE_SIZE` rows keep memory flat; progress goes to stderr every
`PROGRESS_SECONDS` and at the end. Runs against a live gateway's database: it only reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final

import orjson

from gateway_service.ledger.entry import LedgerEntry
from gateway_service.ledger.settings import DEFAULT_DATABASE_URL, check_database_url
from gateway_service.ledger.store import UsageStore, UsageUnavailable
from rpc_common.config import ConfigError, optional

PAGE_SIZE: Final = 5000
PROGRESS_SECONDS: Final = 2.0
FIELDS: Final = (
    "created_at",
    "day",
    "request_id",
    "uid",
    "provider",
    "model",
    "upstream_model",
    "stream",
    "byok",
    "status",
    "reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "estimated",
    "cost_usd",
    "cost_source",
    "latency_ms",
    "record_id",
)


def as_dict(entry: LedgerEntry) -> dict[str, Any]:
    """One record as the export writes it (times in ISO 8601, UTC)."""
    return {
        "created_at": entry.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "day": entry.day.isoformat(),
        "request_id": entry.request_id,
        "uid": entry.uid,
        "provider": entry.provider,
        "model": entry.model,
        "upstream_model": entry.upstream_model,
        "stream": entry.stream,
        "byok": entry.byok,
        "status": entry.status,
        "reason": entry.reason,
        "prompt_tokens": entry.prompt_tokens,
        "completion_tokens": entry.completion_tokens,
        "total_tokens": entry.total_tokens,
        "estimated": entry.estimated,
        "cost_usd": entry.cost_usd,
        "cost_source": entry.cost_source,
        "latency_ms": entry.latency_ms,
        "record_id": entry.record_id,
    }


def day_argument(raw: str) -> dt.date:
    """An argparse type: a UTC day as YYYY-MM-DD."""
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {raw!r}") from None


def add_arguments(export: argparse.ArgumentParser) -> None:
    """The `usage export` arguments."""
    export.add_argument("--from", dest="first", type=day_argument, required=True, help="YYYY-MM-DD")
    export.add_argument(
        "--to", dest="last", type=day_argument, required=True, help="YYYY-MM-DD (inclusive)"
    )
    export.add_argument("--user", help="only this Firebase uid's records")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--output", help="write to this file instead of stdout")


def database_url(command: str, environ: Mapping[str, str]) -> str | None:
    """USAGE_DATABASE_URL for an operator command, or None after saying on stderr what is
    wrong (an invalid URL, or a SQLite file that does not exist: opening it would create it)."""
    try:
        url = optional(environ, "USAGE_DATABASE_URL", DEFAULT_DATABASE_URL)
        check_database_url(url)
    except ConfigError as exc:
        print(f"{command}: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return None
    if url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///")):
        missing = url.removeprefix("sqlite:///")
        print(f"{command}: no usage database at {missing}", file=sys.stderr)  # noqa: T201
        return None
    return url


def run(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Run `usage export`; returns the exit status."""
    if args.first > args.last:
        print("usage export: --from is after --to", file=sys.stderr)  # noqa: T201
        return 2
    url = database_url("usage export", environ)
    if url is None:
        return 1
    with _output(args.output) as out:
        try:
            count = asyncio.run(_export(url, args, out))
        except UsageUnavailable as exc:
            print(f"usage export: {exc}", file=sys.stderr)  # noqa: T201
            return 1
    print(f"usage export: {count} records", file=sys.stderr)  # noqa: T201
    return 0


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    # 0600: the export holds user ids.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8", newline="") as out:
        yield out


async def _export(url: str, args: argparse.Namespace, out: IO[str]) -> int:
    from gateway_service.ledger import open_usage_store

    store: UsageStore = await open_usage_store(url)
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    if args.format == "csv":
        writer.writeheader()
    count, after, last_report = 0, 0, time.monotonic()
    try:
        while True:
            page = await store.export(args.first, args.last, args.user, after, PAGE_SIZE)
            for row_id, entry in page:
                record = as_dict(entry)
                if args.format == "csv":
                    writer.writerow(record)
                else:
                    out.write(orjson.dumps(record).decode() + "\n")
                after = row_id
            count += len(page)
            if time.monotonic() - last_report >= PROGRESS_SECONDS:
                last_report = time.monotonic()
                print(f"usage export: {count} records so far", file=sys.stderr)  # noqa: T201
            if len(page) < PAGE_SIZE:
                return count
    finally:
        out.flush()
        await store.aclose()
