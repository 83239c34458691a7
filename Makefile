# Two entry points on a fresh machine: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit soak bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

## Run the whole job on an embedded default: local Kafka broker, demo provider, sample campaign.
demo: $(STAMP)
	$(BIN)/sms-consumer demo

## Lint, type-check and run the whole test suite (starts its own Kafka broker unless KAFKA_BOOTSTRAP_SERVERS is set).
test: $(STAMP) lint
	$(BIN)/python -m consumer.devbroker --fetch-only
	$(BIN)/pytest -m "not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy consumer schemas
	$(BIN)/python -m schemas.generate --check

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

## The long runs: the crash test with 20 kills, and every test marked slow.
soak: $(STAMP)
	SMS_FAULT_KILLS=20 $(BIN)/pytest -q -s tests/faults
	$(BIN)/pytest -q -m slow

## Benchmarks on a fresh local broker: prints a table, writes bench/results/<time>.json (ARGS="--smoke", ...).
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

schemas: $(STAMP)
	$(BIN)/python -m schemas.generate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
