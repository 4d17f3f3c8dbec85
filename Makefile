# make run: install into .venv (once), then start the whole platform on this machine.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CLIENTS_VENV ?= var/clients-venv
CLIENTS_STAMP := $(CLIENTS_VENV)/.installed
NODE_CLIENT := tests/clients/node
NODE_CLIENT_STAMP := $(NODE_CLIENT)/node_modules/.installed

.PHONY: install run test check lint audit constraints chromium qemu compose pgbackrest \
  local-model-rebuild clients image-test

install: $(STAMP)

# Reinstalls only when the dependency lists change. llama-cpp-python (the embedded model's
# runtime) comes first, as a portable build cached under a key of its flags
# (scripts/install_local_model.py), so pip never builds or reuses a CPU-specific one for it.
$(STAMP): pyproject.toml constraints.txt scripts/install_local_model.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python scripts/install_local_model.py
	$(VENV)/bin/pip install -c constraints.txt -e '.[dev,local-model]'
	touch $(STAMP)

# Build llama-cpp-python again (the cached build is replaced), e.g. after a compiler upgrade.
local-model-rebuild: install
	$(VENV)/bin/python scripts/install_local_model.py --rebuild

run: install
	$(VENV)/bin/python manage.py runplatform

test: install clients chromium qemu compose pgbackrest
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The clients tests/test_real_clients.py drives that are kept out of .venv: the LiteLLM SDK (many
# dependencies, and compromised PyPI releases in its history) in its own venv with every package
# pinned, and the openai Node SDK from its lockfile. Reinstalled only when those files change.
clients: $(CLIENTS_STAMP) $(NODE_CLIENT_STAMP)

$(CLIENTS_STAMP): tests/clients/requirements.txt tests/clients/constraints.txt
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet -c tests/clients/constraints.txt \
	  -r tests/clients/requirements.txt
	touch $(CLIENTS_STAMP)

# Node.js from Debian when missing (as root on a Debian-like machine), like chromium below.
$(NODE_CLIENT_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq nodejs npm >/dev/null || \
	      { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }; \
	  else echo "make clients: no npm; install Node.js 18 or later" >&2; exit 1; fi; }
	cd $(NODE_CLIENT) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(NODE_CLIENT_STAMP)

# The page tests drive Debian's Chromium (never a browser downloaded by a test tool). Installed
# here when missing and this is a Debian-like machine run as root; otherwise those tests say
# they were skipped (and fail in CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq chromium chromium-driver >/dev/null || \
	      { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; \
	  else echo "make test: no chromium; the browser tests will be skipped (apt-get install chromium)"; fi; }

# The portability tests run the model server on emulated CPUs (qemu-user, Debian's package).
qemu:
	@command -v qemu-x86_64 >/dev/null 2>&1 || [ "$$(uname -m)" != x86_64 ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq qemu-user >/dev/null || \
	      { apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null; }; \
	  else echo "make test: no qemu-user; the emulated-CPU tests will be skipped"; fi; }

# The point-in-time recovery tests (tests/test_backups_pitr.py) run Debian's pgBackRest against a
# scratch cluster of PostgreSQL's server binaries; without it they say they were skipped (and
# fail in CI).
pgbackrest:
	@command -v pgbackrest >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq pgbackrest >/dev/null || \
	      { apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null; }; \
	  else echo "make test: no pgbackrest; the point-in-time recovery tests will be skipped (apt-get install pgbackrest)"; fi; }

# tests/test_packaging.py checks compose.yaml with a Compose CLI (Debian's docker-compose when
# there is neither that nor `docker compose`).
compose:
	@command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq docker-compose >/dev/null || \
	      { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }; \
	  else echo "make test: no Compose CLI; the compose.yaml check will be skipped"; fi; }

# The image built from the Dockerfile and run: web, worker and beat against this machine's
# PostgreSQL and Redis, then compose.yaml, each smoke-tested (scripts/image_test.sh; CI runs it
# before the tests). podman, runc, mmdebstrap and podman-compose come from Debian when missing
# (as root on a Debian-like machine); the base image is built from Debian packages once.
image-test: install
	PYTHON=$(VENV)/bin/python scripts/image_test.sh

lint: install
	$(VENV)/bin/ruff check .

# Everything that must hold before a commit (CI runs it before the tests): lint, one format,
# types (mypy with Django's and DRF's stubs; strict where pyproject.toml says), Django's system
# checks and no model change without its migration. The fast part runs as pre-commit hooks
# (.pre-commit-config.yaml).
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python manage.py check --fail-level WARNING
	$(VENV)/bin/python manage.py makemigrations --check --dry-run

# Known vulnerabilities in the installed packages (pip-audit against PyPI's JSON API, then OSV).
# Needs the network; not part of `make test`. Exit 2 says the audit could not be done here.
audit: install
	$(VENV)/bin/python scripts/audit_dependencies.py

# Pin what is installed now (the project itself excluded) as the constraints for the next install.
constraints: install
	{ echo '# Generated by `make constraints` (pip freeze of .venv); used by `make install`.'; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v -i '^llmplatform[= @]'; \
	} > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(STAMP)
