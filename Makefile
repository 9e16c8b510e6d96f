# The two commands a newcomer needs: `make run` and `make test`. Each creates the virtualenv
# and installs everything itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test check fmt bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "UWF needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## Start UWF on the embedded default: SQLite, in-process worker, sandboxes, on 127.0.0.1:8080
run: $(STAMP)
	$(BIN)/uwf serve

## Run the whole test suite (PostgreSQL tests run when it is reachable, and always in CI)
test: $(STAMP)
	$(BIN)/pytest -n 3 --dist loadfile

## Format check, lint and types
check: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

## Benchmarks: raw HTTP clients against UWF end to end (report in bench/results/)
bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .uwf .pytest_cache .mypy_cache .ruff_cache
