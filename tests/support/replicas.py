"""The replicated stack of `make run-replicas`, as subprocesses a test can stop and start one by one.

The children are exactly the ones `python -m devstack --replicas` starts (`devstack.replicas`
builds them: two vaults, two gateways, two bridges, the round-robin front, each with its own
environment and `ipv4:` target lists), on the machine's PostgreSQL (a fresh schema per stack) and
Redis, with the fake Workers AI as the upstream and the ports the system has free. Each process
logs to its own file; afterwards every log is checked for the deployment's secrets.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from devstack.replicas import (
    SECRETS,
    Layout,
    prepare_postgres,
    replica_children,
)
from devstack.stack import Child
from tests.support.procs import Service, free_port, start_fake
from tests.support.tokens import TokenFactory

PROJECT = "demo-native1api"
CF_TOKEN = "replicas-e2e-cf-token-0123456789"
MASTER_KEY = "replicas-e2e-master-passphrase-0123456789-abcdef"
SERVICE_TOKEN = "replicas-e2e-service-token-0123456789"
MODEL = "@cf/meta/llama-3.2-3b-instruct"
OR_KEY = "sk-or-v1-" + "5eed" * 16
CACHE_SECONDS = "60"
"""The gateways' AccessApiKey cache TTL: so long that only the vaults' NOTIFY can explain a key
change reaching a gateway within a second."""


@dataclass
class ReplicaStack:
    tmp: Path
    layout: Layout
    children: dict[str, Child]
    """By name: vault-1, vault-2, gateway-1, gateway-2, bridge-1, bridge-2, front."""
    services: dict[str, Service] = field(default_factory=dict)
    fakes: list[Service] = field(default_factory=list)
    token_factory: TokenFactory = field(default_factory=lambda: TokenFactory(project_id=PROJECT))
    tokens: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The one URL: the front."""
        return f"http://{self.layout.front}"

    def headers(self, uid: str, **claims: object) -> dict[str, str]:
        """An emulator-mode ID token for `uid` (a `tier` claim picks a tier)."""
        token = self.token_factory.mint_emulator(uid, **claims)
        self.tokens.append(token)
        return {"Authorization": f"Bearer {token}"}

    def start(self, *names: str) -> None:
        """Start the named children together, then wait until each serves."""
        for name in names:
            child = self.children[name]
            assert child.env is not None
            env = dict(child.env)
            # Whatever this test process's environment holds, a role gets no secret of another.
            for secret, holders in SECRETS.items():
                if child.role not in holders:
                    env.setdefault(secret, "")
                    env.setdefault(f"{secret}_FILE", "")
            service = Service(child.module, env, self.tmp / f"{name}.log", child.args)
            self.services[name] = service.start()
        for name in names:
            child, service = self.children[name], self.services[name]
            if child.role in ("vault", "gateway"):
                service.wait_grpc_healthy(child.address, timeout=30)
            elif child.role == "bridge":
                service.wait_http_ready(f"http://{child.address}/readyz", timeout=30)
            else:
                service.wait_http_ready(f"http://{child.address}/healthz", timeout=30)

    def stop(self, name: str) -> int:
        """SIGTERM one child and wait for it; its exit status."""
        return self.services[name].terminate(timeout=30)

    def stop_all(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        order = ["front", "bridge-1", "bridge-2", "gateway-1", "gateway-2", "vault-1", "vault-2"]
        for name in [n for n in order if n in self.services]:
            service = self.services[name]
            if service.process is not None and service.process.poll() is None:
                codes[name] = service.terminate(timeout=30)
        for fake in self.fakes:
            if fake.process is not None and fake.process.poll() is None:
                fake.terminate()
        return codes

    def bridge_requests(self, bridge: str, route: str, status: int) -> int:
        """How many `route` requests answered `status` bridge `bridge` has counted."""
        child = self.children[bridge]
        assert child.env is not None
        text = httpx.get(f"http://{child.env['BRIDGE_METRICS_ADDR']}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith("native1api_bridge_requests_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.partition("}")[0]))
            if labels.get("route") == route and labels.get("status") == str(status):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def secrets(self) -> list[str]:
        return [CF_TOKEN, MASTER_KEY, SERVICE_TOKEN, *self.tokens]

    def leaked(self) -> list[str]:
        """The log files that hold a secret."""
        secrets = self.secrets()
        return sorted(
            path.name
            for path in self.tmp.glob("*.log")
            if any(secret in path.read_text(errors="replace") for secret in secrets)
        )


@contextlib.contextmanager
def fresh_schema(postgres_admin: str) -> Iterator[str]:
    """A vault database URL on a schema of its own (created the way devstack creates one),
    dropped afterwards."""
    schema = f"t_replicas_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in postgres_admin else "?"
    url = f"{postgres_admin}{sep}options=-csearch_path%3D{schema}"
    prepare_postgres(url)
    try:
        yield url
    finally:
        with psycopg.connect(postgres_admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def running_replicas(
    tmp: Path, postgres_admin: str, redis_url: str, limits_toml: str
) -> Iterator[ReplicaStack]:
    """The replicated stack, all of it started and serving; everything stopped afterwards."""
    limits = tmp / "limits.toml"
    limits.write_text(limits_toml, encoding="utf-8")
    with fresh_schema(postgres_admin) as database_url:
        workers, workers_url = start_fake(
            "workers-ai", [CF_TOKEN], tmp / "workers-ai.log", "--account-id=acct"
        )
        openrouter, openrouter_url = start_fake("openrouter", [OR_KEY], tmp / "openrouter.log")
        common = {
            "FIREBASE_PROJECT_ID": PROJECT,
            "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
            "VAULT_MASTER_KEY": MASTER_KEY,
            "SERVICE_TOKEN": SERVICE_TOKEN,
            "VAULT_DATABASE_URL": database_url,
            # The gateways' ledger: one SQLite file in the test's directory, never the repo's data/.
            "USAGE_DATABASE_URL": f"sqlite:///{tmp}/usage.db",
            "CLOUDFLARE_ACCOUNT_ID": "acct",
            "CLOUDFLARE_API_TOKEN": CF_TOKEN,
            "WORKERS_AI_BASE_URL": workers_url,
            "OPENROUTER_BASE_URL": openrouter_url,
            "GATEWAY_VAULT_CACHE_SECONDS": CACHE_SECONDS,
            "LIMITS_FILE": str(limits),
            "LIMITS_REDIS_URL": redis_url,
            "LOG_LEVEL": "INFO",
        }
        layout = Layout.free(front=f"127.0.0.1:{free_port()}")
        children = replica_children(common, layout, standin=False)
        stack = ReplicaStack(tmp, layout, {child.name: child for child in children})
        stack.fakes += [workers, openrouter]
        try:
            stack.start("vault-1", "vault-2")
            stack.start("gateway-1", "gateway-2")
            stack.start("bridge-1", "bridge-2")
            stack.start("front")
            yield stack
        finally:
            stack.stop_all()
    # Whatever the tests did, no secret reached a log.
    assert stack.leaked() == []
