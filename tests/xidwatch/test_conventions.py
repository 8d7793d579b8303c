"""The command speaks one way: --version, global options anywhere, one-line errors, plain help
types, and ``health``'s exit status. In process, through the console script's ``main``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.mcp_server.helpers import fill
from watcher.prometheus import installed_version
from xidwatch.conventions import hoist_global_options
from xidwatch.main import _Xidwatch, main
from xidwatch.signals import _command, hold_termination
from xidwatch.telemetry import HEALTH_EXIT

COMMANDS = ["run", "replay", "xids", "explain", "demo", "inject", "trend", "health", "mcp"]
COMMANDS += ["gateway", "ack"]


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """``main`` points logging at this test's captured stderr: point it back afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def xidwatch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``xidwatch ARGS`` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert xidwatch(capsys, "--version") == (0, f"xidwatch {installed_version()}\n", "")


def test_global_options_are_taken_after_the_command_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "none.db")
    for args in (
        ("xids", "--log-level", "warning", "--db", missing),
        ("xids", "--db", missing, "--log-level=error", "--log-console"),
        ("--log-json", "xids", "--db", missing, "--log-level", "warning"),
    ):
        status, _, err = xidwatch(capsys, *args)
        assert status == 2 and err.startswith("xidwatch: error: no xidwatch store"), (args, err)


def test_hoisting_keeps_values_with_their_option_and_stops_at_double_dash() -> None:
    assert hoist_global_options(["xids", "--gpu", "0", "--log-level", "debug", "--json"]) == [
        "--log-level",
        "debug",
        "xids",
        "--gpu",
        "0",
        "--json",
    ]
    assert hoist_global_options(["replay", "--", "--log-json"]) == ["replay", "--", "--log-json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("explain", "abc"), "Invalid value for 'CODE'"),
        (("explain", "99999999999999999999"), "less than or equal to 2147483647"),
        (("xids", "--code", "99999999999999999999"), "'--code'"),
        (("bogus",), "No such command 'bogus'"),
        (("xids", "--bogus"), "No such option: --bogus"),
        (("--log-level", "loud", "xids"), "use debug, info, warning or error"),
        (("xids", "--limit", "0"), "'--limit'"),
    ],
    ids=["explain-abc", "explain-huge", "code-huge", "command", "option", "level", "limit"],
)
def test_every_usage_error_is_one_line_with_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    db = () if args[0] == "explain" else ("--db", str(tmp_path / "x.db"))
    status, out, err = xidwatch(capsys, *args, *db)
    assert status == 2 and out == ""
    assert err.startswith("xidwatch: error: ") and err.count("\n") == 1, err  # no Rich box
    assert message in err


def test_a_directory_as_the_store_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = xidwatch(capsys, "xids", "--db", str(tmp_path))
    assert status == 2 and err.startswith("xidwatch: error: ") and err.count("\n") == 1, err


def test_run_with_a_log_file_that_does_not_exist_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["run", "--db", str(tmp_path / "x.db"), "--no-kmsg", "--no-nvml", "--no-kubernetes"]
    args += ["--no-http", "--log-level", "error", "--log-file", str(tmp_path / "nonexistent")]
    status, _, err = xidwatch(capsys, *args)
    assert status == 2, err
    assert err.splitlines()[-1].startswith(f"xidwatch: error: --log-file {tmp_path}/nonexistent")
    assert "Traceback" not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_value_types_without_python_types(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    status, out, _ = xidwatch(capsys, command, "--help")
    assert status == 0 and "Usage:" in out
    assert not re.search(r"<(bool|str|int|float|path|file|list\[)", out), out
    assert "list[" not in out


def test_the_top_level_help_has_no_python_types(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = xidwatch(capsys, "--help")
    assert status == 0 and "--version" in out and "<bool>" not in out


@pytest.fixture(scope="module")
def critical_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four GPUs, one fallen off the bus (XID 79): critical."""
    path = tmp_path_factory.mktemp("health") / "xidwatch.db"
    asyncio.run(fill(path))
    return path


def test_health_exits_with_the_worst_gpus_status(
    capsys: pytest.CaptureFixture[str], critical_db: Path
) -> None:
    status, out, _ = xidwatch(capsys, "health", "--db", str(critical_db), "--since", "400d")
    assert "CRITICAL" in out
    assert status == HEALTH_EXIT["critical"] == 4  # before: 0 with a critical GPU
    status, out, _ = xidwatch(capsys, "health", "--db", str(critical_db), "--json")
    assert status == 4 and out.lstrip().startswith("{")


def test_health_statuses_are_distinct_from_the_error_status() -> None:
    assert HEALTH_EXIT == {"ok": 0, "warning": 3, "critical": 4}


def test_sigterm_is_held_for_run_even_after_a_valued_global_option() -> None:
    assert _command(["--log-level", "warning", "run", "--db", "x"]) == "run"
    assert _command(["--log-json", "xids"]) == "xids"
    before = signal.getsignal(signal.SIGTERM)
    try:
        hold_termination(["--log-level", "warning", "run"])
        assert signal.getsignal(signal.SIGTERM) is not before
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("name", COMMANDS)
def test_the_listed_summary_is_the_first_paragraph_of_the_commands_help(name: str) -> None:
    lazy = _Xidwatch.lazy_commands[name]
    help_text = inspect.getdoc(lazy.load(name).callback) or ""
    assert lazy.summary == " ".join(help_text.split("\n\n")[0].split())


def test_every_command_is_listed_in_the_order_help_shows() -> None:
    assert list(_Xidwatch.lazy_commands) == COMMANDS
