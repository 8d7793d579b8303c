# The two commands a newcomer needs (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-deps install lint bench clean

$(BIN)/xidwatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/xidwatch

demo: install
	$(BIN)/xidwatch --log-level warning demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest --cov --cov-report=term:skip-covered

# Tools the suite uses from outside PyPI: promtool and the Prometheus server (Debian's
# `prometheus` package) for the alert rule tests in tests/alerts/. Installed only as root with
# apt-get; elsewhere those tests skip and say why. .ci/run calls this before `make test`.
# policy-rc.d keeps apt from starting the packaged Prometheus service on a machine with an
# init system; an existing policy-rc.d is left alone.
test-deps:
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then \
		echo "test-deps: promtool and prometheus present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "test-deps: installing Debian's prometheus (promtool, prometheus)"; \
		rc=/usr/sbin/policy-rc.d; own=; \
		if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' >$$rc && chmod +x $$rc && own=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus >/dev/null; status=$$?; \
		if [ -n "$$own" ]; then rm -f $$rc; fi; \
		exit $$status; \
	else \
		echo "test-deps: promtool/prometheus missing and not installable here (needs root" \
			"and apt-get): tests/alerts will skip. As root:" \
			"apt-get install --no-install-recommends prometheus"; \
	fi

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
