# Gridlink's two set-up commands are `make run` and `make test`; everything
# they need (the virtualenv, packages, PostgreSQL, Redis) is installed and
# started by them.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BIND ?= 127.0.0.1:8000

.PHONY: install node-packages upgrade run test soak lint format clean loadtest bench swarm flood chaos failover-test

# constraints.txt pins every package to the versions the suite last passed
# with: a fresh clone installs what was tested, not whatever is newest today.
# Refresh it on purpose: `make upgrade`, then `make test`.
$(INSTALLED): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(INSTALLED)

## The npm packages of the OpenID provider the tests run (tests/support/oidc), from its
## lockfile, when missing (Node and npm with apt-get when root, as PostgreSQL is).
node-packages: install
	$(BIN)/python -c 'from tests.support.oidc_provider import install_node_packages as i; i()'

## Re-resolve every package to its newest allowed version and pin the result in constraints.txt.
upgrade:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --upgrade -e '.[dev]'
	{ echo "# Pinned by make upgrade: the versions make test last passed with."; \
	  $(BIN)/pip freeze --exclude-editable; } > constraints.txt
	touch $(INSTALLED)

## Start the local cluster, migrate, load the demo profile and serve the API on $(BIND).
run: install
	$(BIN)/gridlink cluster up
	$(BIN)/gridlink migrate
	$(BIN)/gridlink demo
	GRIDLINK_ENV=development $(BIN)/gridlink serve --bind $(BIND)

## Lint, type-check and run the whole suite against a cluster the run starts and stops.
## Staging's promises are part of it: a run that cannot bring staging up fails, never skips.
test: lint node-packages
	GRIDLINK_REQUIRE_STAGING=1 $(BIN)/pytest

## Inject random faults under client traffic for SOAK_SECONDS (default 120); not in `make test`.
SOAK_SECONDS ?= 120
soak: install
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -m soak -s tests/e2e/test_soak.py

## Only the failovers on staging (as root): primary killed, link cut, switchover, Redis master killed (make test runs them too).
failover-test: install
	$(BIN)/pytest -m failover tests/e2e/test_staging_failover.py

## Load-test a seeded cluster of its own with locust (LOADTEST_USERS, LOADTEST_RUN_TIME);
## reports in var/loadtest/reports/, exit status non-zero on failures or a slow p95.
loadtest: install
	$(BIN)/python -m loadtest.run

## Seed a bench cluster of its own (1,000,000 links) and measure; writes bench/results.md.
bench: install
	$(BIN)/python -m bench.bench

## Cached profile reads while 200 connections flood sign-up, then login (bench/flood.md).
## FLOOD_ARGS=--unthrottled also floods with the limits lifted (only the hash cap left).
flood: install
	$(BIN)/python -m bench.flood $(FLOOD_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	-$(BIN)/gridlink cluster down --purge
	-$(BIN)/python -m loadtest.run --down --purge
	-$(BIN)/gridlink staging down --purge
	rm -rf $(VENV) var

## Staging up (seeded), then locust distributed on its load generator against its load balancer
## (SWARM_USERS, SWARM_RUN_TIME, SWARM_WORKERS, SWARM_DELAY=1ms); reports in var/staging/reports/.
swarm: install
	$(BIN)/python -m loadtest.swarm

## Staging up (seeded), then random primary, sync standby and load balancer host kills, link cuts, switchovers and Redis master kills
## for CHAOS_SECONDS (default 180) under writers and readers (CHAOS_FAULTS: a subset); prints the table with the alerts each fault fired;
## exit 1 on a lost write, a 5xx other than 503, or a fault that fired no alert.
CHAOS_SECONDS ?= 180
chaos: install
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_FAULTS="$(CHAOS_FAULTS)" $(BIN)/python -m loadtest.chaos
