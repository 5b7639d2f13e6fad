# Native1API developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto' | sort)
USER ?= alice

.PHONY: help install proto proto-check lint format check test test-all run token clean bench bench-soak

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Install progress goes to stderr so `TOKEN=$$(make -s token)` captures only the token.
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing runtime + dev dependencies (about a minute on a fresh machine)" >&2
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV) >&2
	@$(PY) -m pip install --quiet --upgrade pip >&2
	@$(PY) -m pip install --quiet --progress-bar off -e ".[dev]" >&2
	@touch $(STAMP)
	@echo "==> dependencies installed" >&2

install: $(STAMP) ## Create .venv with runtime and dev dependencies.

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
		echo "==> Node/npm not found: the Firebase Auth Emulator tests will be skipped" >&2; \
	fi

test: $(STAMP) $(EMULATOR_MODULES) ## Run the whole test suite (installs the pinned Firebase CLI when Node is present).
	$(VENV)/bin/pytest

run: $(STAMP) ## Start vault + gateway + bridge locally with dev defaults (Ctrl-C stops).
	$(PY) -m devstack

token: $(STAMP) ## Print a dev ID token for the local stack: make token USER=alice
	@$(PY) -m devstack.token "$(USER)"

bench: $(STAMP) ## Overhead benchmark (about 4 min): report in bench/results/, see bench/README.md.
	$(PY) -m bench

bench-soak: $(STAMP) ## Memory soak: 10,000 streamed requests through REST; RSS must stay flat.
	$(PY) -m bench --soak 10000

clean: ## Remove caches (keeps .venv and data/).
	rm -rf .mypy_cache .ruff_cache .pytest_cache
