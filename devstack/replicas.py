"""`python -m devstack --replicas` (what `make run-replicas` calls): two of each behind one URL.

Two vaults sharing one PostgreSQL schema, two gateways sharing their limits through Redis, two
REST bridges, and `devstack.front`, a round-robin TCP front, so that one URL reaches both bridges.
Every gRPC client is given every replica of what it calls as an `ipv4:` target list, each client
starting the list at a different replica: gRPC's default policy (the first address that answers)
then already spreads the load, and a round-robin policy spreads it further.

PostgreSQL and Redis are the machine's: `VAULT_DATABASE_URL` (default: the `native1api_dev`
schema of `postgresql://postgres@127.0.0.1:5432/test`, created if missing) and `LIMITS_REDIS_URL`
(default `redis://127.0.0.1:6379/0`). Both are checked before anything starts.

Ports: the front on `DEVSTACK_FRONT_ADDR` (default 127.0.0.1:8080); the replicas on fixed ports
(vaults 50051 and 50061, gateways 50052 and 50062, bridges 8081 and 8082, bridge metrics 9464 and
9465), or on ports the system picks with `DEVSTACK_REPLICA_PORTS=free`. The banner lists them.

A replica that dies is reported and the others keep serving (as a replicated deployment does);
the stack stops when the last replica of a kind, the front or the Workers AI stand-in dies, when
anything dies before the stack is ready, and on Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from devstack.front import parse_address
from devstack.stack import (
    READY_TIMEOUT_SECONDS,
    STANDIN_PORT,
    Child,
    announce,
    common_env,
    ready,
    say,
    standin_child,
    stop,
)
from rpc_common.healthcheck import check_grpc

REPLICAS = 2
DEFAULT_SCHEMA = "native1api_dev"
DEFAULT_DATABASE_URL = (
    f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{DEFAULT_SCHEMA}"
)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_FRONT_ADDR = "127.0.0.1:8080"
FIXED_PORTS: Mapping[str, tuple[int, ...]] = {
    "vault": (50051, 50061),
    "gateway": (50052, 50062),
    "bridge": (8081, 8082),
    "bridge-metrics": (9464, 9465),
}
SETUP_TIMEOUT_SECONDS = 3

# What each replica is told by the stack itself, whatever the shell says.
PER_REPLICA = (
    "VAULT_LISTEN_ADDR",
    "VAULT_METRICS_ADDR",
    "VAULT_ADDR",
    "GATEWAY_LISTEN_ADDR",
    "GATEWAY_METRICS_ADDR",
    "GATEWAY_ADDR",
    "BRIDGE_LISTEN_ADDR",
    "BRIDGE_METRICS_ADDR",
)
# Who may hold each secret (SPEC §11), as in docker-compose.yml: a process is not given the
# others (nor their NAME_FILE forms). LIMITS_REDIS_URL and VAULT_DATABASE_URL may hold passwords.
SECRETS: Mapping[str, frozenset[str]] = {
    "VAULT_MASTER_KEY": frozenset({"vault"}),
    "VAULT_PREVIOUS_MASTER_KEYS": frozenset({"vault"}),
    "VAULT_DATABASE_URL": frozenset({"vault"}),
    "SERVICE_TOKEN": frozenset({"vault", "gateway"}),
    "CLOUDFLARE_ACCOUNT_ID": frozenset({"gateway"}),
    "CLOUDFLARE_API_TOKEN": frozenset({"gateway"}),
    "LIMITS_REDIS_URL": frozenset({"gateway"}),
}
ROLES = ("vault", "gateway", "bridge")


class SetupError(Exception):
    """Something the replicated stack needs is missing; the message says what to do."""


@dataclass(frozen=True)
class Layout:
    """Where every process of the replicated stack listens (HOST:PORT each)."""

    front: str
    vaults: tuple[str, ...]
    gateways: tuple[str, ...]
    bridges: tuple[str, ...]
    bridge_metrics: tuple[str, ...]

    @classmethod
    def fixed(cls, front: str = DEFAULT_FRONT_ADDR) -> Layout:
        def on(role: str) -> tuple[str, ...]:
            return tuple(f"127.0.0.1:{port}" for port in FIXED_PORTS[role][:REPLICAS])

        return cls(front, on("vault"), on("gateway"), on("bridge"), on("bridge-metrics"))

    @classmethod
    def free(cls, front: str = DEFAULT_FRONT_ADDR, replicas: int = REPLICAS) -> Layout:
        """Ports the system has free now (the usual small race: nothing holds them after)."""
        with _free_ports(4 * replicas) as ports:
            addresses = [f"127.0.0.1:{port}" for port in ports]
        groups = [tuple(addresses[i * replicas : (i + 1) * replicas]) for i in range(4)]
        return cls(front, *groups)

    def listeners(self) -> list[str]:
        return [self.front, *self.vaults, *self.gateways, *self.bridges, *self.bridge_metrics]


@contextlib.contextmanager
def _free_ports(count: int) -> Iterator[list[int]]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        yield [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def target_list(addresses: Sequence[str], first: int) -> str:
    """A gRPC `ipv4:` target over every replica, starting with replica `first`."""
    rotated = [*addresses[first:], *addresses[:first]]
    return "ipv4:" + ",".join(rotated)


def role_env(common: Mapping[str, str], role: str, settings: Mapping[str, str]) -> dict[str, str]:
    """`common` without the secrets `role` may not hold and the per-replica settings, plus
    `settings`."""
    env = {
        key: value
        for key, value in common.items()
        if key not in PER_REPLICA and role in SECRETS.get(key.removesuffix("_FILE"), {role})
    }
    env.update(settings)
    return env


def replica_children(common: Mapping[str, str], layout: Layout, standin: bool) -> list[Child]:
    """Every child of the replicated stack, in start order (the stand-in, the vaults, the
    gateways, the bridges, the front), each with its own environment."""
    children: list[Child] = []
    if standin:
        child = standin_child(dict(common))
        child.name = "workers-ai"  # its lines' label: as short as the others'
        child.env = role_env(common, "standin", {})
        children.append(child)
    for i, address in enumerate(layout.vaults):
        env = role_env(common, "vault", {"VAULT_LISTEN_ADDR": address, "VAULT_METRICS_ADDR": ""})
        children.append(Child(f"vault-{i + 1}", "vault_service", (), env, "vault", address))
    for i, address in enumerate(layout.gateways):
        env = role_env(
            common,
            "gateway",
            {
                "GATEWAY_LISTEN_ADDR": address,
                "GATEWAY_METRICS_ADDR": "",
                "VAULT_ADDR": target_list(layout.vaults, i),
            },
        )
        children.append(Child(f"gateway-{i + 1}", "gateway_service", (), env, "gateway", address))
    for i, (address, metrics) in enumerate(zip(layout.bridges, layout.bridge_metrics, strict=True)):
        env = role_env(
            common,
            "bridge",
            {
                "BRIDGE_LISTEN_ADDR": address,
                "BRIDGE_METRICS_ADDR": metrics,
                "GATEWAY_ADDR": target_list(layout.gateways, i),
                "VAULT_ADDR": target_list(layout.vaults, i),
            },
        )
        children.append(Child(f"bridge-{i + 1}", "rest_bridge", (), env, "bridge", address))
    args = ["--listen", layout.front]
    for address in layout.bridges:
        args += ["--backend", address]
    env = role_env(common, "front", {})
    children.append(Child("front", "devstack.front", tuple(args), env, "front", layout.front))
    return children


def stop_waves(children: Sequence[Child]) -> list[list[Child]]:
    """The order to stop in: the front with the bridges (the front keeps carrying the streams the
    bridges drain), then the gateways, the vaults, the stand-in."""
    order = (("front", "bridge"), ("gateway",), ("vault",), ("standin",))
    return [[c for c in children if c.role in roles] for roles in order]


# -- the machine's PostgreSQL and Redis ------------------------------------------------------


def redacted(url: str) -> str:
    """`url` with any password replaced by `***`."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*([^\s]+)")


