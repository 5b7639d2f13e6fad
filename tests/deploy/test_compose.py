"""docker-compose.yml checked against the code (no Docker engine runs on our machines).

Every command is a real module, every variable compose, .env.example or a secrets template sets is
one a service reads, each process receives only its own secrets (the bridge none), no metrics port
is published, addresses and ports agree, healthchecks exist and work against live servers, the
limits file the gateway is given is in the image and loads, the image installs the hash-locked
dependencies, and the README documents every variable the services read.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.util
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway_service.config import GatewaySettings
from gateway_service.limits.settings import LimitsSettings
from gateway_service.limits.tiers import DEFAULT_TIER, load_tiers, missing_default
from rest_bridge.config import BridgeSettings
from rpc_common import tracing
from tests.support.procs import REPO
from tests.support.stack import Stack
from vault_service.config import VaultSettings

COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
OUR_SERVICES = {"vault": "vault_service", "gateway": "gateway_service", "bridge": "rest_bridge"}
# The `replicas` profile (SPEC §12): its own copy of each service, and the role each one plays.
REPLICAS_PROFILE = "replicas"
REPLICA_ROLES = {
    "vault-replicas": "vault",
    "gateway-replicas": "gateway",
    "bridge-replicas": "bridge",
    "postgres-replicas": "postgres",
    "redis-replicas": "redis",
    "lb": "lb",
}
REPLICA_SERVICES = {name: role for name, role in REPLICA_ROLES.items() if role in OUR_SERVICES}
# Variables compose itself interpolates (never passed to our processes).
COMPOSE_ONLY = {"BRIDGE_PORT"}
# What an operator must keep from everyone else (SPEC §11), and who may hold each. A `NAME_FILE`
# form counts as the secret itself.
SECRETS: dict[str, set[str]] = {
    "VAULT_MASTER_KEY": {"vault"},
    "VAULT_PREVIOUS_MASTER_KEYS": {"vault"},
    "VAULT_DATABASE_URL": {"vault"},  # may carry the PostgreSQL password
    "SERVICE_TOKEN": {"vault", "gateway"},
    "CLOUDFLARE_ACCOUNT_ID": {"gateway"},
    "CLOUDFLARE_API_TOKEN": {"gateway"},
    "POSTGRES_PASSWORD": {"postgres"},
}

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


# Settings read only when another one switches them on (App Check's, when it is not off).
SWITCHED_ON = {"APP_CHECK_MODE": "monitor", "FIREBASE_PROJECT_NUMBER": "123456789012"}


def variables_read(loader: Callable[[Mapping[str, str]], object]) -> set[str]:
    seen: set[str] = set()
    for values in (FULL_ENV, {**FULL_ENV, **SWITCHED_ON}):
        env = RecordingEnv(values)
        loader(env)
        seen |= env.seen
    return seen


READ_BY = {
    "vault": variables_read(VaultSettings.from_env),
    "gateway": variables_read(GatewaySettings.from_env),
    "bridge": variables_read(BridgeSettings.from_env),
}
# Tracing is read by every process at start-up (rpc_common.tracing.setup), not by its settings.
READ_BY = {name: read | set(tracing.VARIABLES) for name, read in READ_BY.items()}
ALL_READ = set().union(*READ_BY.values())


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = COMPOSE["services"][name]
    return service


def _role(name: str) -> str:
    """What a service is (a replicas-profile service plays the role of a default one)."""
    return REPLICA_ROLES.get(name, name)


def _in_profile(name: str, profile: str | None) -> bool:
    """Whether a service runs with `profile` (None: the default stack, no profile at all)."""
    profiles = _service(name).get("profiles", [])
    return not profiles if profile is None else profile in profiles


def _is_secret(variable: str) -> bool:
    return variable.removesuffix("_FILE") in SECRETS


_ASSIGNMENT = re.compile(r"^(#?)\s*([A-Z][A-Z0-9_]*)=(.*)$", flags=re.MULTILINE)


def _names(path: Path) -> set[str]:
    """Every variable an env file (or its template) sets or offers in a commented-out line."""
    return {match[2] for match in _ASSIGNMENT.finditer(path.read_text())}


def _assignments(path: Path) -> dict[str, str]:
    """The variables an env file (or its template) sets as it stands."""
    return {m[2]: m[3].strip() for m in _ASSIGNMENT.finditer(path.read_text()) if not m[1]}


def _env_files(name: str) -> list[str]:
    """The env files compose gives a service (short or long `env_file` syntax)."""
    raw = _service(name).get("env_file", [])
    entries = [raw] if isinstance(raw, str | dict) else raw
    return [entry if isinstance(entry, str) else entry["path"] for entry in entries]


def _template(env_file: str) -> Path:
    return REPO / f"{env_file}.example"


def _received(name: str) -> set[str]:
    """Every variable compose may hand a service: its `environment:` and its env files'."""
    received = set(_service(name).get("environment", {}))
    for env_file in _env_files(name):
        received |= _names(_template(env_file))
    return received


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    """compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (and the forms without `:`)."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match[1], match[2] or "", match[3] or ""
        current = env.get(name)
        missing = current is None or (operator.startswith(":") and not current)
        if operator.endswith("?") and missing:
            raise KeyError(f"{name}: {argument}")
        if operator.endswith("-") and missing:
            return argument
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _interpolated() -> set[str]:
    """Every variable compose interpolates anywhere in the file (comments aside)."""
    return {m[1] for text in _strings(COMPOSE) for m in _INTERPOLATION.finditer(text)}


def _runtime_env(name: str) -> dict[str, str]:
    """What a service's process sees when the operator fills in the templates as they stand."""
    dotenv = _assignments(REPO / ".env.example")
    env: dict[str, str] = {}
    for env_file in _env_files(name):
        # An empty value in a template is a secret to fill in: any long random value.
        env |= {k: v or "s3cret-" + "x" * 40 for k, v in _assignments(_template(env_file)).items()}
    env |= {k: _interpolate(str(v), dotenv) for k, v in _service(name)["environment"].items()}
    return env


