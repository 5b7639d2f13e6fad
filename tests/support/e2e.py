"""The three services as subprocesses (the commands compose runs), against fake upstreams."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.token import mint_emulator_token
from tests.support.procs import Service, free_port, start_fake

PROJECT = "demo-native1api"
CF_TOKEN = "e2e-cf-token-0123456789"
OR_KEY = "sk-or-v1-" + "e2e0" * 16
MODEL = "@cf/meta/llama-3.2-3b-instruct"


@dataclass
class E2E:
    tmp: Path
    env: dict[str, str]
    bridge_url: str
    vault_address: str
    gateway_address: str
    services: dict[str, Service]
    fakes: list[Service]

    def start(self, name: str) -> Service:
        module = {"vault": "vault_service", "gateway": "gateway_service", "bridge": "rest_bridge"}
        service = Service(module[name], self.env, self.tmp / f"{name}.log").start()
        # Tracked before it is ready, so one that never gets ready is still stopped afterwards.
        self.services[name] = service
        if name == "bridge":
            service.wait_http_ready(f"{self.bridge_url}/healthz")
        else:
            address = self.vault_address if name == "vault" else self.gateway_address
            service.wait_grpc_healthy(address)
        return service

    def headers(self, uid: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_emulator_token(uid, PROJECT)}"}


@contextlib.contextmanager
def running_processes(
    tmp_path: Path,
    emulator_host: str = "127.0.0.1:9099",
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[E2E]:
    """Fakes, vault, gateway and bridge as subprocesses in emulator-mode auth; all stopped after.

    `extra_env` adds or overrides variables of all three services (e.g. LIMITS_FILE).

    Afterwards every process log is checked for the deployment's secrets.
    """
    workers, workers_url = start_fake(
        "workers-ai", [CF_TOKEN], tmp_path / "wai.log", "--account-id=acct"
    )
    openrouter, openrouter_url = start_fake("openrouter", [OR_KEY], tmp_path / "or.log")
    together, together_url = start_fake("together", ["tgp_unused"], tmp_path / "tg.log")
    ports = {name: free_port() for name in ("vault", "gateway", "bridge")}
    env = {
        "FIREBASE_PROJECT_ID": PROJECT,
        "FIREBASE_AUTH_EMULATOR_HOST": emulator_host,
        "VAULT_MASTER_KEY": "e2e-master-passphrase-0123456789-abcdef",
        "SERVICE_TOKEN": "e2e-service-token-0123456789",
        "VAULT_DATABASE_URL": f"sqlite:///{tmp_path}/vault.db",
        # Never the default data/usage.db: that is relative to the repository (the cwd).
        "USAGE_DATABASE_URL": f"sqlite:///{tmp_path}/usage.db",
        "VAULT_LISTEN_ADDR": f"127.0.0.1:{ports['vault']}",
        "GATEWAY_LISTEN_ADDR": f"127.0.0.1:{ports['gateway']}",
        "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{ports['bridge']}",
        "VAULT_ADDR": f"127.0.0.1:{ports['vault']}",
        "GATEWAY_ADDR": f"127.0.0.1:{ports['gateway']}",
        "CLOUDFLARE_ACCOUNT_ID": "acct",
        "CLOUDFLARE_API_TOKEN": CF_TOKEN,
        "WORKERS_AI_BASE_URL": workers_url,
        "OPENROUTER_BASE_URL": openrouter_url,
        "TOGETHER_BASE_URL": together_url,
        "GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "LOG_LEVEL": "DEBUG",
        "BRIDGE_METRICS_ADDR": f"127.0.0.1:{free_port()}",  # never the shared default port
        **(extra_env or {}),
    }
    stack = E2E(
        tmp=tmp_path,
        env=env,
        bridge_url=f"http://127.0.0.1:{ports['bridge']}",
        vault_address=env["VAULT_ADDR"],
        gateway_address=env["GATEWAY_ADDR"],
        services={},
        fakes=[workers, openrouter, together],
    )
    try:
        for name in ("vault", "gateway", "bridge"):
            stack.start(name)
        yield stack
    finally:
        for service in [*reversed(stack.services.values()), *stack.fakes]:
            if service.process is not None and service.process.poll() is None:
                service.terminate()
    # Nothing secret in any process's log, whatever the test did.
    for path in tmp_path.glob("*.log"):
        text = path.read_text(errors="replace")
        for secret in (OR_KEY, CF_TOKEN, env["VAULT_MASTER_KEY"], env["SERVICE_TOKEN"]):
            assert secret not in text, f"a secret leaked into {path.name}"
