"""The distribution: what our packages import is what pyproject.toml declares, the lock files
pin it, and the wheel holds our four packages and nothing else.

The full check (an isolated sdist and wheel build, ``twine check``, an install into a clean
venv that cannot see this tree, a demo run from it) is ``make wheel-check``; this module is
the offline part that every ``make test`` runs.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from watcher.prometheus import DISTRIBUTION, installed_version

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("xidwatch", "store", "watcher", "mcp_server")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
DEV = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
# Modules the type checker's own stdlib stubs provide (imported under TYPE_CHECKING).
STUB_ONLY = {"_typeshed"}


def _imported_modules(roots: Iterable[str]) -> dict[str, set[str]]:
    """Top-level third-party modules imported under ``roots`` -> the files importing each."""
    skip = {*PACKAGES, "tests", "bench", *STUB_ONLY}
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in skip:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _undeclared(imports: dict[str, set[str]], declared: Iterable[Requirement]) -> list[str]:
    names = {canonicalize_name(r.name) for r in declared}
    providers = importlib.metadata.packages_distributions()
    return [
        f"{module} (imported by {sorted(files)[0]}) comes from {providers.get(module)}"
        for module, files in sorted(imports.items())
        if not names & {canonicalize_name(d) for d in providers.get(module, [])}
    ]


def test_every_third_party_import_of_our_packages_is_a_declared_dependency() -> None:
    assert _undeclared(_imported_modules(PACKAGES), RUNTIME) == []


def test_every_declared_dependency_is_imported_by_our_packages() -> None:
    """A dependency nobody imports is a leftover, or one that a transitive pin should be."""
    providers = importlib.metadata.packages_distributions()
    used = {canonicalize_name(d) for m in _imported_modules(PACKAGES) for d in providers.get(m, [])}
    assert sorted(r.name for r in RUNTIME if canonicalize_name(r.name) not in used) == []


def test_every_third_party_import_of_the_tests_and_benchmarks_is_declared() -> None:
    assert _undeclared(_imported_modules(["tests", "bench"]), [*RUNTIME, *DEV]) == []


def _pins(lock: Path) -> dict[str, tuple[str, int]]:
    """``name -> (version, number of hashes)`` from a ``uv pip compile`` lock file."""
    pins: dict[str, tuple[str, int]] = {}
    for entry in re.split(r"\n(?=[a-z0-9])", lock.read_text(), flags=re.IGNORECASE):
        if m := re.match(r"([A-Za-z0-9._-]+)==(\S+)", entry):
            pins[canonicalize_name(m[1])] = (m[2], entry.count("--hash=sha256:"))
    return pins


@pytest.mark.parametrize(
    ("lock", "declared"),
    [("requirements.lock", RUNTIME), ("requirements-dev.lock", [*RUNTIME, *DEV])],
)
def test_the_lock_pins_every_declared_dependency_in_range_with_hashes(
    lock: str, declared: list[Requirement]
) -> None:
    """After editing the dependencies in pyproject.toml, ``make lock`` brings this back."""
    pins = _pins(REPO / lock)
    assert pins and all(hashes for _, hashes in pins.values()), f"{lock}: a pin without hashes"
    wrong = [
        f"{r} is pinned to {pins.get(canonicalize_name(r.name), ('nothing',))[0]}"
        for r in declared
        if canonicalize_name(r.name) not in pins
        or not r.specifier.contains(pins[canonicalize_name(r.name)][0], prereleases=True)
    ]
    assert wrong == [], f"{lock} is stale: run `make lock`"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path]]:
    """A wheel built offline from a copy of the sources (the tree stays clean): the wheel,
    the build's output, and the copy."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = src / "dist"
    # without PYTHONDONTWRITEBYTECODE: setuptools warns that it skips byte-compiling
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("*.whl")
    yield path, built.stdout + built.stderr, src


@pytest.mark.slow
def test_the_wheel_holds_exactly_our_four_packages_and_every_source_file(
    wheel: tuple[Path, str, Path],
) -> None:
    path, _, src = wheel
    names = set(zipfile.ZipFile(path).namelist())
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    assert {n.split("/")[0] for n in names} == {*PACKAGES, dist_info}
    sources = {
        str(p.relative_to(src))
        for package in PACKAGES
        for p in (src / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(sources - names) == []  # data files and py.typed included


@pytest.mark.slow
def test_the_wheel_builds_without_warnings_and_declares_the_dependencies(
    wheel: tuple[Path, str, Path],
) -> None:
    path, log, _ = wheel
    warnings = [
        line
        for line in log.splitlines()
        if re.search(r"warn|deprecat|would be ignored", line, re.IGNORECASE)
    ]
    assert warnings == []
    with zipfile.ZipFile(path) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(meta_name))
        entry_points = z.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    assert [r for r in requires if r.marker is None] == RUNTIME  # then the dev extra's
    assert meta["License-Expression"] == PROJECT["license"]
    assert "xidwatch = xidwatch.__main__:run" in entry_points


def test_the_version_everyone_reports_is_the_one_in_pyproject() -> None:
    """``--version``, MCP ``serverInfo.version`` and ``xidwatch_build_info`` all read
    ``installed_version()``; stale metadata (a version bump without ``make install``) fails
    here rather than in a bug report."""
    assert PROJECT["name"] == DISTRIBUTION
    assert installed_version() == PROJECT["version"]