def test_every_command_is_a_real_module() -> None:
    for name, module in OUR_SERVICES.items():
        command = _service(name)["command"]
        assert command == ["python", "-m", module]
        assert importlib.util.find_spec(f"{module}.__main__") is not None


def test_one_image_for_all_services() -> None:
    images = {_service(name)["image"] for name in OUR_SERVICES}
    assert images == {"native1api:latest"}


@pytest.mark.parametrize("name", sorted([*OUR_SERVICES, *REPLICA_SERVICES]))
def test_environment_is_read_by_the_service(name: str) -> None:
    for variable in _service(name).get("environment", {}):
        assert variable in READ_BY[_role(name)], f"{name} sets {variable}, which it never reads"


def test_env_example_lists_only_variables_the_services_read() -> None:
    names = _names(REPO / ".env.example")
    assert "FIREBASE_PROJECT_ID" in names
    unknown = names - ALL_READ - COMPOSE_ONLY
    assert not unknown, f".env.example names variables no service reads: {unknown}"
    # .env is only compose's interpolation file: it names exactly what compose picks out of it
    # (nothing else there would reach a process), and no secret.
    assert names == _interpolated()
    assert not {name for name in names if _is_secret(name)}


@pytest.mark.parametrize(
    "name", [*sorted(OUR_SERVICES), "postgres", "redis", *sorted(REPLICA_ROLES)]
)
def test_env_files_are_templated_and_hold_only_what_their_readers_read(name: str) -> None:
    readers = {
        **READ_BY,
        "postgres": {"POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE"},
        "redis": set(),
        "lb": set(),
    }
    for env_file in _env_files(name):
        assert env_file.startswith("secrets/") and env_file.endswith(".env")
        template = _template(env_file)
        assert template.is_file(), f"{env_file} has no committed template {template.name}"
        extra = _names(template) - readers[_role(name)]
        assert not extra, f"{env_file} reaches {name}, which never reads {extra}"


