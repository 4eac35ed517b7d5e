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
# (pytest-xdist), those crossing aiohttp's internals again with every fallback
# forced (make test-fallback), then the tests marked slow (processes killed mid-run,
# benchmark scripts) in one process. make test-fast leaves the slow ones out
# (about a minute), for the edit-test loop. JOBS=0: one process.
JOBS ?= 2

# make test-fallback runs the tests that go through aiohttp's private internals
# with every fallback forced (see src/fanout/net/aiohttp_internals.py).
FALLBACK_TESTS := tests/test_aiohttp_internals.py tests/test_sockets.py tests/test_dns.py \
	tests/test_engine.py tests/test_hosts.py tests/test_attacks.py tests/test_hostile.py \
	tests/test_bombs.py tests/test_redirects.py tests/test_runtime.py tests/test_session.py \
	tests/test_tls.py tests/test_proxy.py tests/test_cookies.py
# Left out there: the long runs, which cross no other internal path, and the
# curl transport's runs, which cross none of aiohttp's.
FALLBACK_SKIP := not (thousands_of_good_ones or six_bombs or journaled_runs_and_their_resume or curl)

.PHONY: test test-fast test-slow test-fallback test-all lint typecheck pytest demo bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: test-fast test-fallback test-slow

test-fast: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src tests
	$(BIN)/pytest -n $(JOBS)

test-fallback: $(STAMP)
	FANOUT_AIOHTTP_INTERNALS=off $(BIN)/pytest -n $(JOBS) -k '$(FALLBACK_SKIP)' $(FALLBACK_TESTS)

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

test-all: test

demo: $(STAMP)
	$(BIN)/fanout demo

bench: $(STAMP)
	cd benchmarks && ../$(BIN)/python throughput.py
	cd benchmarks && ../$(BIN)/python cli_vs_curl.py
	cd benchmarks && ../$(BIN)/python latency.py
	cd benchmarks && ../$(BIN)/python memory.py
	cd benchmarks && ../$(BIN)/python fairness.py
	cd benchmarks && ../$(BIN)/python fairness.py --other slow --mix alternate
	cd benchmarks && ../$(BIN)/python quota.py
	cd benchmarks && ../$(BIN)/python eta.py --orders mixed shuffled slow-first slow-last
	cd benchmarks && ../$(BIN)/python shedding.py
	cd benchmarks && ../$(BIN)/python manyhosts.py
	cd benchmarks && ../$(BIN)/python journal.py
	cd benchmarks && ../$(BIN)/python startup.py
	cd benchmarks && ../$(BIN)/python instructions.py
	cd benchmarks && ../$(BIN)/python bombs.py
	cd benchmarks && ../$(BIN)/python kills.py
	cd benchmarks && ../$(BIN)/python workers.py
	cd benchmarks && ../$(BIN)/python redis_workers.py
	cd benchmarks && ../$(BIN)/python writes.py --against $(WRITES_AGAINST)
	cd benchmarks && ../$(BIN)/python dns.py
	cd benchmarks && ../$(BIN)/python sockets.py --against $(SOCKETS_AGAINST)
	cd benchmarks && ../$(BIN)/python hosts.py --against $(HOSTS_AGAINST)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
