#!/usr/bin/env bash
# `make wheel-check`: the distribution as a user gets it. Builds the sdist, then the wheel
# from the sdist, each in an isolated build environment (a file the sdist lacks fails here);
# `twine check --strict`; installs the wheel into a fresh venv that cannot see this tree,
# with its dependencies from a wheelhouse of requirements.lock and no index (so the wheel's
# declared dependencies must resolve within the lock); then runs the command from there.
# Any warning from the build or the install fails the check.
# Network: PyPI, only to fill the wheelhouse (.wheelhouse/<lock hash>/, kept between runs;
# pip's cache has its files after `make install`) and for the isolated build's setuptools.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV_BIN=${VENV_BIN:-$REPO/.venv/bin}
DIST=$REPO/dist
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say() { echo "wheel-check: $*"; }
fail() {
	say "FAILED: $*" >&2
	exit 1
}
warnings_in() { grep -iE 'warn|deprecat|would be ignored' "$1" || true; }

cd "$REPO"
rm -rf "$DIST"
say "building the sdist, then the wheel from it"
# (without PYTHONDONTWRITEBYTECODE, which makes setuptools warn that it skips byte-compiling)
env -u PYTHONDONTWRITEBYTECODE "$VENV_BIN/python" -m build --outdir "$DIST" . \
	>"$WORK/build.log" 2>&1 || {
	cat "$WORK/build.log"
	fail "the build failed"
}
[ -z "$(warnings_in "$WORK/build.log")" ] || {
	warnings_in "$WORK/build.log"
	fail "the build warned (above)"
}
"$VENV_BIN/twine" check --strict "$DIST"/*

wheelhouse=$REPO/.wheelhouse/$(sha256sum requirements.lock | cut -c1-16)
if [ ! -d "$wheelhouse" ]; then
	say "filling $wheelhouse from requirements.lock"
	"$VENV_BIN/pip" download --quiet --require-hashes --only-binary=:all: --no-deps \
		-r requirements.lock -d "$wheelhouse.partial"
	mv "$wheelhouse.partial" "$wheelhouse"
fi

say "installing the wheel into a clean venv, offline"
"$VENV_BIN/python" -m venv "$WORK/venv" # the same Python the wheelhouse was filled for
# Only the wheelhouse: no index, no pip configuration of this host.
env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
	"$WORK/venv/bin/pip" install --disable-pip-version-check --no-compile --no-index \
	--find-links "$wheelhouse" "$DIST"/*.whl >"$WORK/install.log" 2>&1 || {
	cat "$WORK/install.log"
	fail "the install failed"
}
[ -z "$(warnings_in "$WORK/install.log")" ] || {
	warnings_in "$WORK/install.log"
	fail "the install warned (above)"
}
"$WORK/venv/bin/pip" check --disable-pip-version-check

say "running it from $WORK, away from the source tree"
cd "$WORK"
version=$(basename "$DIST"/*.whl | cut -d- -f2)
xidwatch=$WORK/venv/bin/xidwatch
"$WORK/venv/bin/python" -I -c "
import sys, store, watcher, mcp_server, xidwatch
for m in (store, watcher, mcp_server, xidwatch):
    assert m.__file__.startswith(sys.prefix), m.__file__
"
[ "$("$xidwatch" --version)" = "xidwatch $version" ] || fail "--version is not $version"
"$xidwatch" explain 79 >/dev/null
"$xidwatch" --log-level error demo --gpus 2 --duration 2 --db "$WORK/demo.db" >"$WORK/demo.log"
"$xidwatch" xids --db "$WORK/demo.db" --since 3650d >/dev/null
say "ok: $(cd "$DIST" && echo *) install and run alone (xidwatch $version)"
