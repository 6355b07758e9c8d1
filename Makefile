# Two commands set everything up on a fresh Debian machine:
#   make demo   - the main job: a real guest migrated between two hosts
#   make test   - the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast e2e tempest lint typecheck check system-deps daemons clean \
	bench-transfer bench-scale

system-deps:
	@scripts/system-deps.sh

$(STAMP): pyproject.toml | system-deps
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,libvirt,e2e]'
	@touch $(STAMP)

daemons: system-deps
	@scripts/start-daemons.sh
	@scripts/ensure-services.sh

demo: $(STAMP) daemons
	$(BIN)/ferry demo

test: $(STAMP) daemons
	$(BIN)/pytest -q -ra

# Without libvirt: unit and functional tests only (seconds).
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not libvirt"

# openstackclient, openstacksdk and tempest against a running Ferry (also in `make test`).
e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

tempest: $(STAMP)
	tests/e2e/run_tempest.sh

lint: $(STAMP)
	$(BIN)/ruff check ferry tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Benchmarks (timings live here, not in the tests); each prints its table and
# rewrites the generated section of its doc. Run them on a quiet machine.
bench-transfer: $(STAMP) system-deps
	$(BIN)/python -m bench.transfer $(ARGS)

bench-scale: $(STAMP) daemons
	$(BIN)/python -m bench.scale $(ARGS)

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