def test_secret_list_covers_every_secret_the_services_read() -> None:
    # Every variable read through rpc_common.config.secret (NAME or NAME_FILE) is listed above.
    from_code = {name.removesuffix("_FILE") for name in ALL_READ if name.endswith("_FILE")}
    from_code &= {name for name in ALL_READ if not name.endswith("_FILE")}
    assert from_code <= set(SECRETS), from_code - set(SECRETS)
    assert set(SECRETS) - {"POSTGRES_PASSWORD"} <= ALL_READ


def test_each_process_receives_only_its_own_secrets() -> None:
    for name in COMPOSE["services"]:
        for variable in sorted(_received(name)):
            if _is_secret(variable):
                holders = SECRETS[variable.removesuffix("_FILE")]
                assert _role(name) in holders, f"{name} receives {variable}, a secret of {holders}"
    assert {
        "VAULT_MASTER_KEY",
        "VAULT_PREVIOUS_MASTER_KEYS",
        "VAULT_DATABASE_URL",
        "SERVICE_TOKEN",
    } <= _received("vault")
    assert {"SERVICE_TOKEN", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN"} <= _received(
        "gateway"
    )
    assert not {"VAULT_MASTER_KEY", "VAULT_MASTER_KEY_FILE"} & _received("gateway")
    assert "POSTGRES_PASSWORD" in _received("postgres")
    # Secrets come from the files alone: none is written into compose or interpolated into it.
    for name, service in COMPOSE["services"].items():
        inline = {v for v in service.get("environment", {}) if _is_secret(v)}
        assert not inline, f"{name} sets {inline} inline in docker-compose.yml"
    assert not {name for name in _interpolated() if _is_secret(name)}


def test_the_bridge_gets_no_secret_at_all() -> None:
    bridge = _service("bridge")
    # No env file (not even one free of secrets today) and no compose secrets: the bridge faces
    # the internet, so nothing it could leak is ever handed to it.
    assert "env_file" not in bridge
    assert "secrets" not in bridge
    assert "env_file" not in COMPOSE["x-service"]
    assert "secrets" not in COMPOSE["x-service"]
    assert not {v for v in _received("bridge") if _is_secret(v)}
    for value in bridge["environment"].values():
        names = {m[1] for m in _INTERPOLATION.finditer(str(value))}
        assert not {n for n in names if _is_secret(n)}


@pytest.mark.parametrize("name", sorted([*OUR_SERVICES, *REPLICA_SERVICES]))
def test_services_start_from_what_compose_and_the_templates_give_them(name: str) -> None:
    env = _runtime_env(name)
    loaders: dict[str, Callable[[Mapping[str, str]], object]] = {
        "vault": VaultSettings.from_env,
        "gateway": GatewaySettings.from_env,
        "bridge": BridgeSettings.from_env,
    }
    if _role(name) == "gateway":
        env["LIMITS_FILE"] = str(_limits_file_in_repo())  # the image's path, on this machine
        env["USAGE_PRICES_FILE"] = str(_image_file_in_repo("USAGE_PRICES_FILE"))
    loaders[_role(name)](env)


def test_prices_file_is_copied_into_the_image_and_the_ledger_is_on_a_volume() -> None:
    path = _image_file_in_repo("USAGE_PRICES_FILE")
    assert path == REPO / "config" / "prices.toml"
    assert not _dockerignored(PurePosixPath(path.relative_to(REPO).as_posix()))
    assert "gateway-data:/data" in _service("gateway")["volumes"]
    assert "gateway-data" in COMPOSE["volumes"]
    assert _runtime_env("gateway")["USAGE_DATABASE_URL"] == "sqlite:////data/usage.db"
    # Replicas share one ledger in PostgreSQL: no volume, and SQLite cannot open on their
    # read-only filesystem.
    replica = _service("gateway-replicas")
    assert "volumes" not in replica
    assert replica["read_only"] is True