def search_path_schema(url: str) -> str | None:
    """The first schema of the URL's `options=-csearch_path=...`, where the vault's tables go."""
    options = conninfo_to_dict(url).get("options")
    match = _SEARCH_PATH.search(str(options or ""))
    if match is None:
        return None
    first = match.group(1).split(",")[0].strip().strip('"')
    return first if first and first != "$user" else None


def database_url(env: Mapping[str, str]) -> str:
    url = env.get("VAULT_DATABASE_URL", DEFAULT_DATABASE_URL)
    if not url.startswith(("postgresql://", "postgres://")):
        scheme = url.partition(":")[0]
        raise SetupError(
            f"VAULT_DATABASE_URL is a {scheme} URL, but the two vault replicas must share one "
            "PostgreSQL database: unset it (to use the machine's PostgreSQL, "
            f"{DEFAULT_DATABASE_URL}) or set it to a postgresql:// URL"
        )
    return url


def prepare_postgres(url: str) -> None:
    """Connect once and create the URL's schema if it is missing; SetupError if impossible."""
    try:
        schema = search_path_schema(url)
        with psycopg.connect(url, connect_timeout=SETUP_TIMEOUT_SECONDS, autocommit=True) as conn:
            if schema is not None:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SetupError(
            f"PostgreSQL is not usable at {redacted(url)} ({reason}). The vault replicas keep "
            "their keys there: start PostgreSQL, or set VAULT_DATABASE_URL to another "
            "(postgresql://USER[:PASSWORD]@HOST:PORT/DB?options=-csearch_path%3DSCHEMA)"
        ) from None


