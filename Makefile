# One command per intent. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
UV_VERSION := 0.13.8

.PHONY: demo test aws bench bench-verdict soak lock clean browser

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)

# The embedded default: no AWS SDKs.
$(VENV)/.local: requirements/local.lock setup.cfg pyproject.toml | $(UV)
	$(UV) pip install -q --python $(BIN)/python -r requirements/local.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

# Tests and the cloud path (sagemaker v3, boto3, awswrangler, moto): what CI installs.
$(VENV)/.full: requirements/ci.lock setup.cfg pyproject.toml | $(UV)
	$(UV) pip install -q --compile-bytecode --python $(BIN)/python -r requirements/ci.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@ $(VENV)/.local

demo: $(VENV)/.local
	$(BIN)/shadow-eval demo $(ARGS)

# report.html is checked in headless Chromium, from Debian's packages (CI machines run as root).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium >/dev/null; } || { [ -z "$$CI" ] && \
	  echo "make: chromium not installed; the browser test of report.html will be skipped"; }

test: $(VENV)/.full browser
	$(BIN)/lint-imports
	$(BIN)/python tests/aws/lint_iam.py
	$(BIN)/python -m pytest $(ARGS)

# `shadow-eval pipeline ...` needs the AWS extras.
aws: $(VENV)/.full

bench: $(VENV)/.local
	$(BIN)/python -m bench $(ARGS)

# How often the default policy's verdict is right over many traffic samples with known truth (minutes).
bench-verdict: $(VENV)/.local
	$(BIN)/python -m bench.verdict $(or $(ARGS),--samples 30 --records 1500 --json bench/out/verdict.json)

# Minutes, not seconds: a multi-million-record window, peak memory per stage at each size.
soak: $(VENV)/.local
	$(BIN)/python -m bench.soak $(or $(ARGS),--records 1000000 2000000)

# Re-resolve the pins: ci.lock first, then the embedded default constrained to the same versions.
lock: | $(UV)
	cd requirements && ../$(UV) pip compile -q --python-version 3.11 ci.in -o ci.lock
	cd requirements && ../$(UV) pip compile -q --python-version 3.11 local.in -c ci.lock -o local.lock
	cd requirements && ../$(UV) pip compile -q --python-version 3.11 processing.in -c ci.lock -o processing.lock

clean:
	rm -rf $(VENV) .shadow-eval .pytest_cache
