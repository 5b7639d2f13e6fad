"""docker-compose.yml checked against the code (no Docker engine runs on our machines).

Every command is a real module, every variable compose or .env.example sets is one a service
reads, addresses and ports agree, healthchecks exist and work against live servers, the limits
file the gateway is given is in the image and loads, and the README documents every variable the
services read.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway_service.config import GatewaySettings
from gateway_service.limits.settings import LimitsSettings
from gateway_service.limits.tiers import DEFAULT_TIER, load_tiers, missing_default
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
    assert [name for name in COMPOSE["services"] if "ports" in _service(name)] == ["bridge"]
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


# -- admission control: Redis and the limits file ---------------------------------------------


def test_redis_service_is_private_healthchecked_and_always_on() -> None:
    redis = _service("redis")
    assert redis["image"].startswith("redis:7")
    assert "ports" not in redis
    assert "profiles" not in redis  # the gateway needs it in every configuration
    assert redis["restart"] == "unless-stopped"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_gateway_waits_for_redis_and_shares_its_limits_through_it() -> None:
    gateway = _service("gateway")
    assert gateway["depends_on"]["redis"] == {"condition": "service_healthy"}
    env = gateway["environment"]
    assert env["LIMITS_REDIS_URL"] == "redis://redis:6379/0"
    assert env["LIMITS_FILE"].startswith("/")
    # The bridge only copies the gateway's answers: the limits are the gateway's alone.
    for name in ("vault", "bridge"):
        assert not any(v.startswith("LIMITS_") for v in _service(name).get("environment", {}))


def _image_files() -> dict[PurePosixPath, Path]:
    """Where the Dockerfile's `COPY <repo path> <dest>` lines put things in the image."""
    workdir = PurePosixPath("/")
    copies: dict[PurePosixPath, Path] = {}
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "WORKDIR":
            workdir = workdir / words[1]
        elif len(words) == 3 and words[0] == "COPY" and not words[1].startswith("--"):
            source, dest = REPO / words[1], workdir / words[2]
            if source.is_file() and words[2].endswith("/"):
                dest = dest / source.name
            copies[dest] = source
    return copies


def _dockerignored(relative: PurePosixPath) -> bool:
    """Whether .dockerignore keeps `relative` (or a folder holding it) out of the build context."""
    candidates = [str(relative), *(str(parent) for parent in relative.parents if parent.parts)]
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        patterns = [pattern]
        if pattern.startswith("**/"):
            patterns.append(pattern[3:])
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns):
            ignored = not negate
    return ignored


def _limits_file_in_repo() -> Path:
    in_image = PurePosixPath(_service("gateway")["environment"]["LIMITS_FILE"])
    copies = _image_files()
    for dest in sorted(copies, key=lambda d: len(d.parts), reverse=True):  # the deepest first
        if in_image.is_relative_to(dest):
            return copies[dest] / in_image.relative_to(dest)
    raise AssertionError(f"no Dockerfile COPY puts anything at {in_image}")


def test_limits_file_is_copied_into_the_image() -> None:
    path = _limits_file_in_repo()
    assert path == REPO / "config" / "limits.toml"
    assert path.is_file()
    assert not _dockerignored(PurePosixPath(path.relative_to(REPO).as_posix()))
    # The check itself sees what .dockerignore excludes.
    assert _dockerignored(PurePosixPath("tests/deploy/test_compose.py"))
    assert _dockerignored(PurePosixPath("gateway_service/__pycache__/x.pyc"))


def test_shipped_limits_file_loads_with_real_limits() -> None:
    table = load_tiers(_limits_file_in_repo())
    assert not missing_default(table)
    assert {DEFAULT_TIER, "anonymous", "pro"} <= set(table.tiers)
    limits = {
        name: (tier.requests_per_minute, tier.tokens_per_day, tier.max_concurrent_requests)
        for name, tier in table.tiers.items()
    }
    for name, values in limits.items():
        assert all(values), f"tier {name} leaves a limit unset or at 0: {values}"
    # Anonymous sign-ins are free to create: they get less than a signed-in user.
    default, anonymous = table.tiers[DEFAULT_TIER], table.tiers["anonymous"]
    assert (anonymous.requests_per_minute or 0) < (default.requests_per_minute or 0)
    assert (anonymous.tokens_per_day or 0) < (default.tokens_per_day or 0)


def test_gateway_accepts_the_compose_limits_settings() -> None:
    env = dict(_service("gateway")["environment"])
    env["LIMITS_FILE"] = str(_limits_file_in_repo())  # the image's path, on this machine
    settings = LimitsSettings.from_env(env)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.tiers.source == env["LIMITS_FILE"]