def test_firebase_project_is_required_from_dot_env() -> None:
    for name in ("vault", "gateway"):
        value = _service(name)["environment"]["FIREBASE_PROJECT_ID"]
        with pytest.raises(KeyError, match="FIREBASE_PROJECT_ID"):
            _interpolate(value, {})
        assert _interpolate(value, {"FIREBASE_PROJECT_ID": "demo"}) == "demo"


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
    # Only the bridge is published, on its own listen port (in the replicas profile, only lb).
    published = [name for name in COMPOSE["services"] if "ports" in _service(name)]
    assert [name for name in published if _in_profile(name, None)] == ["bridge"]
    assert [name for name in published if _in_profile(name, REPLICAS_PROFILE)] == ["lb"]
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
    # The vault's own env file carries its database URL; the template's is the file on the volume.
    assert _runtime_env("vault")["VAULT_DATABASE_URL"] == "sqlite:////data/vault.db"
    # The postgres profile: its password from its own env file, which commands without the
    # profile never need.
    assert _env_files("postgres") == ["secrets/postgres.env"]
    assert _service("postgres")["env_file"][0]["required"] is False
    assert _service("postgres")["profiles"] == ["postgres"]
    for name in ("gateway", "bridge"):
        assert _service(name)["deploy"]["replicas"] >= 1


def test_readme_documents_every_variable() -> None:
    readme = (REPO / "README.md").read_text()
    missing = sorted(v for v in ALL_READ if f"`{v}`" not in readme)
    assert not missing, f"README configuration table lacks {missing}"


def _git_ignored(path: str) -> bool:
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
    return result.returncode == 0


def test_env_file_is_ignored_by_git() -> None:
    assert _git_ignored(".env")
    env_files = {f for name in COMPOSE["services"] for f in _env_files(name)}
    assert env_files >= {"secrets/vault.env", "secrets/gateway.env"}
    for env_file in sorted(env_files | {".env"}):
        assert _git_ignored(env_file), f"{env_file} is not git-ignored"
        assert _dockerignored(PurePosixPath(env_file)), f"{env_file} would enter the image"
        template = f"{env_file}.example"
        assert (REPO / template).is_file()
        assert not _git_ignored(template), f"the template {template} must be committed"


