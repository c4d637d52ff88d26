# virtlife: `make demo` runs the main job, `make test` runs every test.
# Both first run scripts/setup.sh, which is idempotent (fast when all is in place).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint unit integration bench clean

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/virtlife demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# pytest exit code 5 means "no tests collected": a failure for us.
test: lint
	@$(BIN)/pytest -q --durations=15 -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc

unit: setup
	$(BIN)/pytest -q tests/unit tests/cli -m "not integration"

integration: setup
	$(BIN)/pytest -q -m integration

bench: setup
	$(BIN)/python bench/lifecycle.py
	$(BIN)/python bench/boot.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
