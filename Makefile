# django-mailapi: `make demo` and `make test` each set themselves up from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	cd example_project && ../$(PY) manage.py demo

lint: $(STAMP)
	$(VENV)/bin/ruff check django_mailapi tests example_project
	$(VENV)/bin/ruff format --check django_mailapi tests example_project

typecheck: $(STAMP)
	$(VENV)/bin/mypy django_mailapi

check: $(STAMP)
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django makemigrations --check --dry-run django_mailapi
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django check --fail-level WARNING

test: $(STAMP) lint typecheck check
	$(PY) -m pytest --cov --cov-report=term --cov-fail-under=$$(cat .coverage-floor) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) tests/benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage example_project/var
