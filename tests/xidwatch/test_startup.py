"""Start-up stays cheap: the quick commands import none of the heavy clients.

Each command runs in a fresh interpreter under ``python -X importtime``, which lists every
module imported; the check is on that list, not on a clock (docs/performance.md has the
figures, ``python -m bench.startup`` measures them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "watcher" / "kernel" / "data" / "sample-kern.log"
SERVING = {"mcp", "uvicorn", "starlette", "kubernetes", "httpx", "httpx2", "prometheus_client"}
"""Imported only by the commands that serve or talk to a cluster (run, mcp, gateway, demo)."""


def imported(*args: str) -> set[str]:
    """The modules ``xidwatch ARGS`` imports, from a fresh interpreter."""
    argv = [sys.executable, "-X", "importtime", "-m", "xidwatch", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}  # [0] is the header


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in SERVING or m.startswith("watcher.sim")}


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("startup") / "small.db"
    argv = [sys.executable, "-m", "xidwatch", "replay", str(SAMPLE), "--db", str(path)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return path


@pytest.mark.parametrize("args", [("explain", "79"), ("--help",)], ids=["explain", "help"])
def test_explain_and_help_import_no_client_no_store_and_no_logging(args: tuple[str, ...]) -> None:
    modules = imported(*args)
    assert "watcher.kernel.catalog" in modules or args == ("--help",)  # the list is real
    assert heavy(modules) == set()
    assert "aiosqlite" not in modules  # no store is read
    assert "structlog" not in modules  # nothing is logged (it brings asyncio and rich)


def test_xids_imports_the_store_but_no_client(small_db: Path) -> None:
    modules = imported("xids", "--db", str(small_db), "--since", "3650d")
    assert "aiosqlite" in modules
    assert heavy(modules) == set()


def test_the_serving_commands_still_import_what_they_serve_with() -> None:
    assert {"mcp", "uvicorn"} <= imported("mcp", "--help")  # the check above can fail
