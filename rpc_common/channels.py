"""Client channels to our own services over several replicas (SPEC §12), one rule for every caller.

`GATEWAY_ADDR` and `VAULT_ADDR` are gRPC target URIs: a plain `host:port`, a fixed list
(`ipv4:10.0.0.5:50051,10.0.0.6:50051`, `ipv6:[::1]:50051,...`) or a DNS name resolved to every
address it has (`dns:///vault:50051`). Every channel to one of our services gets the same gRPC
service config (`service_config`), merged into its caller's own options (`balanced_options`):

- `round_robin` over the resolved addresses, each call to the next ready backend;
- client-side health checking (`healthCheckConfig`): each backend's `grpc.health.v1` Watch
  stream for the service the caller uses; a backend that reports NOT_SERVING (draining on
  SIGTERM, see `rpc_common.serve`) or whose connection dropped leaves the rotation at once and
  comes back when it reports SERVING again;
- a `retryPolicy` on UNAVAILABLE: a call that failed because its backend's connection broke
  (killed, network reset) before it got any answer is sent again, to another ready backend,
  after a short jittered backoff.

Our servers forbid retrying anything they answered themselves: every error status they send
carries `grpc-retry-pushback-ms: -1` (gRFC A6, `rpc_common.status.to_status`), so an UNAVAILABLE
that a service chose (upstream unreachable, vault or rate limiter down, pool overloaded) reaches
the caller after one attempt instead of repeating an upstream call or hammering a dead
dependency from every replica.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rpc_common.config import ConfigError, optional

MAX_ATTEMPTS: Final = 4
"""The first attempt and up to three retries: enough to step past a backend that died and was
not yet out of the rotation, even when concurrent calls take turns on the same dead one."""
INITIAL_BACKOFF_SECONDS: Final = 0.1
MAX_BACKOFF_SECONDS: Final = 1.0
"""gRPC waits random(0, min(0.1 * 2**n, 1)) s before retry n+1: at most 0.7 s in all."""
MAX_RECONNECT_BACKOFF_MS: Final = 5_000
"""Unless the caller says otherwise: a restarted replica rejoins within 5 s, not up to 2 min."""


def service_config(health_service: str) -> dict[str, Any]:
    """The gRPC service config of a channel to `health_service`'s replicas (see the module)."""
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": health_service},
        "methodConfig": [
            {
                "name": [{}],  # every method of the channel, the health Check included
                "retryPolicy": {
                    "maxAttempts": MAX_ATTEMPTS,
                    "initialBackoff": f"{INITIAL_BACKOFF_SECONDS}s",
                    "maxBackoff": f"{MAX_BACKOFF_SECONDS}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }


def balanced_options(
    health_service: str, options: Sequence[tuple[str, Any]] = ()
) -> tuple[tuple[str, Any], ...]:
    """`options` (the caller's keep-alives, message sizes, subchannel pool...) plus the service
    config; the caller's own values win over the defaults added here."""
    names = {name for name, _ in options}
    if "grpc.service_config" in names:
        raise ValueError("the service config is built here, not passed in the options")
    defaults: tuple[tuple[str, Any], ...] = (
        ("grpc.enable_retries", 1),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    )
    return (
        *options,
        *(option for option in defaults if option[0] not in names),
        ("grpc.service_config", json.dumps(service_config(health_service))),
    )


# -- targets ---------------------------------------------------------------------------------

_HOST: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?")
_EXAMPLES: Final = "HOST:PORT, ipv4:IP:PORT,IP:PORT,... or dns:///HOST:PORT"


def grpc_target(environ: Mapping[str, str], name: str, default: str) -> str:
    """The variable as a checked gRPC target (`parse_target`), or `default` when unset."""
    return parse_target(name, optional(environ, name, default))


def parse_target(name: str, value: str) -> str:
    """`value` when it is a target gRPC can dial; else ConfigError naming `name` and the rule.

    Accepted: `host:port` and `[ipv6]:port`; `ipv4:` / `ipv6:` with a comma-separated list of
    addresses; `dns:` with one `host:port` (optionally `dns://resolver/host:port`); `unix:` and
    `unix-abstract:` paths. A port is always required (gRPC would silently dial 443).
    """
    problem = _target_problem(value)
    if problem is not None:
        raise ConfigError(
            f"{name} must be a gRPC target such as {_EXAMPLES}; got {value!r} ({problem})"
        )
    return value


def _target_problem(value: str) -> str | None:
    if not value or any(ch.isspace() for ch in value):
        return "empty or contains spaces"
    scheme, sep, rest = value.partition(":")
    if sep and scheme in ("ipv4", "ipv6"):
        if not rest:
            return f"{scheme}: needs at least one address"
        for entry in rest.split(","):
            problem = _ip_port_problem(scheme, entry)
            if problem is not None:
                return problem
        return None
    if sep and scheme == "dns":
        if rest.startswith("//"):
            _authority, slash, rest = rest[2:].partition("/")
            if not slash:
                return "dns:// must be followed by a resolver and '/', e.g. dns:///vault:50051"
        if "," in rest:
            return "dns: names one host; list several addresses with ipv4: instead"
        return _host_port_problem(rest)
    if sep and scheme in ("unix", "unix-abstract"):
        return None if rest and "," not in rest else f"{scheme}: needs one path"
    if "://" in value:
        return "not a URL: no http:// or https://"
    if "," in value:
        return "several backends need a scheme: ipv4:IP:PORT,IP:PORT or dns:///HOST:PORT"
    return _host_port_problem(value)


def _host_port_problem(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        return f"{value!r} has no :PORT"
    problem = _port_problem(port)
    if problem is not None:
        return problem
    if host.startswith("[") and host.endswith("]"):
        return None if _is_ip(host[1:-1], 6) else f"{host} is not an IPv6 address"
    if ":" in host:
        return f"put an IPv6 address in brackets: [{host}]:{port}"
    return None if _HOST.fullmatch(host) else f"{host!r} is not a host name or address"


def _ip_port_problem(scheme: str, entry: str) -> str | None:
    if not entry:
        return f"an empty address in the {scheme}: list"
    host, sep, port = entry.rpartition(":")
    if not sep or not host:
        return f"{entry!r} has no :PORT"
    if scheme == "ipv6":
        if not (host.startswith("[") and host.endswith("]")):
            return f"write IPv6 addresses as [ADDRESS]:PORT, got {entry!r}"
        host = host[1:-1]
    if not _is_ip(host, 4 if scheme == "ipv4" else 6):
        return f"{host!r} is not an {'IPv4' if scheme == 'ipv4' else 'IPv6'} address"
    return _port_problem(port)


def _port_problem(port: str) -> str | None:
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        return f"the port must be 1..65535, got {port!r}"
    return None


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False
