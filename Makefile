# One command per intent. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
UV_VERSION := 0.13.8

.PHONY: demo test lint bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)

# The embedded default: no AWS SDKs.
$(VENV)/.local: requirements/local.lock setup.cfg pyproject.toml | $(UV)
	$(UV) pip install -q --python $(BIN)/python -r requirements/local.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

$(VENV)/.dev: requirements/dev.lock setup.cfg pyproject.toml | $(UV)
	$(UV) pip install -q --python $(BIN)/python -r requirements/dev.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@ $(VENV)/.local

demo: $(VENV)/.local
	$(BIN)/shadow-eval demo $(ARGS)

test: $(VENV)/.dev
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(ARGS)

bench: $(VENV)/.local
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .shadow-eval .pytest_cache
