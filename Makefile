# The two commands of the README: `make run` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# two pytest workers (pytest-xdist), one file per worker at a time: most integration tests wait on a replay, so
# two cores run the suite in about half the time; TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2

.PHONY: run test stop lint bench chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP) $@

run: $(STAMP)
	$(BIN)/tradebaas kernel install --sys-prefix
	$(BIN)/tradebaas up

stop: $(STAMP)
	$(BIN)/tradebaas down

test: $(TEST_STAMP)
	$(BIN)/tradebaas kernel install --sys-prefix
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The full chaos run (tests/chaos, docs/reliability.md): 100 engine SIGKILLs, 100 under slow answers, 100 simulator
# SIGKILLs, fault rounds, 10,000 fuzzed RPC frames, a 24-simulated-hour soak (about an hour in all). Progress and one
# JSON line per round on stdout and in $(CHAOS_OUT); the figures at the end. `make test` runs a short version.
CHAOS_OUT ?= test-artifacts/chaos/full-run.jsonl
chaos: $(TEST_STAMP)
	mkdir -p $(dir $(CHAOS_OUT)) && rm -f $(CHAOS_OUT)
	CHAOS=full CHAOS_OUT=$(abspath $(CHAOS_OUT)) $(BIN)/python -m pytest tests/chaos -s $(PYTEST_ARGS); \
	status=$$?; $(BIN)/python -m tests.chaos.figures $(CHAOS_OUT); exit $$status

lint: $(TEST_STAMP)
	$(BIN)/ruff check tradebaas tests bench
	$(BIN)/mypy

# every bench script; JSON lines kept in bench/results/<date>-<host>.jsonl; prints the goals table (docs/benchmarks.md)
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
