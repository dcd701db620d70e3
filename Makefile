# pilotage: build, demo and test entry points. CI runs `make test` (see .ci/run).
#
#   make venv    create .venv and install pilotage editable with its dev extras, at the
#                versions of constraints.txt
#   make lock    resolve pyproject.toml's dependencies afresh into constraints.txt
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

.PHONY: venv lock demo lint test clean

venv: $(VENV)/.stamp

# Reinstall only when the dependencies may have changed; the stamp is written last,
# so a failed install is retried next time. Every package, pip and the build's own
# setuptools included, comes at the version constraints.txt names (PIP_CONSTRAINT reaches
# the isolated build environment too), so a fresh machine gets the tested versions.
$(VENV)/.stamp: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install --quiet --upgrade \
		pip setuptools wheel
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The newest versions pyproject.toml allows, resolved in a throwaway venv; then
# 'make venv' installs them (review the diff and run the tests before committing).
lock:
	PYTHON=$(PYTHON) scripts/lock-dependencies

demo: venv
	$(BIN)/pilotage demo

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/mypy

test: venv lint
	scripts/provision-test-services
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=30

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find src tests -name __pycache__ -type d -prune -exec rm -rf {} +
