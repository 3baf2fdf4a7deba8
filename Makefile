# `make run` and `make test` bootstrap everything they need on a fresh Debian with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA := var
# Debian packages the tests drive as real clients, as package or package:command when the
# command is named otherwise (isync's is mbsync). knot: the authoritative DNS server that
# serves the mail-authentication tests' zones (tests/system/dns_server.py).
TEST_DEBS := swaks openssl curl fetchmail isync:mbsync mutt man-db:man \
	knot:knotd opendkim-tools:opendkim-testmsg opendkim postfix:postfix \
	chromium chromium-driver:chromedriver redis-server postgresql:pg_ctlcluster haproxy

.PHONY: run test check setup test-debs bench soak clean man

# Two installs, each marked done by a stamp: `make run` needs the package and its runtime
# dependencies only; `make test` and the other tool targets also need the dev extras (pytest,
# hypothesis, matplotlib…). The dev install is a superset, so it marks the run install done too.
SOURCES := pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# `man mailforge` with .venv/bin on PATH. A wheel install puts the page there itself
# (pyproject's data-files); an editable install leaves data-files out, so it is copied.
MANPAGE := $(VENV)/share/man/man1/mailforge.1

# $(call install,WHAT,EXTRAS): the virtual environment, then the package (editable) with EXTRAS.
define install
	@echo "mailforge: $(1) into $(VENV) (this builds the Cython core: a minute or two)"
	@test -x $(BIN)/python || { echo "mailforge: making the virtual environment $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.$(2)'
endef

$(RUN_STAMP): $(SOURCES)
	$(call install,installing mailforge and its runtime dependencies,)
	touch $@

$(DEV_STAMP): $(SOURCES)
	$(call install,installing mailforge with the test and benchmark tools,[dev])
	touch $(RUN_STAMP) $@

$(MANPAGE): man/mailforge.1
	install -D -m 644 $< $@

setup: $(DEV_STAMP) $(MANPAGE)

run: $(RUN_STAMP) $(MANPAGE)
	@test -f $(DATA)/mailforge.toml || { echo "mailforge: first run: making $(DATA)/ (config, certificate, accounts)"; \
	  $(BIN)/mailforge init --dir $(DATA) --hostname localhost && \
	  $(BIN)/mailforge -c $(DATA)/mailforge.toml admin add admin --generate && \
	  echo "mailforge: the web console: https://127.0.0.1:2880/ (log in as admin; trust $(DATA)/tls/cert.pem)"; }
	@echo "mailforge: starting the server on $(DATA)/mailforge.toml (logs also in $(DATA)/log/mailforge.log; Ctrl-C stops it)"
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
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25
test: setup test-debs
	$(PYTEST)
	MAILFORGE_PUREPYTHON=1 $(PYTEST) tests/system/test_smtp_delivery.py tests/system/test_limits.py tests/system/test_pop3.py tests/system/test_imap.py

# The fast lane while working: unit and parser tests, no servers started (under 2 minutes).
check: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests/unit

# The soak suite for MAILFORGE_SOAK_SECONDS a case (make test runs it as a short smoke).
soak: setup test-debs
	MAILFORGE_SOAK_SECONDS=$${MAILFORGE_SOAK_SECONDS:-120} $(BIN)/python -m pytest -q -m soak tests/soak

# The manual page, made again from the command line's argparse definitions (man/generate.py);
# the test suite fails while it is out of date.
man: setup
	$(BIN)/python man/generate.py

bench: setup
	$(BIN)/python -m bench.load smtp --clients 50 --messages 20000 --size 1024

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
