"""docker-compose.yml checked against the code (no Docker engine runs on our machines).

Every command is a real module, every variable compose or .env.example sets is one a service
reads, addresses and ports agree, healthchecks exist and work against live servers, and the
README documents every variable the services read.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import yaml

from gateway_service.config import GatewaySettings
from rest_bridge.config import BridgeSettings
from tests.support.procs import REPO
from tests.support.stack import Stack
from vault_service.config import VaultSettings

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
OUR_SERVICES = {"vault": "vault_service", "gateway": "gateway_service", "bridge": "rest_bridge"}
# Variables compose itself interpolates (never passed to our processes).
COMPOSE_ONLY = {"BRIDGE_PORT", "POSTGRES_PASSWORD"}

FULL_ENV = {
    "FIREBASE_PROJECT_ID": "demo-native1api",
    "VAULT_MASTER_KEY": "x" * 40,
    "SERVICE_TOKEN": "service-token-value",
    "CLOUDFLARE_ACCOUNT_ID": "acct",
    "CLOUDFLARE_API_TOKEN": "cf-token",
}


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every variable name a settings loader looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.seen: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.seen.add(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.seen.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def variables_read(loader: Callable[[Mapping[str, str]], object]) -> set[str]:
    env = RecordingEnv(FULL_ENV)
    loader(env)
    return env.seen


READ_BY = {
    "vault": variables_read(VaultSettings.from_env),
    "gateway": variables_read(GatewaySettings.from_env),
    "bridge": variables_read(BridgeSettings.from_env),
}
ALL_READ = set().union(*READ_BY.values())


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = COMPOSE["services"][name]
    return service


def test_every_command_is_a_real_module() -> None:
    for name, module in OUR_SERVICES.items():
        command = _service(name)["command"]
        assert command == ["python", "-m", module]
        assert importlib.util.find_spec(f"{module}.__main__") is not None


def test_one_image_for_all_services() -> None:
    images = {_service(name)["image"] for name in OUR_SERVICES}
    assert images == {"native1api:latest"}
    assert all(_service(name)["env_file"] == ".env" for name in OUR_SERVICES)


@pytest.mark.parametrize("name", sorted(OUR_SERVICES))
def test_environment_is_read_by_the_service(name: str) -> None:
    for variable in _service(name).get("environment", {}):
        assert variable in READ_BY[name], f"{name} sets {variable}, which it never reads"


def test_env_example_lists_only_variables_the_services_read() -> None:
    text = (REPO / ".env.example").read_text()
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert {"FIREBASE_PROJECT_ID", "VAULT_MASTER_KEY", "SERVICE_TOKEN"} <= names
    unknown = names - ALL_READ - COMPOSE_ONLY
    assert not unknown, f".env.example names variables no service reads: {unknown}"


def _port(address: str) -> str:
    return address.rpartition(":")[2]


def test_addresses_and_ports_agree() -> None:
    vault_env = _service("vault")["environment"]
    gateway_env = _service("gateway")["environment"]
    bridge_env = _service("bridge")["environment"]
    vault_port = _port(vault_env["VAULT_LISTEN_ADDR"])
    gateway_port = _port(gateway_env["GATEWAY_LISTEN_ADDR"])
    assert gateway_env["VAULT_ADDR"] == f"vault:{vault_port}"
    assert bridge_env["VAULT_ADDR"] == f"vault:{vault_port}"
    assert bridge_env["GATEWAY_ADDR"] == f"gateway:{gateway_port}"
    # Only the bridge is published, on its own listen port.
    assert [name for name in OUR_SERVICES if "ports" in _service(name)] == ["bridge"]
    (published,) = _service("bridge")["ports"]
    assert published.rsplit(":", 1)[1] == _port(bridge_env["BRIDGE_LISTEN_ADDR"])
    # Healthchecks probe the service's own port.
    assert _service("vault")["healthcheck"]["test"][-1].endswith(f":{vault_port}")
    assert _service("gateway")["healthcheck"]["test"][-1].endswith(f":{gateway_port}")
    assert (
        f":{_port(bridge_env['BRIDGE_LISTEN_ADDR'])}/readyz"
        in _service("bridge")["healthcheck"]["test"][-1]
    )


def test_dependencies_wait_for_health_and_data_is_on_a_volume() -> None:
    assert _service("gateway")["depends_on"]["vault"]["condition"] == "service_healthy"
    assert _service("bridge")["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert "vault-data:/data" in _service("vault")["volumes"]
    assert "vault-data" in COMPOSE["volumes"]
    assert _service("vault")["environment"]["VAULT_DATABASE_URL"].endswith(
        "sqlite:////data/vault.db}"
    )
    assert _service("postgres")["profiles"] == ["postgres"]
    for name in ("gateway", "bridge"):
        assert _service(name)["deploy"]["replicas"] >= 1


def test_readme_documents_every_variable() -> None:
    readme = (REPO / "README.md").read_text()
    missing = sorted(v for v in ALL_READ if f"`{v}`" not in readme)
    assert not missing, f"README configuration table lacks {missing}"


def test_env_file_is_ignored_by_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False
    ).returncode
    assert ignored == 0


def _healthcheck(test: list[str], address: str) -> subprocess.CompletedProcess[str]:
    assert test[:4] == ["CMD", "python", "-m", "rpc_common.healthcheck"]
    argv = [sys.executable, "-m", "rpc_common.healthcheck", *test[4:-1], address]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


async def test_grpc_healthchecks_work_against_live_servers(stack: Stack) -> None:
    # The servers run on this event loop: the probe must not block it.
    for name, address in (("vault", stack.vault_address), ("gateway", stack.gateway_address)):
        result = await asyncio.to_thread(
            _healthcheck, _service(name)["healthcheck"]["test"], address
        )
        assert result.returncode == 0, result.stderr
    dead = _healthcheck(_service("vault")["healthcheck"]["test"], "127.0.0.1:1")
    assert dead.returncode == 1
    assert "unhealthy" in dead.stderr


def test_dockerfile_runs_as_non_root_with_cached_dependency_layer() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", dockerfile, flags=re.MULTILINE)
    deps_at = dockerfile.index("COPY pyproject.toml")
    code_at = dockerfile.index("COPY rpc_common")
    assert deps_at < dockerfile.index("pip install -r") < code_at
    for module in OUR_SERVICES.values():
        assert f"COPY {module} " in dockerfile
