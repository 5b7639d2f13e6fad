# Native1API developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Hash-locked dependencies (tools/locks.py): `make lock` writes them, `make lock-check` checks them.
LOCKS := requirements/runtime.lock requirements/dev.lock
PROTOS := $(shell find protos -name '*.proto' | sort)
USER ?= alice

.PHONY: help install lock lock-check proto proto-check lint format check test test-all run run-replicas token clean bench bench-soak chromium

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Install progress goes to stderr so `TOKEN=$$(make -s token)` captures only the token.
# Everything comes from requirements/dev.lock with --require-hashes (pip, setuptools and pip-tools
# included), then the project itself with --no-deps; reruns when pyproject.toml or a lock changes.
$(STAMP): pyproject.toml $(LOCKS)
	@echo "==> checking requirements/*.lock against pyproject.toml" >&2
	@$(PY_SYS) tools/locks.py check >&2
	@test -x $(PY) || { echo "==> creating $(VENV)" >&2; $(PY_SYS) -m venv $(VENV) >&2; }
	@echo "==> installing runtime + dev dependencies from requirements/dev.lock, hashes checked (about a minute on a fresh machine)" >&2
	@$(PY) -m pip install --quiet --progress-bar off --require-hashes -r requirements/dev.lock >&2
	@echo "==> installing native1api itself (editable, --no-deps)" >&2
	@$(PY) -m pip install --quiet --quiet --progress-bar off --no-deps --no-build-isolation -e . >&2
	@$(PY) -m pip check >&2
	@touch $(STAMP)
	@echo "==> dependencies installed" >&2

install: $(STAMP) ## Create .venv with runtime and dev dependencies, from the hash-checked locks.

# pip-compile reuses the current pins: only what pyproject.toml changed moves. To move other
# packages too: make lock LOCK_ARGS="--upgrade-package NAME" (or LOCK_ARGS=--upgrade for all).
lock: ## Regenerate requirements/*.lock from pyproject.toml (needs PyPI); commit them.
	@test -x $(PY) || { echo "==> creating $(VENV)" >&2; $(PY_SYS) -m venv $(VENV) >&2; }
	@test -x $(VENV)/bin/pip-compile || { echo "==> installing pip-tools from requirements/dev.lock" >&2; \
		$(PY) -m pip install --quiet --progress-bar off --require-hashes -r requirements/dev.lock >&2; }
	@$(PY) tools/locks.py compile $(LOCK_ARGS)

lock-check: ## Fail when requirements/*.lock are stale relative to pyproject.toml (offline).
	@$(PY_SYS) tools/locks.py check

proto: $(STAMP) ## Regenerate the committed Python stubs from protos/.
	@rm -rf native1api
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--mypy_out=. --mypy_grpc_out=async_only:. $(PROTOS)
	@find native1api -type d -exec sh -c 'echo "\"\"\"Generated from protos/ by make proto; do not edit.\"\"\"" > "$$0/__init__.py"' {} \;
	@touch native1api/py.typed
	@echo "==> stubs regenerated under native1api/"

proto-check: proto ## Fail when the committed stubs differ from what the protos generate.
	@git add -N native1api >/dev/null 2>&1 || true
	@git diff --exit-code --stat -- native1api \
		|| { echo "ERROR: generated stubs are stale: run 'make proto' and commit native1api/"; exit 1; }
	@echo "==> stubs match the protos"

format: $(STAMP) ## Format and auto-fix lint.
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check: $(STAMP) ## Format check, lint, mypy --strict.
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The Auth Emulator tests need the pinned Firebase CLI: installed here when Node is present, so a
# newcomer's `make test` skips nothing (without Node those tests skip and say how to install).
EMULATOR_MODULES := tools/firebase-emulator/node_modules
$(EMULATOR_MODULES): tools/firebase-emulator/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "==> installing the pinned Firebase CLI (Auth Emulator) from npm" >&2; \
		npm ci --prefix tools/firebase-emulator --no-audit --no-fund --loglevel=error >&2 \
			&& touch $(EMULATOR_MODULES); \
	else \
		echo "==> Node/npm not found: no Firebase Auth Emulator (its tests skip; the web-chat page cannot sign in)" >&2; \
	fi

# The browser tests (tests/browser) drive Debian's Chromium headless through Playwright; Playwright's
# own browser downloads are never used. Installed here when it is missing and apt-get can run as
# root; otherwise those tests skip and say how to install it (CI requires them: .ci/run). Another
# build: NATIVE1API_CHROMIUM=/path/to/chromium (the tests read the same variable).
NATIVE1API_CHROMIUM ?= /usr/bin/chromium
chromium: ## Install Debian's Chromium for the browser tests when missing (root + apt-get only).
	@if [ -x "$(NATIVE1API_CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing Debian's Chromium for the browser tests (apt-get, about a minute)" >&2; \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >&2 \
			|| echo "==> could not install Chromium: the browser tests will be skipped" >&2; \
	else \
		echo "==> $(NATIVE1API_CHROMIUM) not found: the browser tests will be skipped (sudo apt-get install -y chromium)" >&2; \
	fi

test: $(STAMP) $(EMULATOR_MODULES) chromium ## Run the whole test suite (installs the Firebase CLI when Node is present, Chromium as root).
	$(VENV)/bin/pytest

# The Firebase CLI too: the web-chat page signs users in against the Auth Emulator it starts.
run: $(STAMP) $(EMULATOR_MODULES) ## Start the stack with dev defaults, the web-chat page and the Auth Emulator (Ctrl-C stops).
	$(PY) -m devstack

run-replicas: $(STAMP) ## 2 bridges + 2 gateways + 2 vaults on local PostgreSQL and Redis, one URL (Ctrl-C stops).
	$(PY) -m devstack --replicas

token: $(STAMP) ## Print a dev ID token for the local stack: make token USER=alice
	@$(PY) -m devstack.token "$(USER)"

bench: $(STAMP) ## Overhead benchmark with limits on in Redis (about 6 min; needs Redis at 127.0.0.1:6379): report in bench/results/.
	$(PY) -m bench

bench-soak: $(STAMP) ## Memory soak: 10,000 streamed requests through REST; RSS must stay flat.
	$(PY) -m bench --soak 10000

clean: ## Remove caches (keeps .venv and data/).
	rm -rf .mypy_cache .ruff_cache .pytest_cache
