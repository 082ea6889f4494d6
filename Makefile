# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint unit chaos bench clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
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

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
