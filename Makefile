# The two commands: `make demo` and `make test`. Both create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RICE_HOME ?= $(CURDIR)/.rice
DEMO_PATIENTS ?= 80
DEMO_SEED ?= 0
export RICE_HOME

.PHONY: demo test test-slow lint install clean-home

$(STAMP): pyproject.toml
	@echo "installing rice and its pinned dependencies into $(VENV) (about 7 GB with PyTorch; ~5 minutes the first time)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)
	@echo "installed: run commands as $(BIN)/rice ..., or 'source $(VENV)/bin/activate' once per shell"

install: $(STAMP)

# rice's own modules are compiled to bytecode first, as pip does for the libraries it installs: the
# editable install leaves them as source, and where PYTHONDONTWRITEBYTECODE is set Python never caches
# them, so each of the demo's ~130 Dagster runs would compile them anew (~0.05 s a run).
PACKAGES := rice_assets rice_models data_catalog

demo: $(STAMP)
	$(BIN)/python -m compileall -q $(PACKAGES)
	$(BIN)/rice synth --out $(RICE_HOME)/landing --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED)
	$(BIN)/rice run
	$(BIN)/rice report
	@echo ""
	@echo "next, from this folder:  source $(VENV)/bin/activate   (once per shell; or prefix commands with $(BIN)/)"
	@echo "  rice report        the table, the champion, its predictions and the HTML report again"
	@echo "  rice dev           the Dagster UI on http://127.0.0.1:3000 (Ctrl-C stops it)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# `make test`: lint and every test not marked slow, the kill, concurrency, Celery, PostgreSQL and
# browser tests included (~9-10 minutes on 2 cores); `make test-slow` runs the daemon-driven end-to-end
# tests marked slow (~10-11½ minutes). CI (.ci/run) runs both.
test: lint
	$(BIN)/python -m pytest -q -ra -m "not slow" --durations=10

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m slow --durations=10

clean-home:
	rm -rf $(RICE_HOME)