def check_redis(url: str) -> None:
    """PING the limits store; SetupError if it does not answer."""
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=SETUP_TIMEOUT_SECONDS,
            socket_timeout=SETUP_TIMEOUT_SECONDS,
        )
    except ValueError:
        raise SetupError(
            "LIMITS_REDIS_URL is not a Redis URL (redis://HOST:PORT/DB, rediss://, unix://)"
        ) from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SetupError(
            f"Redis is not reachable at {redacted(url)} ({exc}). The gateway replicas share "
            "their limits there: start Redis, or set LIMITS_REDIS_URL to another "
            "(redis://[:PASSWORD@]HOST:PORT/DB)"
        ) from None
    finally:
        client.close()


def check_free(addresses: Sequence[str]) -> None:
    """SetupError naming the first address something already listens on."""
    for address in addresses:
        host, port = parse_address(address)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise SetupError(
                    f"{address} is in use ({exc.strerror}): is another `make run` or "
                    "`make run-replicas` running? Stop it, or run with DEVSTACK_REPLICA_PORTS=free "
                    "(and DEVSTACK_FRONT_ADDR=127.0.0.1:PORT for the front)"
                ) from None


def layout_from_env(env: Mapping[str, str]) -> Layout:
    front = env.get("DEVSTACK_FRONT_ADDR", DEFAULT_FRONT_ADDR)
    try:
        parse_address(front)
    except ValueError:
        raise SetupError(f"DEVSTACK_FRONT_ADDR must be HOST:PORT, got {front!r}") from None
    mode = env.get("DEVSTACK_REPLICA_PORTS", "fixed")
    if mode == "fixed":
        return Layout.fixed(front)
    if mode == "free":
        return Layout.free(front)
    raise SetupError(f"DEVSTACK_REPLICA_PORTS must be fixed or free, got {mode!r}")


# -- running it ------------------------------------------------------------------------------


def _ready(child: Child) -> bool:
    if child.role in ("vault", "gateway"):
        return check_grpc(child.address, timeout=1.0) is None
    if child.role in ("bridge", "front"):
        return ready(f"http://{child.address}/readyz")
    return True  # the stand-in: the gateways' readiness does not depend on it


