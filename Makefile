# Entry points for people and CI. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Debian packages the runbooks and the sandbox call: PostgreSQL 15 server and client binaries,
# pg_cron (the sandbox runs it as a hosted project does), pgTAP and pg_prove (the app's database tests),
# pgBackRest (physical backups), openssl (the sandbox's certificates).
APT_PACKAGES := postgresql-15 postgresql-client-15 postgresql-15-cron postgresql-15-pgtap \
  libtap-parser-sourcehandler-pgtap-perl pgbackrest openssl
# Only the tests need these: chromium renders the drill's report pages in a real (headless) browser; npm installs
# the Supabase CLI, an independent client of the Management API stand-in and of the sandbox's databases.
TEST_APT_PACKAGES := chromium
SUPABASE_CLI_VERSION := 2.117.0
SUPABASE_CLI := .tools/supabase-cli/node_modules/.bin/supabase

.PHONY: help setup system-packages test-packages test-clients drill test lint sanity unit sandbox-up sandbox-down sandbox-status bench bench-restore bench-shapes bench-fleet clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: system-packages $(STAMP) ## Check system packages and create .venv with the pinned dependencies

system-packages:
	@scripts/ensure-system-packages $(APT_PACKAGES)

# Not fatal: without a browser the browser tests skip, naming the missing package.
test-packages:
	@scripts/ensure-system-packages $(TEST_APT_PACKAGES) || \
	  echo "test packages: $(TEST_APT_PACKAGES) not installed; the browser tests will be skipped"

test-clients: test-packages ## Install the pinned Supabase CLI from the npm registry into .tools/ (for the tests)
	@command -v npm >/dev/null || scripts/ensure-system-packages npm
	@test -x $(SUPABASE_CLI) && test "$$($(SUPABASE_CLI) --version)" = "$(SUPABASE_CLI_VERSION)" || \
	  npm install --prefix .tools/supabase-cli --no-audit --no-fund --save-exact supabase@$(SUPABASE_CLI_VERSION)

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

drill: setup ## Start the sandbox, back it up, restore the backup into staging and verify it (the main job)
	scripts/sandbox up
	scripts/drill

# The suite runs on two workers, each with a sandbox of its own; a file's tests stay on one worker.
test: setup test-clients lint sanity ## Every lint, ansible-test sanity and every test (what CI runs; installs the test clients)
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

lint: setup ## ruff, yamllint, ansible-lint (production profile), playbook syntax checks
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --profile production --strict
	@for p in playbooks/*.yml backup.yml restore.yml awx/apply.yml; do \
	  $(BIN)/ansible-playbook --syntax-check "$$p" >/dev/null || exit 1; \
	done; echo "syntax-check: every playbook parses"

# ansible-test sanity on the collection (tests/sanity/README.md): run.py copies the files git would commit to
# .sanity/ansible_collections/pgdr/supabase (ansible-test needs that path; the collections/ symlink resolves back
# here) and runs all 24 tests for Python 3.11, each in a virtualenv of ansible-test's exact pins cached in
# .sanity/home (first run: a few minutes of PyPI downloads; then about 2.5 minutes). Nothing is skipped; shellcheck
# and pslint find no shell or PowerShell files, changelog no changelogs/ (CHANGELOG.md is kept by hand).
# Exceptions, each with its reason: tests/sanity/ignore-2.19.txt. SANITY_ARGS='--test validate-modules' runs one.
SANITY_ARGS ?=
sanity: setup ## ansible-test sanity: validate-modules, pylint, pep8, yamllint, import, compile, ansible-doc, ...
	$(BIN)/python tests/sanity/run.py $(SANITY_ARGS)

unit: setup ## Unit tests only (no sandbox)
	$(BIN)/pytest tests/unit

sandbox-up: setup ## Start (or reuse) the sandbox named by SANDBOX_DIR (default .sandbox/)
	scripts/sandbox up

sandbox-down: ## Stop the sandbox's services (its data stays)
	scripts/sandbox down

sandbox-status: ## Show the sandbox's endpoints and which services are up
	scripts/sandbox status

bench: setup ## Backup benchmark against raw pg_dump (minutes; several GB of disk): see bench/README.md
	$(BIN)/python bench/run.py

bench-restore: setup ## Restore and drill benchmark against raw pg_restore: see bench/README.md
	$(BIN)/python bench/restore.py

BENCH_FLEET_ARGS ?=
bench-fleet: setup ## Three 0.5 GB projects backed up in one run (forks) vs one after the other: bench/README.md
	$(BIN)/python bench/fleet.py $(BENCH_FLEET_ARGS)

BENCH_SHAPES_ARGS ?=
bench-shapes: setup ## Backup and restore of four database shapes against raw pg_dump/pg_restore (long): bench/README.md
	$(BIN)/python bench/shapes.py $(BENCH_SHAPES_ARGS)

clean: sandbox-down ## Stop the sandbox and remove it and the virtualenv
	rm -rf .sandbox $(VENV)
