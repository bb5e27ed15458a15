# The two commands of the README's Quick start: `make demo` and `make test`.
# Each does its own set-up (Debian packages, .venv, Python packages, Kafka jars).
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap demo test test-unit test-integration lint bench schemas clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/loadshape demo

test: bootstrap
	$(VENV)/bin/ruff check .
	$(PY) -m schemas.export --check
	$(PY) -m pytest -ra $(PYTEST_ARGS)

test-unit: bootstrap
	$(PY) -m pytest -ra -m "not integration" $(PYTEST_ARGS)

test-integration: bootstrap
	$(PY) -m pytest -ra -m integration $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check .

bench: bootstrap
	$(PY) -m bench.run

schemas: bootstrap
	$(PY) -m schemas.export

clean:
	-$(VENV)/bin/loadshape kafka down
	rm -rf .state
