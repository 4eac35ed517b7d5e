# `make test` and `make demo` are the contract with a new user: each sets up
# everything it needs (a .venv with the package and its dev extras) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# writes.py compares with this revision: the last one that wrote on the event loop
WRITES_AGAINST ?= 7ace924
# sockets.py compares with this revision: the last one that kept an idle socket per host
SOCKETS_AGAINST ?= 66268c8
# hosts.py compares with this revision: the last one that kept every rate-limited host's state
HOSTS_AGAINST ?= 66268c8

# make test runs every check: ruff, mypy, the fast tests on JOBS workers
# (pytest-xdist), then the tests marked slow (processes killed mid-run,
# benchmark scripts) in one process. make test-fast leaves the slow ones out
# (about a minute), for the edit-test loop. JOBS=0: one process.
JOBS ?= 2

.PHONY: test test-fast test-slow test-all lint typecheck pytest demo bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: test-fast test-slow

test-fast: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src tests
	$(BIN)/pytest -n $(JOBS)

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

test-all: test

demo: $(STAMP)
	$(BIN)/fanout demo

bench: $(STAMP)
	cd benchmarks && ../$(BIN)/python throughput.py
	cd benchmarks && ../$(BIN)/python latency.py
	cd benchmarks && ../$(BIN)/python memory.py
	cd benchmarks && ../$(BIN)/python fairness.py
	cd benchmarks && ../$(BIN)/python fairness.py --other slow --mix alternate
	cd benchmarks && ../$(BIN)/python manyhosts.py
	cd benchmarks && ../$(BIN)/python journal.py
	cd benchmarks && ../$(BIN)/python startup.py
	cd benchmarks && ../$(BIN)/python instructions.py
	cd benchmarks && ../$(BIN)/python bombs.py
	cd benchmarks && ../$(BIN)/python kills.py
	cd benchmarks && ../$(BIN)/python writes.py --against $(WRITES_AGAINST)
	cd benchmarks && ../$(BIN)/python dns.py
	cd benchmarks && ../$(BIN)/python sockets.py --against $(SOCKETS_AGAINST)
	cd benchmarks && ../$(BIN)/python hosts.py --against $(HOSTS_AGAINST)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
