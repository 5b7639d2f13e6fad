"""The gateway as its own process: SIGTERM mid-load loses no record of an admitted completion,
and `python -m gateway_service usage export` writes them out as CSV or JSON Lines."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import signal
import time
from pathlib import Path

import grpc
import pytest

from devstack.token import mint_emulator_token
from gateway_service.ledger import cli, export
from native1api.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from tests.ledger.support import chat, read_all, today
from tests.support.e2e import PROJECT, running_processes
from tests.support.procs import run_module

pytestmark = pytest.mark.e2e

SLOW = "[[fake:chunk_delay=0.05,chunks=30]]"  # about 1.5 s


async def load(address: str, stop: asyncio.Event) -> tuple[set[str], set[str]]:
    """Streams from two users until `stop`, 20 at a time; returns the request ids that ended
    OK and those that did not."""
    ok: set[str] = set()
    failed: set[str] = set()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)

        async def one(n: int) -> None:
            request_id = f"term-{n}"
            uid = ("term-alice", "term-bob")[n % 2]
            metadata = (
                ("authorization", f"Bearer {mint_emulator_token(uid, PROJECT)}"),
                ("x-request-id", request_id),
            )
            call = stub.StreamChatCompletion(
                gateway_service_pb2.StreamChatCompletionRequest(request=chat(f"load {n} {SLOW}")),
                metadata=metadata,
                timeout=30,
            )
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError:
                failed.add(request_id)
            else:
                ok.add(request_id)

        n = 0
        running: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            while len(running) < 20:
                task = asyncio.get_running_loop().create_task(one(n))
                running.add(task)
                task.add_done_callback(running.discard)
                n += 1
            await asyncio.sleep(0.05)
        await asyncio.gather(*running)
    return ok, failed


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigterm_mid_load_writes_every_admitted_completion(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    url = (
        f"sqlite:///{tmp_path}/usage.db"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    # A flush interval longer than the test: only the shutdown can have written the records.
    env = {"USAGE_DATABASE_URL": url, "USAGE_FLUSH_SECONDS": "600", "USAGE_BATCH_SIZE": "100000"}
    with running_processes(tmp_path, extra_env=env) as stack:
        gateway = stack.services["gateway"]

        async def scenario() -> tuple[set[str], set[str]]:
            stop = asyncio.Event()
            loader = asyncio.get_running_loop().create_task(load(stack.gateway_address, stop))
            await asyncio.sleep(2.5)  # some completions done, 20 in flight
            assert gateway.process is not None
            gateway.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            stop.set()
            return await loader

        ok, failed = asyncio.run(scenario())
        assert gateway.wait_exit() == 0
        log = gateway.log
    entries = asyncio.run(read_all(url, today() - dt.timedelta(days=1), today()))
    written = {e.request_id for e in entries}
    assert len(ok) >= 30
    # Every completion that ran is in the ledger, once; a call refused by the stopping server
    # (never admitted) is not.
    assert ok <= written
    assert len(entries) == len(written)
    assert written <= ok | failed
    assert all(e.status == "OK" and not e.estimated for e in entries if e.request_id in ok)
    assert "term-alice" not in log and "term-bob" not in log  # only the uid hash is logged


def seed(url: str) -> None:
    """A few ledger records for two users (through the writer, as the gateway writes them)."""
    from prometheus_client import CollectorRegistry

    from gateway_service.ledger import PriceTable, UsageLedger, open_usage_store
    from gateway_service.request_log import RequestRecord
    from native1api.gateway.v1 import chat_pb2

    async def write() -> None:
        ledger = UsageLedger(await open_usage_store(url), PriceTable(), CollectorRegistry())
        ledger.start()
        for n in range(120):
            uid = ("exp-alice", "exp-bob")[n % 2]
            record = RequestRecord(
                f"exp-{n}", uid, "CreateChatCompletion", model="m", provider="together"
            )
            record.routed("m-upstream", True, 5)
            record.usage = chat_pb2.Usage(prompt_tokens=n, completion_tokens=1, total_tokens=n + 1)
            ledger.record(record)
        await ledger.aclose()

    asyncio.run(write())


def test_export_cli_csv_jsonl_user_filter_and_output_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/usage.db"
    seed(url)
    env = {"USAGE_DATABASE_URL": url}
    day = today().isoformat()
    result = run_module(
        "gateway_service", ["usage", "export", "--from", day, "--to", day, "--format", "csv"], env
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 120
    assert tuple(rows[0]) == export.FIELDS
    assert rows[5]["request_id"] == "exp-5" and rows[5]["uid"] == "exp-bob"
    assert rows[5]["prompt_tokens"] == "5" and rows[5]["cost_usd"] == ""  # unknown: empty
    assert "120 records" in result.stderr

    out = tmp_path / "alice.jsonl"
    args = ["usage", "export", "--from", day, "--to", day, "--user", "exp-alice"]
    args += ["--format", "jsonl", "--output", str(out)]
    result = run_module("gateway_service", args, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 60 and {line["uid"] for line in lines} == {"exp-alice"}
    assert lines[0]["cost_usd"] is None and lines[0]["byok"] is True
    assert lines[0]["created_at"].endswith("Z")
    assert out.stat().st_mode & 0o077 == 0  # it holds user ids

    earlier = (today() - dt.timedelta(days=3)).isoformat()
    result = run_module(
        "gateway_service", ["usage", "export", "--from", earlier, "--to", earlier], env
    )
    assert result.returncode == 0 and result.stdout.count("\n") == 1  # the header only


def test_export_reports_progress_on_stderr_for_long_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/usage.db"
    seed(url)
    monkeypatch.setattr(export, "PAGE_SIZE", 25)
    monkeypatch.setattr(export, "PROGRESS_SECONDS", 0.0)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    day = today().isoformat()
    args = parser.parse_args(["usage", "export", "--from", day, "--to", day, "--format", "jsonl"])
    assert cli.run(args, {"USAGE_DATABASE_URL": url}) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 120
    progress = [line for line in captured.err.splitlines() if "so far" in line]
    assert progress[:2] == ["usage export: 25 records so far", "usage export: 50 records so far"]
    assert captured.err.splitlines()[-1] == "usage export: 120 records"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-12-02", "--to", "2026-12-01"], "--from is after --to"),
        (["--from", "12/01/2026", "--to", "2026-12-01"], "not a date as YYYY-MM-DD"),
        (["--from", "2026-12-01", "--to", "2026-12-01", "--format", "xml"], "invalid choice"),
    ],
)
def test_export_refuses_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_module(
        "gateway_service",
        ["usage", "export", *args],
        {"USAGE_DATABASE_URL": f"sqlite:///{tmp_path}/usage.db"},
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_export_without_a_database_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "usage.db"
    result = run_module(
        "gateway_service",
        ["usage", "export", "--from", "2026-12-01", "--to", "2026-12-01"],
        {"USAGE_DATABASE_URL": f"sqlite:///{missing}"},
    )
    assert result.returncode == 1
    assert "no usage database" in result.stderr
    assert not missing.exists()


def test_no_arguments_still_serves(tmp_path: Path) -> None:
    """`python -m gateway_service` with no arguments is the server (here: its config check)."""
    started = time.monotonic()
    result = run_module("gateway_service", [], {"CLOUDFLARE_ACCOUNT_ID": ""})
    assert result.returncode == 2
    assert "CLOUDFLARE_ACCOUNT_ID is required" in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_prune_deletes_old_records_and_keeps_the_rollups(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    url = (
        f"sqlite:///{tmp_path}/usage.db"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    seed(url)  # today's
    day = today()
    tomorrow = (day + dt.timedelta(days=1)).isoformat()
    kept = run_module(
        "gateway_service",
        ["usage", "prune", "--before", day.isoformat()],
        {"USAGE_DATABASE_URL": url},
    )
    assert kept.returncode == 0, kept.stderr
    assert "deleted 0 records" in kept.stderr
    assert len(asyncio.run(read_all(url, day, day))) == 120
    pruned = run_module(
        "gateway_service", ["usage", "prune", "--before", tomorrow], {"USAGE_DATABASE_URL": url}
    )
    assert pruned.returncode == 0, pruned.stderr
    assert f"deleted 120 records before {tomorrow}" in pruned.stderr
    assert asyncio.run(read_all(url, day, day)) == []

    async def history() -> int:
        from gateway_service.ledger import open_usage_store

        store = await open_usage_store(url)
        try:
            return sum(row.requests for row in await store.history("exp-alice", day, day))
        finally:
            await store.aclose()

    assert asyncio.run(history()) == 60  # the day's totals outlive its records
