"""The hash-locked dependencies: fresh against pyproject.toml, complete, used by install and CI.

`make lock-check` (tools/locks.py check) is offline and stdlib-only, so these tests run it for
real: on the repository as it is, and on copies whose pyproject.toml changed without a relock.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.procs import REPO
from tools import locks

RUNTIME_LOCK = REPO / locks.RUNTIME.path
DEV_LOCK = REPO / locks.DEV.path


def _lock_check(root: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(REPO / "tools" / "locks.py"), "check", "--root", str(root)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """pyproject.toml and the locks, as committed, in a scratch repository."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "requirements").mkdir()
    for lock in locks.LOCKS:
        shutil.copy(REPO / lock.path, tmp_path / lock.path)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_locks_match_pyproject() -> None:
    assert locks.check(REPO) == []


def test_make_lock_check_passes() -> None:
    result = subprocess.run(
        ["make", "-s", "lock-check"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "match pyproject.toml" in result.stderr


def test_the_copy_is_fresh(copy: Path) -> None:
    result = _lock_check(copy)
    assert result.returncode == 0, result.stderr


CHANGES: dict[str, Callable[[Path], None]] = {
    "a runtime dependency added": lambda p: _edit(
        p, '"httpx==0.28.1",', '"httpx==0.28.1",\n    "six==1.17.0",'
    ),
    "a runtime version changed": lambda p: _edit(p, '"orjson==3.13.0"', '"orjson==3.12.0"'),
    "a runtime dependency removed": lambda p: _edit(p, '"httpx-sse==0.4.3",', ""),
    "an extra of a dependency changed": lambda p: _edit(p, "psycopg[binary]", "psycopg[c]"),
    "a dev dependency added": lambda p: _edit(
        p, '"pytest==9.2.0",', '"pytest==9.2.0",\n    "pytest-xdist==3.8.0",'
    ),
    "the build backend changed": lambda p: _edit(p, '"setuptools>=77"', '"setuptools>=80"'),
    "the Python floor changed": lambda p: _edit(
        p, 'requires-python = ">=3.11"', 'requires-python = ">=3.12"'
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_lock_check_fails_when_pyproject_changes_without_a_relock(copy: Path, change: str) -> None:
    CHANGES[change](copy / "pyproject.toml")
    result = _lock_check(copy)
    assert result.returncode == 1
    assert "is stale" in result.stderr
    assert "run `make lock`" in result.stderr


def test_lock_check_ignores_the_rest_of_pyproject(copy: Path) -> None:
    pyproject = copy / "pyproject.toml"
    _edit(pyproject, "line-length = 100", "line-length = 99")
    _edit(pyproject, '"grpcio==1.85.1",', '"grpcio==1.85.1",  # a comment')
    assert _lock_check(copy).returncode == 0


def test_lock_check_fails_on_hand_edited_locks(copy: Path) -> None:
    runtime = copy / locks.RUNTIME.path
    _edit(runtime, "\norjson==3.13.0 \\", "\norjson==3.12.0 \\")
    result = _lock_check(copy)
    assert result.returncode == 1
    assert "pins orjson at 3.12.0, pyproject.toml at 3.13.0" in result.stderr
    assert f"{locks.DEV.path} pins orjson at 3.13.0, {locks.RUNTIME.path} at 3.12.0" in (
        result.stderr
    )


def test_lock_check_fails_on_a_missing_hash(copy: Path) -> None:
    dev = copy / locks.DEV.path
    text = dev.read_text()
    block = re.search(r"^pyyaml==\S+ \\\n(?:    --hash=\S+(?: \\)?\n)+", text, flags=re.MULTILINE)
    assert block is not None
    dev.write_text(text.replace(block[0], block[0].split(" \\")[0] + "\n"))
    result = _lock_check(copy)
    assert result.returncode == 1
    assert "pyyaml has no --hash" in result.stderr


def test_lock_check_fails_on_a_missing_lock(copy: Path) -> None:
    (copy / locks.DEV.path).unlink()
    result = _lock_check(copy)
    assert result.returncode == 1
    assert "requirements/dev.lock is missing: run `make lock`" in result.stderr


def test_every_package_is_pinned_with_hashes() -> None:
    for path in (RUNTIME_LOCK, DEV_LOCK):
        text = path.read_text()
        assert locks.pins(text), path
        assert locks.unhashed(text) == [], path
        # Nothing that would send pip elsewhere or skip the checks.
        assert not re.search(
            r"^\s*(-e|--editable|--index-url|--extra-index-url|--find-links|-f|-i)\b",
            text,
            flags=re.MULTILINE,
        )
        # Every requirement line is a plain `name==version` pin (no URL, path or VCS reference).
        requirements = [line for line in text.splitlines() if line and line[0] not in "# "]
        assert all(locks.pins(line) for line in requirements), path


def test_grpcio_family_is_pinned_to_one_release() -> None:
    for path in (RUNTIME_LOCK, DEV_LOCK):
        family = {n: v for n, v in locks.pins(path.read_text()).items() if locks.LOCKSTEP.match(n)}
        assert {"grpcio", "grpcio-health-checking", "grpcio-reflection", "grpcio-status"} <= set(
            family
        )
        assert set(family.values()) == {"1.85.1"}, family
    assert locks.pins(DEV_LOCK.read_text())["grpcio-tools"] == "1.85.1"


def test_runtime_lock_is_transitively_complete() -> None:
    """Every requirement of every runtime package (per the installed metadata) is in the lock."""
    pinned = locks.pins(RUNTIME_LOCK.read_text())
    project = locks.load_pyproject(REPO)["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = locks.normalize(requirement.name)
        assert name in pinned, f"{name} ({requirement}) is not in {locks.RUNTIME.path}"
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        assert importlib.metadata.version(name) == pinned[name], f"{name}: run `make install`"
        for raw in importlib.metadata.requires(name) or []:
            child = Requirement(raw)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                todo.append(child)
    # And nothing runtime-only is missing from the dev lock (it is a superset, same pins).
    dev = locks.pins(DEV_LOCK.read_text())
    assert {n: dev.get(n) for n in pinned} == pinned


def test_pip_tools_is_a_pinned_dev_dependency() -> None:
    dev = locks.load_pyproject(REPO)["project"]["optional-dependencies"]["dev"]
    assert any(re.fullmatch(r"pip-tools==[\d.]+", requirement) for requirement in dev)


def test_make_install_uses_the_locks_with_hashes_then_the_project_without_deps() -> None:
    makefile = (REPO / "Makefile").read_text()
    stamp_rule = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert stamp_rule is not None
    prerequisites, recipe = stamp_rule[1], stamp_rule[2]
    # Incremental: reinstalls when pyproject.toml or a lock changes.
    assert "pyproject.toml" in prerequisites and "$(LOCKS)" in prerequisites
    assert re.search(r"^LOCKS := requirements/runtime.lock requirements/dev.lock$", makefile, re.M)
    assert "tools/locks.py check" in recipe
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert len(installs) == 2, installs
    assert "--require-hashes -r requirements/dev.lock" in installs[0]
    assert "--no-deps" in installs[1] and installs[1].split("-e ")[1].startswith(".")
    assert "upgrade" not in recipe  # nothing from the index outside the lock


def test_ci_checks_the_locks_before_installing() -> None:
    run = (REPO / ".ci" / "run").read_text()
    assert run.index("make lock-check") < run.index("make install")
