# The README's commands. `make setup` installs everything; `make test` runs the whole suite
# (it writes only to temporary directories); `make screenshots` refreshes docs/screenshots/.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-packages bench-packages test screenshots lint run

setup: system-packages $(BIN)/cocov-jobs

# Debian packages: the service's (embedded stores, clones), the browser the dashboard tests
# drive, and Ruby: Rails' actionpack and the Redis gem (tests compare our Ruby-compatible text
# with Ruby's and write Redis values the way Cocov's API does), Sidekiq and ActiveJob (the Sidekiq
# intake tests enqueue through them). Installed only when missing.
system-packages:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql postgresql-contrib"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v git >/dev/null || missing="$$missing git"; \
	command -v zstd >/dev/null || missing="$$missing zstd"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	ruby -e 'require "action_controller"; require "redis"' 2>/dev/null || missing="$$missing ruby ruby-actionpack ruby-redis"; \
	ruby -e 'require "sidekiq"; require "active_job"' 2>/dev/null || missing="$$missing ruby-sidekiq ruby-activejob"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

# What the benchmarks need beyond `make setup`: Debian's wrk (bench/ingress.py's load generator)
# and py-spy (its --profile), each installed only when missing.
bench-packages: $(BIN)/cocov-jobs
	@command -v wrk >/dev/null || { \
	  echo "installing: wrk"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q wrk; \
	}
	@[ -x $(BIN)/py-spy ] || $(BIN)/pip install -q py-spy

$(BIN)/cocov-jobs: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

test:
	$(BIN)/pytest -q

# The dashboard's browser test, saving its screenshots where the README shows them.
screenshots:
	COCOV_TEST_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -q tests/acceptance/test_browser.py

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

run:
	$(BIN)/cocov-jobs run
