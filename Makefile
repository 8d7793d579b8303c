# The two commands a newcomer needs (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-deps install lint bench clean lock wheel-check

# The dev tools and every dependency at the versions and hashes in requirements-dev.lock,
# then the project itself, editable.
$(BIN)/xidwatch: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

install: $(BIN)/xidwatch

demo: install
	$(BIN)/xidwatch --log-level warning demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The suite on 3 workers: many tests wait on the processes they start, so a third worker
# uses time two would leave idle (on 2 cores, the other one busy: 3 and 4 workers took the
# same time). A module's tests stay on one worker, so a module-scoped fixture (a daemon, a
# fleet) starts once; `loadgroup` would not group (pytest-xdist 3.8 with pytest 9). Coverage
# is combined across workers and gated by [tool.coverage.report] fail_under. One test: README.
PYTEST_WORKERS ?= 3
test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadscope --cov --cov-report=term:skip-covered

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

# requirements.lock (what the package needs: the image installs it) and requirements-dev.lock
# (that plus the dev tools: `make install` and CI), hashed, for Python 3.11+ on any platform.
# Keeps the pinned versions that still fit pyproject.toml; `make lock LOCK_ARGS=--upgrade`
# moves every pin to the newest release that fits.
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock' $(LOCK_ARGS)
lock: install
	$(LOCK) --output-file requirements.lock
	$(LOCK) --extra dev --constraint requirements.lock --output-file requirements-dev.lock

# The sdist and wheel built, checked and installed alone into a clean venv (deploy/wheel-check.sh).
wheel-check: install
	VENV_BIN=$(abspath $(BIN)) deploy/wheel-check.sh

# deploy/Dockerfile built by buildah on a Debian bookworm base made with debootstrap (cached in
# /var/cache/xidwatch-image-base), then run read-only by chroot (deploy/image-check.sh). Needs
# root and apt-get; elsewhere it says why and skips. .ci/run runs it.
.PHONY: image-check
image-check:
	deploy/image-check.sh

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage dist .wheelhouse