def _banner(env: Mapping[str, str], children: Sequence[Child], standin: bool) -> None:
    def pid(child: Child) -> str:
        return f"pid {child.process.pid}" if child.process else ""

    front = next(c for c in children if c.role == "front")
    url = f"http://{front.address}"
    lines = [
        "",
        "=" * 78,
        f" Native1API, {REPLICAS} replicas of each service, is running: {url}",
        f"   front      {front.address:<16} {pid(front):<10} round robin over the bridges, "
        "one connection at a time",
    ]
    for child in children:
        assert child.env is not None
        if child.role == "bridge":
            lines += [
                f"   {child.name:<10} {child.address:<16} {pid(child):<10} "
                f"metrics http://{child.env['BRIDGE_METRICS_ADDR']}/metrics",
                f"{'':<42}gateways {child.env['GATEWAY_ADDR']}",
                f"{'':<42}vaults   {child.env['VAULT_ADDR']}",
            ]
        elif child.role == "gateway":
            lines.append(
                f"   {child.name:<10} {child.address:<16} {pid(child):<10} "
                f"vaults {child.env['VAULT_ADDR']}"
            )
        elif child.role == "vault":
            lines.append(f"   {child.name:<10} {child.address:<16} {pid(child)}")
    lines += [
        "",
        f" Vault keys: PostgreSQL {redacted(env['VAULT_DATABASE_URL'])}",
        "   (VAULT_DATABASE_URL; both vaults, one schema)",
    ]
    if "LIMITS_FILE" in env:
        lines += [
            f" Limits: {env['LIMITS_FILE']}, one budget for both gateways in Redis",
            f"   {redacted(env['LIMITS_REDIS_URL'])} (LIMITS_REDIS_URL);"
            f" a user's state: GET {url}/v1/usage",
        ]
    lines += [
        f" Auth: Firebase Auth Emulator mode, project {env['FIREBASE_PROJECT_ID']}"
        " (signatures NOT checked: development only)",
        " A dev ID token:   make token USER=alice",
        "",
        " curl (each new connection goes to the next bridge):",
        "   TOKEN=$(make -s token USER=alice)",
        f'   curl -s {url}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\',
        "     -H 'Content-Type: application/json' \\",
        '     -d \'{"model":"@cf/meta/llama-3.2-3b-instruct",',
        '          "messages":[{"role":"user","content":"Hello"}],"stream":true}\'',
    ]
    if standin:
        lines += [
            "",
            " !! No CLOUDFLARE_ACCOUNT_ID / CLOUDFLARE_API_TOKEN set: completions are served by",
            f" !! the LOCAL Workers AI STAND-IN on 127.0.0.1:{STANDIN_PORT}, not real models.",
        ]
    lines += [
        "",
        " A replica that dies is reported and the others keep serving (try: kill a gateway's",
        " pid); the last of a kind, the front or the stand-in dying stops everything.",
        " Ctrl-C stops everything.",
        "=" * 78,
        "",
    ]
    announce("\n".join(lines) + "\n")


def _prepare() -> tuple[dict[str, str], bool, Layout]:
    env, standin = common_env()
    layout = layout_from_env(env)
    check_free([*layout.listeners(), *([f"127.0.0.1:{STANDIN_PORT}"] if standin else [])])
    env["VAULT_DATABASE_URL"] = database_url(env)
    env["LIMITS_REDIS_URL"] = env.get("LIMITS_REDIS_URL", DEFAULT_REDIS_URL)
    prepare_postgres(env["VAULT_DATABASE_URL"])
    check_redis(env["LIMITS_REDIS_URL"])
    return env, standin, layout


def run_replicas() -> int:
    try:
        env, standin, layout = _prepare()
    except SetupError as exc:
        say(str(exc))
        return 1
    children = replica_children(env, layout, standin)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for child in children:
        child.start(env, label=True)
        assert child.process is not None
        say(f"started {child.name} (pid {child.process.pid}) {child.address}".rstrip())
    unready = list(children)
    announced = False
    reported: set[str] = set()
    started = time.monotonic()
    code = 0
    while not stopping:
        dead = [c for c in children if not c.running and c.name not in reported]
        if dead:
            code = _on_deaths(dead, children, announced)
            if code:
                break
            reported |= {c.name for c in dead}
        if not announced:
            unready = [child for child in unready if not _ready(child)]
            if not unready:
                _banner(env, children, standin)
                announced = True
            elif time.monotonic() - started > READY_TIMEOUT_SECONDS:
                names = ", ".join(child.name for child in unready)
                say(f"not ready after {READY_TIMEOUT_SECONDS:.0f} s: {names}; see the logs above")
                code = 1
                break
        time.sleep(0.2)
    say("stopping")
    stop(stop_waves(children), grace_seconds=25.0)
    return code


def _on_deaths(dead: Sequence[Child], children: Sequence[Child], announced: bool) -> int:
    """Report the children that just exited; 1 when that stops the stack, else 0."""
    for child in dead:
        assert child.process is not None
        status = child.process.returncode
        survivors = [c.name for c in children if c.role == child.role and c.running]
        if not announced:
            say(
                f"{child.name} exited with status {status} while starting; stopping the others. "
                "Its log lines above say why."
            )
            return 1
        if child.role in ROLES and survivors:
            say(
                f"{child.name} exited with status {status}; {', '.join(survivors)} still "
                "serving. Its log lines above say why; Ctrl-C stops everything."
            )
            continue
        say(
            f"{child.name} exited with status {status}, the last of its kind; stopping the "
            "others. Its log lines above say why."
        )
        return 1
    return 0