def _published(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(host side, container port) of every `ports:` entry, short or long syntax."""
    published = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published.append((str(entry.get("published", "")), str(entry["target"])))
        else:
            host, _, container = str(entry).rpartition(":")
            published.append((host, container.split("/")[0]))
    return published


def test_no_metrics_port_is_published() -> None:
    bridge_env = _service("bridge")["environment"]
    published = {
        (name, container)
        for name in COMPOSE["services"]
        for _, container in _published(_service(name))
    }
    # The bridge's API port is the only one published, in every configuration (the replicas
    # profile publishes its load balancer's, which carries the bridges' API and nothing else).
    assert published == {
        ("bridge", _port(bridge_env["BRIDGE_LISTEN_ADDR"])),
        ("lb", _port(bridge_env["BRIDGE_LISTEN_ADDR"])),
    }
    for name, service in COMPOSE["services"].items():
        assert service.get("network_mode") != "host", f"{name} would bind the host's interfaces"
        settings = dict(service.get("environment", {}))
        for env_file in _env_files(name):
            settings |= _assignments(_template(env_file))
        for variable, value in settings.items():
            if variable.endswith("_METRICS_ADDR") and value:
                port = _port(_interpolate(str(value), {}))
                assert (name, port) not in published, f"{name} publishes {variable}"
    # Nor does the image advertise anything but the API (`docker run -P` publishes EXPOSE).
    exposed = re.findall(r"^EXPOSE\s+(.+)$", (REPO / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert [port for line in exposed for port in line.split()] == [
        _port(bridge_env["BRIDGE_LISTEN_ADDR"])
    ]


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
    lock_at = dockerfile.index("COPY requirements/runtime.lock")
    code_at = dockerfile.index("COPY rpc_common")
    assert lock_at < dockerfile.index("pip install --require-hashes -r") < code_at
    assert dockerfile.index("COPY pyproject.toml") > lock_at  # editing it keeps the layer
    for module in OUR_SERVICES.values():
        assert f"COPY {module} " in dockerfile


_PIP_INSTALL = ["pip", "install"]


def _pip_installs(dockerfile: str) -> list[list[str]]:
    """The arguments of every `pip install` the Dockerfile runs."""
    joined = dockerfile.replace("\\\n", " ")
    installs = []
    for line in joined.splitlines():
        if line.startswith("RUN "):
            for command in re.split(r"&&|;", line.removeprefix("RUN ")):
                words = command.split()
                if words[:2] == _PIP_INSTALL or words[:4] == ["python", "-m", *_PIP_INSTALL]:
                    installs.append(words[words.index("install") + 1 :])
    return installs


def test_dockerfile_installs_dependencies_only_from_the_hash_checked_lock() -> None:
    installs = _pip_installs((REPO / "Dockerfile").read_text())
    assert ["--require-hashes", "-r", "requirements/runtime.lock"] in installs
    for arguments in installs:
        if "--require-hashes" in arguments:
            assert arguments[arguments.index("-r") + 1] == "requirements/runtime.lock"
        else:
            # Anything else is the project itself, without dependencies or a build download.
            assert "--no-deps" in arguments and "--no-build-isolation" in arguments, arguments
            assert [a for a in arguments if not a.startswith("--")] == ["."], arguments
    # The lock is what COPY puts where pip reads it, and the build context includes it.
    assert _image_files()[PurePosixPath("/app/requirements/runtime.lock")] == (
        REPO / "requirements" / "runtime.lock"
    )
    assert not _dockerignored(PurePosixPath("requirements/runtime.lock"))


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
    return _image_file_in_repo("LIMITS_FILE")


def _image_file_in_repo(variable: str) -> Path:
    """The repository file the image holds at the path the gateway's `variable` names."""
    in_image = PurePosixPath(_service("gateway")["environment"][variable])
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


# -- the replicas profile: two of each behind a load balancer (SPEC §12) ----------------------

NGINX_CONF = REPO / "deploy" / "nginx-replicas.conf"


def _profile(profile: str | None) -> set[str]:
    return {name for name in COMPOSE["services"] if _in_profile(name, profile)}


def _depends(name: str) -> set[str]:
    return set(_service(name).get("depends_on", {}))


def _started_with(name: str) -> set[str]:
    """What `docker compose up NAME` starts: NAME and everything it depends on."""
    started: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current not in started:
            started.add(current)
            pending.extend(_depends(current))
    return started


def _aliases() -> dict[str, str]:
    """Name on the replicas network -> the service answering to it."""
    aliases: dict[str, str] = {}
    for name in _profile(REPLICAS_PROFILE):
        networks = _service(name)["networks"]
        if isinstance(networks, dict):
            for alias in networks[REPLICAS_PROFILE].get("aliases", []):
                assert alias not in aliases, f"{alias} names both {aliases[alias]} and {name}"
                aliases[alias] = name
    return aliases


def test_replicas_profile_is_a_stack_of_its_own_started_through_lb() -> None:
    assert _profile(REPLICAS_PROFILE) == set(REPLICA_ROLES)
    # `docker compose --profile replicas up -d lb` starts the whole profile and nothing else.
    assert _started_with("lb") == set(REPLICA_ROLES)
    # The default stack (and the postgres profile) neither joins the profile's network nor
    # waits for any of its services.
    for name in _profile(None) | _profile("postgres"):
        assert "networks" not in _service(name), name
        assert not _depends(name) & set(REPLICA_ROLES), name
    # Every profile service is on the replicas network only, answering to the default names.
    assert REPLICAS_PROFILE in COMPOSE["networks"]
    for name in REPLICA_ROLES:
        networks = _service(name)["networks"]
        assert list(networks) == [REPLICAS_PROFILE], name
    assert _aliases() == {role: name for name, role in REPLICA_ROLES.items() if name != "lb"}


def test_replicas_profile_runs_two_of_each_with_the_default_services_settings() -> None:
    differences: dict[str, set[str]] = {}
    for name, role in REPLICA_SERVICES.items():
        replica, default = _service(name), _service(role)
        assert replica["deploy"]["replicas"] == 2, name
        for key in ("image", "command", "healthcheck", "restart", "stop_grace_period"):
            assert replica[key] == default[key], f"{name} {key}"
        assert _env_files(name) == _env_files(role)
        assert "ports" not in replica
        env, default_env = replica["environment"], default["environment"]
        differences[name] = {k for k in {*env, *default_env} if env.get(k) != default_env.get(k)}
    # Only the addresses of what they call differ: every replica of it.
    assert differences == {
        "vault-replicas": set(),
        "gateway-replicas": {"VAULT_ADDR"},
        "bridge-replicas": {"GATEWAY_ADDR", "VAULT_ADDR"},
    }


def test_replicas_clients_reach_every_replica_through_dns_targets() -> None:
    vault_env = _service("vault-replicas")["environment"]
    gateway_env = _service("gateway-replicas")["environment"]
    bridge_env = _service("bridge-replicas")["environment"]
    vault_port = _port(vault_env["VAULT_LISTEN_ADDR"])
    gateway_port = _port(gateway_env["GATEWAY_LISTEN_ADDR"])
    # dns:/// targets: gRPC asks compose's DNS, which answers with every replica's address.
    assert gateway_env["VAULT_ADDR"] == f"dns:///vault:{vault_port}"
    assert bridge_env["VAULT_ADDR"] == f"dns:///vault:{vault_port}"
    assert bridge_env["GATEWAY_ADDR"] == f"dns:///gateway:{gateway_port}"
    aliases = _aliases()
    assert aliases["vault"] == "vault-replicas"
    assert aliases["gateway"] == "gateway-replicas"
    # The services accept such targets.
    assert BridgeSettings.from_env(_runtime_env("bridge-replicas")).gateway_addr == (
        f"dns:///gateway:{gateway_port}"
    )
    gateway = dict(
        _runtime_env("gateway-replicas"),
        LIMITS_FILE=str(_limits_file_in_repo()),
        USAGE_PRICES_FILE=str(_image_file_in_repo("USAGE_PRICES_FILE")),
    )
    assert GatewaySettings.from_env(gateway).vault_addr == f"dns:///vault:{vault_port}"
    # Each kind waits for the health of what it calls.
    healthy = {"condition": "service_healthy"}
    assert _service("gateway-replicas")["depends_on"] == {
        "vault-replicas": healthy,
        "redis-replicas": healthy,
    }
    assert _service("bridge-replicas")["depends_on"] == {
        "gateway-replicas": healthy,
        "vault-replicas": healthy,
    }
    assert _service("lb")["depends_on"] == {"bridge-replicas": healthy}


def test_replicas_vaults_keep_their_keys_in_postgresql_only() -> None:
    vault = _service("vault-replicas")
    # A hard dependency (not `required: false` as in the default stack).
    assert vault["depends_on"] == {"postgres-replicas": {"condition": "service_healthy"}}
    # No volume and a read-only filesystem: a SQLite URL cannot give each replica its own keys.
    assert "volumes" not in vault
    assert vault["read_only"] is True
    # The URL the operator puts in secrets/vault.env: the template offers it, for the host
    # `postgres`, which on the replicas network is the profile's own PostgreSQL.
    urls = re.findall(
        r"VAULT_DATABASE_URL=(postgresql://\S+)", _template("secrets/vault.env").read_text()
    )
    assert urls
    assert {urllib.parse.urlsplit(url).hostname for url in urls} == {"postgres"}
    assert _aliases()["postgres"] == "postgres-replicas"
    env = dict(
        _runtime_env("vault-replicas"), VAULT_DATABASE_URL=urls[0].replace("<", "").replace(">", "")
    )
    assert VaultSettings.from_env(env).database_url.startswith("postgresql://")
    postgres, replica = _service("postgres"), _service("postgres-replicas")
    for key in ("image", "env_file", "environment", "healthcheck", "restart"):
        assert replica[key] == postgres[key], key
    assert replica["volumes"] == ["postgres-replicas-data:/var/lib/postgresql/data"]
    assert "postgres-replicas-data" in COMPOSE["volumes"]
    assert "ports" not in replica


def test_replicas_gateways_share_their_limits_in_the_profiles_redis() -> None:
    env = _service("gateway-replicas")["environment"]
    assert env["LIMITS_REDIS_URL"] == "redis://redis:6379/0"
    assert _aliases()["redis"] == "redis-replicas"
    assert env["LIMITS_FILE"] == _service("gateway")["environment"]["LIMITS_FILE"]
    settings = LimitsSettings.from_env({**env, "LIMITS_FILE": str(_limits_file_in_repo())})
    assert settings.redis_url == "redis://redis:6379/0"
    redis, replica = _service("redis"), _service("redis-replicas")
    for key in ("image", "command", "healthcheck", "restart"):
        assert replica[key] == redis[key], key
    assert "ports" not in replica
    # Only the gateways are told about the limits.
    for name in ("vault-replicas", "bridge-replicas"):
        assert not any(v.startswith("LIMITS_") for v in _service(name)["environment"])


def test_replicas_bridges_and_lb_hold_no_secret() -> None:
    for name in ("bridge-replicas", "lb"):
        service = _service(name)
        assert "env_file" not in service, name
        assert "secrets" not in service, name
        assert not {v for v in _received(name) if _is_secret(v)}, name
        for value in service.get("environment", {}).values():
            names = {m[1] for m in _INTERPOLATION.finditer(str(value))}
            assert not {n for n in names if _is_secret(n)}, name
    assert "environment" not in _service("lb")


def _nginx_directives(text: str) -> str:
    """The config without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_lb_is_the_profiles_only_published_port_and_routes_to_every_bridge() -> None:
    lb = _service("lb")
    image, _, tag = lb["image"].partition(":")
    assert image == "nginx"
    version = tuple(int(part) for part in tag.split("-")[0].split("."))
    assert version >= (1, 27, 3), "`server ... resolve` in an upstream needs nginx 1.27.3+"
    assert [n for n in _profile(REPLICAS_PROFILE) if "ports" in _service(n)] == ["lb"]
    # Published where the default stack publishes its bridge.
    assert lb["ports"] == _service("bridge")["ports"]
    ((_, listen_port),) = _published(lb)

    # Its config is the committed file.
    (mount,) = lb["volumes"]
    source, target, mode = mount.split(":")
    assert (REPO / source).resolve() == NGINX_CONF
    assert target == "/etc/nginx/conf.d/default.conf"
    assert mode == "ro"
    conf = _nginx_directives(NGINX_CONF.read_text())
    assert re.search(rf"^\s*listen\s+{listen_port};", conf, re.MULTILINE)
    # Compose's DNS, asked again while running: the upstream follows the bridge replicas.
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\b", conf, re.MULTILINE)
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+(\S+)([^;]*);", upstream[2], re.MULTILINE)
    bridge_port = _port(_service("bridge-replicas")["environment"]["BRIDGE_LISTEN_ADDR"])
    assert [address for address, _ in servers] == [f"bridge:{bridge_port}"]
    assert "resolve" in servers[0][1].split()
    assert re.search(r"^\s*zone\s+\w+", upstream[2], re.MULTILINE)  # `resolve` needs a zone
    assert _aliases()["bridge"] == "bridge-replicas"
    assert re.search(rf"proxy_pass\s+http://{upstream[1]};", conf)
    # Streams pass unbuffered; a POST that reached a bridge is never sent to another.
    assert re.search(r"proxy_buffering\s+off;", conf)
    assert "non_idempotent" not in conf
    # The healthcheck asks nginx itself, on its own port.
    url = lb["healthcheck"]["test"][-1]
    assert url.startswith(f"http://127.0.0.1:{listen_port}/")
    path = urllib.parse.urlsplit(url).path
    assert re.search(rf"location\s+=\s+{re.escape(path)}\s*\{{[^}}]*return\s+200", conf)
