# Wavu: `make demo` runs the app on SQLite with local simulators; `make test` runs the suite on
# SQLite and, when a server is reachable, on PostgreSQL. Both install into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: demo test test-sqlite test-postgres test-moved-clock test-year-ahead test-leap-day lint format bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wavu demo

test: $(STAMP)
	$(BIN)/ruff check src conftest.py benchmarks
	env -u DATABASE_URL WAVU_VAR_DIR="$$(mktemp -d)" $(BIN)/wavu makemigrations --check --dry-run 2>/dev/null
	$(MAKE) --no-print-directory test-sqlite
	@if $(BIN)/python scripts/pg_reachable.py "$${DATABASE_URL:-$(PG_TEST_URL)}"; then \
		$(MAKE) --no-print-directory test-postgres; \
	else echo "PostgreSQL not reachable: PostgreSQL run skipped"; fi

test-sqlite: $(STAMP)
	@echo "=== test suite on SQLite ==="
	env -u DATABASE_URL $(BIN)/pytest -q -p no:randomly $(PYTEST_ARGS)

test-postgres: $(STAMP)
	@echo "=== test suite on PostgreSQL ==="
	DATABASE_URL="$${DATABASE_URL:-$(PG_TEST_URL)}" $(BIN)/pytest -q $(PYTEST_ARGS)

# The suite with the machine's clock moved (Debian's faketime; .ci/run calls this after `make test`): a
# year ahead for the whole suite on SQLite, and onto 29 February 2028 for the tests that run on the real
# clock (`wall_clock`: FreeRADIUS, worker processes) and the apps whose rules turn on dates.
# Every other test runs on a pinned clock (conftest.py), so this catches what escapes the pin.
# The monotonic clock stays real: libfaketime shifts it too, and then every timed wait in Python
# (threading's Condition.wait) computes its deadline a year away and hangs; scripts/faketime_sleepfix.c
# keeps time.sleep working when it does (see there).
SLEEPFIX := $(VENV)/faketime_sleepfix.so
FAKETIME := env -u DATABASE_URL LD_PRELOAD=$(abspath $(SLEEPFIX)) FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f
$(SLEEPFIX): scripts/faketime_sleepfix.c $(STAMP)
	$${CC:-cc} -shared -fPIC -O2 -o $@ $<
LEAP_DAY := 2028-02-29 12:00:00 UTC
MOVED_CLOCK_SUBSET ?= src/wavu/core src/wavu/hotspot src/wavu/network src/wavu/subscriptions
test-moved-clock: test-year-ahead test-leap-day

test-year-ahead: $(STAMP) $(SLEEPFIX)
	@command -v faketime >/dev/null || { echo "faketime is missing: apt-get install faketime"; exit 1; }
	@echo "=== test suite on SQLite, the clock a year ahead ==="
	$(FAKETIME) '+365d' $(BIN)/pytest -q -p no:randomly $(PYTEST_ARGS)

test-leap-day: $(STAMP) $(SLEEPFIX)
	@command -v faketime >/dev/null || { echo "faketime is missing: apt-get install faketime"; exit 1; }
	@echo "=== real-clock tests and $(MOVED_CLOCK_SUBSET) on SQLite, on 29 February 2028 ==="
	@# an offset, not faketime's "@date": that is read in each process's own TZ (Django sets Nairobi, which
	@# FreeRADIUS inherits: 3 h apart) and restarts in every child process; an offset moves all alike
	off=$$(( $$(date -u -d '$(LEAP_DAY)' +%s) - $$(date -u +%s) )); case $$off in -*) ;; *) off=+$$off;; esac; \
	$(FAKETIME) "$$off" $(BIN)/pytest -q -p no:randomly \
		$(MOVED_CLOCK_SUBSET) $$(grep -rl --include='test_*.py' 'mark.wall_clock' src) $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): seeds fresh SQLite and PostgreSQL databases of 10,000 and
# 100,000 customers and measures the billing run against the raw insert rate. BENCH_ARGS="--sizes 10000".
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src conftest.py benchmarks
	$(BIN)/ruff format --check src conftest.py benchmarks

format: $(STAMP)
	$(BIN)/ruff format src conftest.py benchmarks
	$(BIN)/ruff check --fix src conftest.py benchmarks

clean:
	rm -rf $(VENV) var
