"""Measure AccessApiKey: the in-process work (one indexed read + two AES-GCM opens) and one gRPC hop.

Run: `.venv/bin/python -m bench.vault_access [--requests N]`. Prints p50/p90/p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import AuthSettings
from tests.support.tokens import PROJECT_ID, TokenFactory, bearer
from vault_service.config import VaultSettings
from vault_service.crypto import KeyRing
from vault_service.server import build_vault

SERVICE_TOKEN = "bench-service-token-0123456789"


def _percentiles(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    return f"p50 {q[49]:7.1f} us   p90 {q[89]:7.1f} us   p99 {q[98]:7.1f} us"


async def main(requests: int) -> None:
    tokens = TokenFactory()
    keyring = KeyRing.from_keks(b"k" * 32)
    with tempfile.TemporaryDirectory() as tmp:
        settings = VaultSettings(
            auth=AuthSettings(project_id=PROJECT_ID),
            master_key="x" * 32,
            previous_master_keys=(),
            service_token=SERVICE_TOKEN,
            listen_addr="127.0.0.1:0",
            database_url=f"sqlite:///{Path(tmp)}/vault.db",
        )
        app = await build_vault(settings, keyring=keyring, verifier=tokens.verifier())
        await app.serving.start()
        token = tokens.mint("bench-user")
        meta = (*bearer(token), ("x-service-token", SERVICE_TOKEN))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.serving.port}") as channel:
            stub = vault_service_pb2_grpc.VaultServiceStub(channel)
            await stub.PutApiKey(
                vault_service_pb2.PutApiKeyRequest(api_key="sk-or-v1-" + "a" * 64),
                metadata=bearer(token),
            )
            # In-process: what the servicer does after auth (read + open).
            work: list[float] = []
            for _ in range(requests):
                start = time.perf_counter()
                row = await app.store.get("bench-user")
                assert row is not None
                keyring.open("bench-user", row.provider, row.blob)
                work.append((time.perf_counter() - start) * 1e6)
            # Over gRPC on loopback, token verification cached after the first call.
            rpc: list[float] = []
            for _ in range(requests):
                start = time.perf_counter()
                await stub.AccessApiKey(vault_service_pb2.AccessApiKeyRequest(), metadata=meta)
                rpc.append((time.perf_counter() - start) * 1e6)
        await app.serving.stop(None)
        await app.aclose()
    print(f"store.get + KeyRing.open (in process): {_percentiles(work)}")
    print(f"AccessApiKey over loopback gRPC:       {_percentiles(rpc)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(parser.parse_args().requests))
