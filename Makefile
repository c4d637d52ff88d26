# virtlife: `make demo` runs the main job, `make test` runs every test.
# Both first run scripts/setup.sh, which is idempotent (fast when all is in place).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint unit integration test-postcopy bench clean

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/virtlife demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# Two workers (pytest-xdist; a file's tests stay on one worker, and every test of the
# multi-host lab on one worker, first: LabFirst in tests/conftest.py), branch coverage of the
# tests, the `virtlife` subprocesses they run and the real-QEMU tests, then its summary.
# pytest exit code 5 means "no tests collected": a failure for us.
PYTEST_WORKERS ?= 2
test: lint
	@rm -f .coverage .coverage.*; \
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --durations=15 -p no:cacheprovider \
	  -m "not postcopy" --cov --cov-report=; rc=$$?; \
	$(BIN)/coverage combine -q 2>/dev/null; \
	$(BIN)/coverage report --skip-covered --sort=cover; \
	$(BIN)/python scripts/coverage_floor.py || rc=1; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc

unit: setup
	$(BIN)/pytest -q tests/unit tests/cli tests/security -m "not integration"

integration: setup
	$(BIN)/pytest -q -m "integration and not postcopy"

# Post-copy in the lab: not in `make test` (see tests/integration/test_migrate_postcopy_real.py).
test-postcopy: setup
	$(BIN)/pytest -q -m postcopy

bench: setup
	$(BIN)/python bench/lifecycle.py
	$(BIN)/python bench/cli_start.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/boot.py
	$(BIN)/python bench/migration.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
