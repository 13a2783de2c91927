# The two commands: `make demo` and `make test`. Both create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RICE_HOME ?= $(CURDIR)/.rice
DEMO_PATIENTS ?= 80
DEMO_SEED ?= 0
export RICE_HOME

.PHONY: demo test lint install clean-home

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rice synth --out $(RICE_HOME)/landing --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED)
	$(BIN)/rice run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -ra

clean-home:
	rm -rf $(RICE_HOME)
