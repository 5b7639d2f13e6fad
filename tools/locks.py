"""The dependency lock files: `make lock` writes them, `make lock-check` checks them.

requirements/runtime.lock: pyproject.toml's [project].dependencies and its build backend
    ([build-system].requires), every transitive dependency pinned with its sha256 hashes. The
    Docker image installs it with `pip install --require-hashes`.
requirements/dev.lock: the same plus the `dev` extra (pip-tools, pip and setuptools included),
    constrained to runtime.lock's pins. `make install` installs it with `--require-hashes`.

Both are written by pip-tools' `pip-compile --generate-hashes`. Each lock's first lines record a
fingerprint of the pyproject.toml fields (and compile options) it was made from; `check` needs
nothing but the standard library and no network: it recomputes the fingerprint, so a dependency
added, removed or changed in pyproject.toml without relocking fails, naming `make lock`.

    python3 tools/locks.py check             # make lock-check (CI)
    .venv/bin/python tools/locks.py compile  # make lock (needs PyPI and pip-tools)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FINGERPRINT_PREFIX = "# pyproject-fingerprint: sha256:"
# Packages that must move in lockstep: the generated stubs check GRPC_GENERATED_VERSION.
LOCKSTEP = re.compile(r"^grpcio(-[a-z0-9-]+)?$")
# Options shared by both locks. Part of the fingerprint: changing them needs a relock.
COMPILE_OPTIONS = (
    "--generate-hashes",
    "--allow-unsafe",  # pin pip and setuptools too: nothing is installed unhashed
    "--all-build-deps",  # the build backend, so `pip install --no-build-isolation .` works
    "--strip-extras",
    "--no-emit-index-url",
    "--no-emit-find-links",
)


@dataclass(frozen=True)
class Lock:
    """One lock file and the pyproject.toml extras it covers on top of the runtime dependencies."""

    path: str
    extras: tuple[str, ...]
    constraint: str | None
    about: str


RUNTIME = Lock(
    "requirements/runtime.lock",
    (),
    None,
    "runtime dependencies and the build backend; the Docker image installs it",
)
DEV = Lock(
    "requirements/dev.lock",
    ("dev",),
    RUNTIME.path,
    "runtime + dev dependencies, pinned as in runtime.lock; `make install` installs it",
)
LOCKS = (RUNTIME, DEV)


def normalize(name: str) -> str:
    """A distribution name as the index knows it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_pyproject(root: Path) -> dict[str, Any]:
    with (root / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _requirements(values: Sequence[str]) -> list[str]:
    return sorted(re.sub(r"\s+", "", value) for value in values)


def fingerprint(pyproject: Mapping[str, Any], lock: Lock) -> str:
    """sha256 of everything in pyproject.toml (and our options) that the lock was compiled from."""
    project = pyproject.get("project", {})
    extras = project.get("optional-dependencies", {})
    fields = {
        "requires-python": project.get("requires-python", ""),
        "build-system.requires": _requirements(
            pyproject.get("build-system", {}).get("requires", [])
        ),
        "dependencies": _requirements(project.get("dependencies", [])),
        "extras": {extra: _requirements(extras.get(extra, [])) for extra in lock.extras},
        "options": [
            *COMPILE_OPTIONS,
            *(["--constraint", lock.constraint] if lock.constraint else []),
        ],
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def header(lock: Lock, digest: str) -> str:
    return (
        f"# native1api lock: {lock.about}.\n"
        "# Every package is pinned with its sha256 hashes. Regenerate with `make lock`, never by\n"
        "# hand; `make lock-check` compares this fingerprint with pyproject.toml:\n"
        f"{FINGERPRINT_PREFIX}{digest}\n"
    )


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(text: str) -> dict[str, str]:
    """name -> version for every `name==version` requirement in a pip-compile output."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            found[normalize(match[1])] = match[2]
    return found


def unhashed(text: str) -> list[str]:
    """Requirements in a lock that carry no `--hash` (pip's --require-hashes would refuse them)."""
    missing: list[str] = []
    current: str | None = None
    hashed = False
    for line in [*text.splitlines(), ""]:
        match = _PIN.match(line)
        if match or not line.startswith((" ", "\t")):
            if current is not None and not hashed:
                missing.append(current)
            current, hashed = (normalize(match[1]) if match else None), False
        if "--hash=sha256:" in line:
            hashed = True
    return missing


_DIRECT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)$")


def exact_pins(requirements: Sequence[str]) -> dict[str, str]:
    """The `name==version` (or `name[extra]==version`) requirements, without markers."""
    found: dict[str, str] = {}
    for requirement in _requirements(requirements):
        match = _DIRECT.match(requirement)
        if match:
            found[normalize(match[1])] = match[3]
    return found


def recorded_fingerprint(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(FINGERPRINT_PREFIX):
            return line.removeprefix(FINGERPRINT_PREFIX).strip()
    return None


def check(root: Path = REPO) -> list[str]:
    """Problems with the locks under `root`, each naming what to run; empty when they are fresh."""
    pyproject = load_pyproject(root)
    project = pyproject.get("project", {})
    problems: list[str] = []
    locked: dict[str, dict[str, str]] = {}
    for lock in LOCKS:
        path = root / lock.path
        if not path.is_file():
            problems.append(f"{lock.path} is missing: run `make lock` and commit requirements/")
            continue
        text = path.read_text(encoding="utf-8")
        locked[lock.path] = found = pins(text)
        recorded = recorded_fingerprint(text)
        if recorded != fingerprint(pyproject, lock):
            problems.append(
                f"{lock.path} is stale: pyproject.toml's dependencies (or the lock options) "
                "changed since it was generated; run `make lock` and commit requirements/"
            )
        wanted = exact_pins(project.get("dependencies", []))
        for extra in lock.extras:
            wanted |= exact_pins(project.get("optional-dependencies", {}).get(extra, []))
        for name, version in sorted(wanted.items()):
            if found.get(name) != version:
                problems.append(
                    f"{lock.path} pins {name} at {found.get(name, 'nothing')}, pyproject.toml at "
                    f"{version}: run `make lock`"
                )
        for name in unhashed(text):
            problems.append(f"{lock.path}: {name} has no --hash: run `make lock`")
    if len(locked) == len(LOCKS):
        runtime, dev = locked[RUNTIME.path], locked[DEV.path]
        for name, version in sorted(runtime.items()):
            if dev.get(name) != version:
                problems.append(
                    f"{DEV.path} pins {name} at {dev.get(name, 'nothing')}, {RUNTIME.path} at "
                    f"{version}: run `make lock`"
                )
        family = {
            f"{name}=={version}"
            for pinned in locked.values()
            for name, version in pinned.items()
            if LOCKSTEP.match(name)
        }
        if len({entry.partition("==")[2] for entry in family}) > 1:
            problems.append(f"the grpcio family must share one release, got {sorted(family)}")
    return problems


def _say(message: str) -> None:
    sys.stderr.write(f"{message}\n")


def compile_locks(root: Path = REPO, extra_args: Sequence[str] = ()) -> None:
    """Run pip-compile for each lock, then stamp its fingerprint. Needs pip-tools and PyPI.

    A lock whose content does not change keeps its modification time, so `make install`
    does not reinstall for nothing.
    """
    pyproject = load_pyproject(root)
    for lock in LOCKS:
        path = root / lock.path
        path.parent.mkdir(exist_ok=True)
        before = path.read_bytes() if path.exists() else None
        times = os.stat(path) if path.exists() else None
        argv = [sys.executable, "-m", "piptools", "compile", "--quiet", *COMPILE_OPTIONS]
        for extra in lock.extras:
            argv += ["--extra", extra]
        if lock.constraint:
            argv += ["--constraint", lock.constraint]
        argv += [*extra_args, "--output-file", lock.path, "pyproject.toml"]
        _say(f"==> {lock.path}: pip-compile --generate-hashes: {lock.about}")
        env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}  # the header's command
        subprocess.run(argv, cwd=root, env=env, check=True)  # noqa: S603 (our own interpreter)
        body = path.read_text(encoding="utf-8")
        path.write_text(header(lock, fingerprint(pyproject, lock)) + body, encoding="utf-8")
        if before is not None and times is not None and path.read_bytes() == before:
            os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
            _say(f"==> {lock.path}: unchanged")
        else:
            _say(f"==> {lock.path}: written; commit it")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=["check", "compile"])
    parser.add_argument("--root", type=Path, default=REPO, help="the repository (default: ours)")
    args, extra = parser.parse_known_args(argv)
    root: Path = args.root
    if args.command == "compile":
        try:
            compile_locks(root, extra)
        except subprocess.CalledProcessError as exc:
            _say(f"ERROR: pip-compile failed (exit {exc.returncode})")
            return 1
        return 0
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    problems = check(root)
    for problem in problems:
        _say(f"ERROR: {problem}")
    if problems:
        return 1
    _say("==> requirements/*.lock match pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
