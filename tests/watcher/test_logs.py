"""Process-wide logging: every library's lines as structlog JSON, none as Rich, rate-limited."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from mcp.server.mcpserver import MCPServer

from watcher.logs import configure_logging


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """A stream the process logs to for one test; the logging set-up is restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    yield io.StringIO()
    for h in root.handlers[:]:
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    structlog.configure(**saved)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _raise(exc: Exception) -> None:
    raise exc


def log_exception(name: str, message: str, exc: Exception) -> None:
    try:
        _raise(exc)
    except Exception:
        logging.getLogger(name).exception(message, "prompts/get")


def test_the_mcp_sdk_installs_no_rich_handler_once_logging_is_configured(
    out: io.StringIO,
) -> None:
    configure_logging("info", json=True, stream=out)
    MCPServer("probe", log_level="WARNING")  # calls logging.basicConfig(handlers=[RichHandler])
    names = [type(h).__name__ for h in logging.getLogger().handlers]
    assert "RichHandler" not in names and len(names) == 1
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    (line,) = lines(out)
    assert line["event"] == "Invalid HTTP request received."
    assert line["logger"] == "uvicorn.error" and line["level"] == "warning"


def test_a_handler_for_rich_installed_before_is_replaced(out: io.StringIO) -> None:
    MCPServer("probe", log_level="WARNING")
    configure_logging("info", json=True, stream=out)
    assert [type(h).__name__ for h in logging.getLogger().handlers] == ["StreamHandler"]


def test_an_error_a_client_caused_in_the_sdk_is_one_line_without_a_traceback(
    out: io.StringIO,
) -> None:
    configure_logging("info", json=True, stream=out)
    log_exception("mcp.shared.jsonrpc_dispatcher", "handler for %r raised", ValueError("nope"))
    (line,) = lines(out)
    assert line["event"] == "mcp_request_failed"
    assert line["level"] == "warning"  # the client's mistake, not the daemon's
    assert line["detail"] == "handler for 'prompts/get' raised"
    assert line["error_type"] == "ValueError" and line["error"] == "nope"
    assert line["where"].endswith(
        f"{__file__.rpartition('/')[2]}:{_raise.__code__.co_firstlineno + 1}"
    )
    assert "exception" not in line and "Traceback" not in out.getvalue()


def test_a_flood_of_one_kind_is_cut_to_a_few_lines_a_minute_then_counted(
    out: io.StringIO,
) -> None:
    clock = FakeClock()
    configure_logging("info", json=True, stream=out, per_minute=5, clock=clock)
    for _ in range(100):
        log_exception("mcp.server.mcpserver.server", "Resource %r raised", KeyError("abc"))
    logging.getLogger("asyncio").error("socket.accept() out of system resource\nsocket: x")
    assert len(lines(out)) == 5 + 1  # five of the flood, and the other kind
    clock.now += 60
    log_exception("mcp.server.mcpserver.server", "Resource %r raised", KeyError("abc"))
    last = lines(out)[-1]
    assert last["event"] == "mcp_request_failed" and last["suppressed"] == 95


def test_other_libraries_exceptions_keep_their_traceback_inside_one_json_line(
    out: io.StringIO,
) -> None:
    configure_logging("info", json=True, stream=out)
    try:
        _raise(OSError(24, "Too many open files"))
    except OSError:
        logging.getLogger("asyncio").exception("socket.accept() out of system resource")
    (line,) = lines(out)
    assert line["logger"] == "asyncio" and line["level"] == "error"
    assert "Too many open files" in line["exception"]


def test_on_a_terminal_tracebacks_are_plain_text_not_rich(out: io.StringIO) -> None:
    configure_logging("info", json=False, stream=out)
    try:
        _raise(RuntimeError("boom"))
    except RuntimeError:
        structlog.get_logger("t").exception("failed")
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert not set(text) & set("╭╰│❱")


def test_lines_from_structlog_and_library_threads_never_share_a_line(out: io.StringIO) -> None:
    """Our lines and a library's, written from two threads at once, stay one JSON per line."""
    configure_logging("info", json=True, stream=out, per_minute=10_000)

    def library() -> None:
        for i in range(400):  # distinct messages: each its own kind for the rate limit
            logging.getLogger("somelib").warning("library line %d", i)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can: a race shows
    try:
        thread = threading.Thread(target=library)
        thread.start()
        for i in range(2000):
            structlog.get_logger("ours").info("our_line", i=i)
        thread.join()
    finally:
        sys.setswitchinterval(switch)
    records = [json.loads(line) for line in out.getvalue().splitlines()]  # joined: no parse
    assert sum(r["event"] == "our_line" for r in records) == 2000
    assert sum(str(r["event"]).startswith("library line") for r in records) == 400
