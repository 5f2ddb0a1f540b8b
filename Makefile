# Two commands: `make run` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run run-scaled test test-fast lint bench

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	# Smart Turn v3.2 (end of turn) ships inside this wheel; only its model file is read, by path, so
	# none of pipecat's own dependencies are installed (media_pipeline/turns/smart_turn.py says why).
	$(VENV)/bin/pip install -q --no-deps pipecat-ai==1.14.0
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py create_demo_data
	$(PY) -m lingecho.server -b $(HOST) -p $(PORT) lingecho.asgi:application

# The scaled topology behind nginx on this machine (deploy/run_scaled.py): nginx, two servers, two
# media workers, Celery worker + beat, on local PostgreSQL, Redis and an in-memory S3 (moto).
# HTTP_PORT picks nginx's port; DATABASE_URL / REDIS_URL / CELERY_BROKER_URL override the services.
HTTP_PORT ?= 8080
run-scaled: $(VENV)/.installed-dev
	$(PY) deploy/run_scaled.py --http-port $(HTTP_PORT)

# Lint (ruff, then the import contracts in pyproject.toml), then the whole suite on the embedded
# default, then again on PostgreSQL + Redis when they are reachable.
test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m tests.run_suites

test-fast: $(VENV)/.installed-dev
	$(VENV)/bin/pytest -m "not slow"

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(VENV)/.installed-dev
	for b in bench/*.py; do $(PY) $$b || exit 1; done
