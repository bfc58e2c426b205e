# django-mailapi: `make demo` and `make test` each set themselves up from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-compat test-sqlite test-mysql lint typecheck check bench bench-scale clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,health]'
	touch $(STAMP)

demo: $(STAMP)
	cd example_project && ../$(PY) manage.py demo

# The hooks of .pre-commit-config.yaml (django-upgrade, ruff, ruff-format, and mypy by way
# of typecheck), as checks that change nothing, plus the import contracts. django-upgrade
# reads the files git tracks (no virtualenvs, no build output).
lint: $(STAMP) typecheck
	git ls-files -z '*.py' | xargs -0 $(VENV)/bin/django-upgrade --target-version 4.2 --check
	$(VENV)/bin/ruff check django_mailapi tests example_project
	$(VENV)/bin/ruff format --check django_mailapi tests example_project
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy django_mailapi

check: $(STAMP)
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django makemigrations --check --dry-run django_mailapi
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django check --fail-level WARNING

test: $(STAMP) lint typecheck check
	$(PY) -m pytest --cov --cov-report=term --cov-fail-under=$$(cat .coverage-floor) $(PYTEST_ARGS)

# The suite (less the slow fault tests) on the other supported Django versions:
# 4.2 on this Python, 6.1 on Python 3.12 (found on PATH or under pyenv).
PY312 ?= $(shell for p in $$HOME/.pyenv/versions/3.12*/bin/python $$(command -v python3.12); do \
	"$$p" -c "import sys" 2>/dev/null && { echo "$$p"; break; }; done)
COMPAT_ARGS = -q -p no:randomly -p no:cacheprovider --ignore=tests/test_delivery.py

test-compat:
	$(PYTHON) -m venv .venv-dj42
	.venv-dj42/bin/python -m pip install --quiet -e '.[dev]' 'django>=4.2,<4.3'
	.venv-dj42/bin/python -m pytest $(COMPAT_ARGS)
	@test -n "$(PY312)" || { echo "Python 3.12 not found: cannot test Django 6.1"; exit 1; }
	$(PY312) -m venv .venv-dj61
	.venv-dj61/bin/python -m pip install --quiet -e '.[dev,health]' 'django>=6.1,<6.2'
	.venv-dj61/bin/python -m pytest $(COMPAT_ARGS)

# The whole suite on SQLite (Django 5.2), as a development setup or a small site runs it:
# what needs a database server (concurrent workers, worker processes) skips, saying so.
test-sqlite: $(STAMP)
	rm -f .sqlite-test.db
	DATABASE_URL=sqlite:///$(CURDIR)/.sqlite-test.db $(PY) -m pytest -q $(PYTEST_ARGS)

# The whole suite on MariaDB or MySQL (the `mysql` extra, and a server at MYSQL_URL; the
# database is created if missing and the suite's own is test_<name>), after the system
# checks and the migrations check against that server.
MYSQL_URL ?= mysql://root@127.0.0.1:3306/mailapi_test
MYSQL_STAMP := $(VENV)/.installed-mysql

$(MYSQL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,health,mysql]'
	touch $(MYSQL_STAMP)

test-mysql: $(MYSQL_STAMP)
	$(PY) -c "import sys, MySQLdb; from urllib.parse import urlparse; u = urlparse(sys.argv[1]); \
		MySQLdb.connect(host=u.hostname, port=u.port or 3306, user=u.username or 'root', \
		passwd=u.password or '').query('CREATE DATABASE IF NOT EXISTS \`%s\` CHARACTER SET utf8mb4' \
		% u.path.lstrip('/'))" "$(MYSQL_URL)"
	DATABASE_URL=$(MYSQL_URL) DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django check --database default --fail-level WARNING
	DATABASE_URL=$(MYSQL_URL) DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django makemigrations --check --dry-run django_mailapi
	DATABASE_URL=$(MYSQL_URL) $(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) tests/benchmarks/run.py

# The admin, mailapi_status, the sweeper's query and mailapi_purge on 1,000,000 emails,
# failed sends and delivery events and 100,000 suppressions, in a PostgreSQL database of
# its own (mailapi_scale on the server of DATABASE_URL); prints a table. The purge runs
# last and empties the outbox, so each run builds the data again (a few minutes).
SCALE_ARGS ?= --purge
bench-scale: $(STAMP)
	$(PY) tests/benchmarks/admin_scale.py $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .venv-dj42 .venv-dj61 .sqlite-test.db .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .coverage example_project/var
