PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint bench openapi clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway demo

# The whole suite, in two runs: the in-process tests (unit, integration, adapters) on
# TEST_WORKERS processes, each with a PostgreSQL database of its own when
# GATEWAY_TEST_POSTGRES_URL is set (tests/conftest.py: `<name>_gw0`, ...), then the
# end-to-end tests on E2E_WORKERS processes, each e2e test with its own databases, ports
# and Redis namespace. `--dist worksteal` hands each process half of the tests in order
# and lets an idle one take from the other's end: the benchmarks' smoke module (first,
# ~5 minutes) stays with the first process while the second works through the rest.
# On a 2-core machine: 827 s one at a time, 611 s so; `--dist loadgroup` with that
# module kept whole balanced worse (653 s), `loadfile` worse still (705 s).
# The second runs even when the first fails; make fails if either did. Bytecode is
# cached under .venv for both and every process they start (the e2e tests start gateways,
# simulators and CLI commands by the hundred): where PYTHONDONTWRITEBYTECODE is set, as
# on CI, each of them compiled the project again.
TEST_WORKERS ?= 3
E2E_WORKERS ?= 2
TEST_ENV := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache
test: $(STAMP)
	@status=0; \
	$(TEST_ENV) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal \
		tests/unit tests/integration tests/adapters || status=1; \
	$(TEST_ENV) $(BIN)/python -m pytest -q -n $(E2E_WORKERS) --dist worksteal tests/e2e \
		|| status=1; \
	exit $$status

# The edit loop: tests/unit, tests/integration and tests/adapters on SQLite (never the
# PostgreSQL or Redis of GATEWAY_TEST_*_URL, no browser, no e2e), on CHECK_WORKERS
# processes (more than the cores: many tests wait on timers). Bytecode is cached under
# .venv even where PYTHONDONTWRITEBYTECODE is set: else every worker compiles the
# project and rewrites every test module's asserts again.
CHECK_WORKERS ?= 3
check: $(STAMP)
	env -u GATEWAY_TEST_POSTGRES_URL -u GATEWAY_TEST_REDIS_URL -u PYTHONDONTWRITEBYTECODE \
		PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache \
		$(BIN)/python -m pytest -q -n $(CHECK_WORKERS) --dist worksteal \
		tests/unit tests/integration tests/adapters

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy gateway adapters

openapi: $(STAMP)
	$(BIN)/python scripts/export_openapi.py

BENCHES := costs sync_path outage_detection fail_fast outage_throughput drain queue_growth \
	receipt_cost board_at_scale queue_depth_cost workers history_queries audit_view round_trips
bench: $(STAMP)
	for b in $(BENCHES); do \
		$(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
