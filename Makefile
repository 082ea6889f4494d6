# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint unit chaos bench lock clean

# An editable install of the checkout with the dev extra; the runtime dependencies at exactly the versions the image
# runs (requirements.lock as constraints, without its hashes: hashed constraints would make pip demand a hash of
# the editable checkout too).
$(VENV)/.installed: pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	sed -e '/^ *--hash=/d' -e 's/ *\\$$//' requirements.lock > $(VENV)/runtime-constraints.txt
	$(BIN)/pip install --quiet -c $(VENV)/runtime-constraints.txt -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

## make demo: PostgreSQL 16, two anvil nodes (chain ids 56 and 137) and the Tron simulator, all local and
## throwaway, with demo wallets and live activity; the daemon indexes them. Ctrl-C stops everything.
demo: install
	$(BIN)/citadel-indexer demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## make test: lint, types, architecture contracts, then every test (unit, PostgreSQL 16 and 15, anvil, Tron simulator).
test: install lint
	$(BIN)/pytest

unit: install
	$(BIN)/pytest -m 'not slow and not chaos'

## make chaos: two replicas for several minutes against every fault at once (CITADEL_CHAOS_SECONDS, default 240)
chaos: install
	$(BIN)/pytest -m chaos -n 0 -s tests/test_chaos.py

bench: install
	$(BIN)/python bench/catchup.py

## make lock: requirements.lock, what the Docker image installs (the runtime dependencies in pyproject.toml and all
## they need, pinned, with the package index's hashes), and requirements-build.lock (the tools that build the
## wheel). Run it after changing `dependencies` or `[build-system]`: tests/test_packaging.py fails until the lock
## matches. Existing pins are kept; `make lock LOCK_ARGS=--upgrade` moves every pin to the newest allowed release.
## The lock must name only the index's own files, so pip configuration (local wheel directories, extra indexes)
## is left out while compiling it.
LOCK_ENV ?= env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null
LOCK_ARGS ?=
PIP_COMPILE = $(LOCK_ENV) $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
	--no-emit-find-links $(LOCK_ARGS)

lock: $(VENV)/.installed
	$(PIP_COMPILE) --output-file=requirements.lock pyproject.toml
	$(PIP_COMPILE) --allow-unsafe --all-build-deps --only-build-deps --output-file=requirements-build.lock pyproject.toml

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
