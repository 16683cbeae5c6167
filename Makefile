# Automail: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint services bench clean install

install: $(STAMP)

# Repeatable installs: every package pinned by constraints.txt (a frozen lock of the
# Airflow 3.3.2 dependency set; Airflow's own constraint files are not reachable here).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

# Real services the suite uses: PostgreSQL (Debian package) and Debian's Chromium.
services:
	bash scripts/services-up.sh

test: $(STAMP) services
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(STAMP) services
	bash scripts/bench.sh

clean:
	rm -rf var
