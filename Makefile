# pilotage: build, demo and test entry points. CI runs `make test` (see .ci/run).
#
#   make venv    create .venv and install pilotage editable with its dev extras
#   make demo    run a whole pool on this machine
#   make lint    ruff and mypy
#   make test    lint, install missing test services, then the test suite
#   make clean   remove the venv and caches

PYTHON ?= python3
# Parallel test workers. Most end-to-end tests wait on real processes rather than
# compute, so more workers than cores pays; each module stays on one worker.
TEST_WORKERS ?= 4
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo lint test clean

venv: $(VENV)/.stamp

# Reinstall only when the dependencies may have changed; the stamp is written last,
# so a failed install is retried next time.
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/pilotage demo

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/mypy

test: venv lint
	scripts/provision-test-services
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find src tests -name __pycache__ -type d -prune -exec rm -rf {} +
