# ferry: `make run` installs and runs ferry on embedded defaults; `make test` installs what the
# test suite needs and runs it. Both skip what is already present.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := openssh-server chromium zstd rsync git curl procps util-linux bubblewrap
HOOK_USER ?= ferry-hook
STAMP := $(VENV)/.installed

.PHONY: run demo test setup setup-test system-deps lint typecheck unit integration e2e bench clean

run: setup
	$(BIN)/ferry up

demo: setup system-deps
	$(BIN)/ferry up --demo

setup: $(STAMP) node_modules/gojs/package.json

$(VENV)/bin/python:
	@command -v $(PY) >/dev/null || { apt-get update -q && apt-get install -y -q python3 python3-venv; }
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "ferry needs Python 3.11+"' || exit 1
	@$(PY) -m venv $(VENV) 2>/dev/null || { apt-get update -q && apt-get install -y -q python3-venv && $(PY) -m venv $(VENV); }

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

node_modules/gojs/package.json: package.json
	@command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q npm; }
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages ferry and the tests need (sshd test hosts, Chromium for the portal, bubblewrap
# for build hooks); `apt-get update` once. Then the unprivileged user build hooks run as.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi
	@id -u $(HOOK_USER) >/dev/null 2>&1 || { echo "creating the build hook user $(HOOK_USER)"; \
	  useradd --system --user-group --no-create-home --home-dir /nonexistent \
	    --shell /usr/sbin/nologin $(HOOK_USER); }

setup-test: setup system-deps

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python scripts/gen_asyncapi.py --check
	$(BIN)/python scripts/gen_model_json.py --check
	$(BIN)/python scripts/gen_settings_doc.py --check

typecheck: setup
	$(BIN)/mypy

test: setup-test lint typecheck
	$(BIN)/pytest -p no:cacheprovider

unit: setup
	$(BIN)/pytest tests/unit tests/contract

integration: setup-test
	$(BIN)/pytest tests/integration

e2e: setup-test
	$(BIN)/pytest tests/e2e

bench: setup-test
	$(BIN)/python bench/bench_upload.py
	$(BIN)/python bench/bench_package.py

clean:
	rm -rf $(VENV) node_modules var test-output
