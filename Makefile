# `make run` and `make test` bootstrap everything they need on a fresh Debian with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA := var
# Debian packages the tests drive as real clients, as package or package:command when the
# command is named otherwise (isync's is mbsync).
TEST_DEBS := swaks openssl curl fetchmail isync:mbsync

.PHONY: run test check setup test-debs bench soak clean

$(BIN)/mailforge: pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/mailforge

run: setup
	test -f $(DATA)/mailforge.toml || $(BIN)/mailforge init --dir $(DATA) --hostname localhost
	$(BIN)/mailforge -c $(DATA)/mailforge.toml serve

test-debs:
	@missing=""; for p in $(TEST_DEBS); do \
	  command -v $${p##*:} >/dev/null || missing="$$missing $${p%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing test packages:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The whole suite with the Cython core, then the protocol tests again on the pure-Python twins.
# Two pytest processes (a test module stays in one): most system tests wait on servers and
# sockets, so two of them share CI's two cores well and the suite stays under ten minutes.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile
test: setup test-debs
	$(PYTEST)
	MAILFORGE_PUREPYTHON=1 $(PYTEST) tests/system/test_smtp_delivery.py tests/system/test_limits.py tests/system/test_pop3.py tests/system/test_imap.py

# The fast lane while working: unit and parser tests, no servers started (under 2 minutes).
check: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests/unit

# The soak suite for MAILFORGE_SOAK_SECONDS a case (make test runs it as a short smoke).
soak: setup test-debs
	MAILFORGE_SOAK_SECONDS=$${MAILFORGE_SOAK_SECONDS:-120} $(BIN)/python -m pytest -q -m soak tests/soak

bench: setup
	$(BIN)/python -m bench.load smtp --clients 50 --messages 20000 --size 1024

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
