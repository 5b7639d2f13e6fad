"""Bridge settings, read once from the environment (SPEC §7).

Every problem raises `ConfigError` naming the variable, so `python -m rest_bridge` can fail fast
with a message an operator can act on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from rpc_common.channels import grpc_target
from rpc_common.config import ConfigError, optional, positive_float, positive_int
from rpc_common.tls import TlsSettings

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_METRICS_ADDR = "127.0.0.1:9464"
_LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """Everything `python -m rest_bridge` needs. None of it is secret."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    gateway_addr: str = "127.0.0.1:50052"
    vault_addr: str = "127.0.0.1:50051"
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    first_chunk_wait_seconds: float = 5.0
    keepalive_seconds: float = 15.0
    # Deadline for the short RPCs (vault, model list); chat calls are bounded by the gateway's
    # own upstream timeouts, which know how long a model may legitimately think.
    rpc_timeout_seconds: float = 30.0
    ready_timeout_seconds: float = 2.0
    shutdown_grace_seconds: float = 15.0
    log_level: str = "INFO"
    # The HTTP edge (SPEC §11): what one connection may cost before any app code runs.
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES  # request line + headers; 431 above
    # From the accept (a kept-alive connection: the next request's first byte) to the last header.
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0  # from the last header to the body's last byte
    max_connections: int = 1024  # open client connections; 503 above
    metrics_addr: str = DEFAULT_METRICS_ADDR  # Prometheus listener; "" = off
    # Client side of gRPC TLS / mutual TLS to the gateway and the vault (rpc_common.tls).
    tls: TlsSettings = field(default_factory=TlsSettings)

    @property
    def listen_addr(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BridgeSettings:
        """Read and validate the settings; raises ConfigError naming the offending variable."""
        host, port = parse_listen_addr(
            "BRIDGE_LISTEN_ADDR", optional(environ, "BRIDGE_LISTEN_ADDR", "127.0.0.1:8080")
        )
        return cls(
            listen_host=host,
            listen_port=port,
            gateway_addr=_target(environ, "GATEWAY_ADDR", "127.0.0.1:50052"),
            vault_addr=_target(environ, "VAULT_ADDR", "127.0.0.1:50051"),
            cors_origins=parse_origins(
                "BRIDGE_CORS_ORIGINS", environ.get("BRIDGE_CORS_ORIGINS", "")
            ),
            max_body_bytes=positive_int(environ, "BRIDGE_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            first_chunk_wait_seconds=positive_float(
                environ, "BRIDGE_FIRST_CHUNK_WAIT_SECONDS", 5.0
            ),
            keepalive_seconds=positive_float(environ, "BRIDGE_KEEPALIVE_SECONDS", 15.0),
            rpc_timeout_seconds=positive_float(environ, "BRIDGE_RPC_TIMEOUT_SECONDS", 30.0),
            ready_timeout_seconds=positive_float(environ, "BRIDGE_READY_TIMEOUT_SECONDS", 2.0),
            shutdown_grace_seconds=positive_float(environ, "BRIDGE_SHUTDOWN_GRACE_SECONDS", 15.0),
            log_level=_log_level(environ),
            max_header_bytes=positive_int(
                environ, "BRIDGE_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES
            ),
            header_timeout_seconds=_seconds(environ, "BRIDGE_HEADER_TIMEOUT_SECONDS", 10.0),
            body_timeout_seconds=_seconds(environ, "BRIDGE_BODY_TIMEOUT_SECONDS", 30.0),
            max_connections=positive_int(environ, "BRIDGE_MAX_CONNECTIONS", 1024),
            metrics_addr=_metrics_addr(environ),
            tls=TlsSettings.from_env(environ),
        )


def parse_listen_addr(name: str, value: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets) -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{name} must be HOST:PORT, e.g. 127.0.0.1:8080; got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{name}: the port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}: the port must be 0..65535, got {port}")
    return host, port


def parse_origins(name: str, value: str) -> tuple[str, ...]:
    """A comma-separated list of browser origins (`https://app.example.com`) or `*`."""
    origins: list[str] = []
    for raw in value.split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(
                f"{name}: each origin must be '*' or start with http:// or https://, got {origin!r}"
            )
        origins.append(origin)
    return tuple(origins)


def _target(environ: Mapping[str, str], name: str, default: str) -> str:
    """A gRPC target naming one or several replicas (`rpc_common.channels.parse_target`)."""
    return grpc_target(environ, name, default)


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    """A positive, finite number of seconds (a timer cannot be armed for `inf`)."""
    value = positive_float(environ, name, default)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number of seconds, got {environ[name]!r}")
    return value


def _metrics_addr(environ: Mapping[str, str]) -> str:
    """HOST:PORT of the Prometheus listener; unset means the default, set but empty means off."""
    raw = environ.get("BRIDGE_METRICS_ADDR")
    if raw is None:
        return DEFAULT_METRICS_ADDR
    value = raw.strip()
    if value:
        parse_listen_addr("BRIDGE_METRICS_ADDR", value)
    return value


def _log_level(environ: Mapping[str, str]) -> str:
    level = optional(environ, "LOG_LEVEL", "INFO").upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(sorted(_LOG_LEVELS))}")
    return level
