# The two set-up commands of the README: `make serve` and `make test`.
VENV ?= .venv
export DREAMFIX_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: setup serve test test-only lint

setup:
	bash .ci/setup.sh

serve: setup
	$(VENV)/bin/dreamfix db upgrade
	$(VENV)/bin/dreamfix serve

test: setup test-only

# pytest exits 5 when it collected nothing: treat that as the failure it is.
test-only:
	$(VENV)/bin/python -m pytest -n 2 -q

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
