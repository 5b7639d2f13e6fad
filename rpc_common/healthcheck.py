"""Container healthchecks without extra binaries (compose runs these inside the image).

    python -m rpc_common.healthcheck grpc 127.0.0.1:50051      # grpc.health.v1 Check == SERVING
    python -m rpc_common.healthcheck http http://127.0.0.1:8080/readyz   # HTTP 200

Exit 0 when healthy, 1 otherwise, with one line on stderr saying why.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rpc_common.config import ConfigError
from rpc_common.tls import TlsSettings


def check_grpc(address: str, timeout: float) -> str | None:
    """None when the server reports SERVING, else the reason. Speaks TLS (with this process's
    certificate, for mutual TLS) when the GRPC_TLS_* variables say so, as the services do."""
    try:
        tls = TlsSettings.from_env(os.environ)
    except ConfigError as exc:
        return f"{address}: {exc}"
    with tls.sync_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"{address}: {exc.code().name}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def check_http(url: str, timeout: float) -> str | None:
    """None when the URL answers 200, else the reason."""
    if not url.startswith(("http://", "https://")):
        return f"{url}: not an http(s) URL"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (checked above)
            status: int = response.status
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except OSError as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url}: HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpc_common.healthcheck", description=__doc__)
    parser.add_argument("kind", choices=["grpc", "http"])
    parser.add_argument("target", help="host:port for grpc, a URL for http")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    check = check_grpc if args.kind == "grpc" else check_http
    problem = check(args.target, args.timeout)
    if problem is not None:
        sys.stderr.write(f"unhealthy: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
