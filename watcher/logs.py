"""structlog set up once per process: JSON lines when not on a terminal, readable when on one.

Every library's standard-library logging (uvicorn, asyncio, the MCP SDK, aiosqlite, httpx)
goes through the same structlog renderer, so the process writes one JSON object per line
and never a Rich box. Those foreign lines are rate-limited per kind (logger and message):
at most ``per_minute`` a minute, the next one after a pause carrying ``suppressed``, the
count left out. An exception the MCP SDK logs while answering a request (an unknown
prompt, a resource URI that does not parse, a tool that raised) was caused by a client:
it becomes one ``mcp_request_failed`` line naming the error and where it was raised, with
no traceback to render on the event loop.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from watcher.log_levels import DEFAULT_LOG_LEVEL

__all__ = ["FOREIGN_LINES_PER_MINUTE", "configure_logging"]

FOREIGN_LINES_PER_MINUTE = 10
_MAX_KINDS = 512  # distinct (logger, message) kinds tracked; past it the oldest is forgotten
_CLIENT_ERROR_LOGGERS = ("mcp",)  # namespaces whose logged exceptions a request caused
_EXTRAS = ("suppressed", "error_type", "error", "where", "detail")


def configure_logging(
    level: str = DEFAULT_LOG_LEVEL,
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
    per_minute: int = FOREIGN_LINES_PER_MINUTE,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Configure structlog, and the standard ``logging`` root, for the whole process.

    ``json=None`` picks by ``isatty()``. Replaces any handler a library installed on the
    root logger (the MCP SDK's ``RichHandler``), so call it before serving.
    """
    out = stream or sys.stderr
    use_json = not out.isatty() if json is None else json
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: _LineWriter(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.lock = _WRITE_LOCK  # one lock for both writers: lines never interleave
    handler.addFilter(_RateLimit(per_minute, clock))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_from_record, *shared, structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries' own info lines (uvicorn's start-up banner) repeat ours: warnings and up.
    root.setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))


_WRITE_LOCK = threading.RLock()


class _LineWriter:
    """structlog's output: each line in one write, under the lock the stdlib handler holds.

    ``print`` writes the text and its newline apart, so a library's line written from
    another thread (aiosqlite's, the NVML event thread's) could land between them and join
    two JSON objects on one line.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def msg(self, message: str) -> None:
        with _WRITE_LOCK:
            self._out.write(message + "\n")
            self._out.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _RateLimit(logging.Filter):
    """At most ``per_minute`` records of one kind a minute; client-caused errors condensed."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        super().__init__()
        self._per_minute = per_minute
        self._clock = clock
        # kind -> [window start, let through in the window, suppressed since the last one]
        self._kinds: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        first_line = str(record.msg).partition("\n")[0][:120]
        kind = (record.name, first_line)
        now = self._clock()
        state = self._kinds.pop(kind, None) or [now, 0, 0]
        self._kinds[kind] = state  # most recent last
        if len(self._kinds) > _MAX_KINDS:
            del self._kinds[next(iter(self._kinds))]
        if now - state[0] >= 60:
            state[0], state[1] = now, 0
        if state[1] >= self._per_minute:
            state[2] += 1
            return False
        state[1] += 1
        if state[2]:
            record.__dict__["suppressed"] = int(state[2])
            state[2] = 0
        if record.exc_info and record.name.startswith(_CLIENT_ERROR_LOGGERS):
            _condense(record)
        return True


def _condense(record: logging.LogRecord) -> None:
    """The exception as fields (type, message, innermost frame), not a traceback."""
    _, exc, tb = record.exc_info or (None, None, None)
    if exc is None:
        return
    cause = exc.__cause__ if str(exc.__cause__) != str(exc) else None
    record.__dict__.update(
        detail=record.getMessage(),
        error_type=type(exc).__name__ + (f" from {type(cause).__name__}" if cause else ""),
        error=str(exc)[:300] + (f": {str(cause)[:300]}" if cause else ""),
        where=_innermost(cause.__traceback__ if cause else tb),
    )
    record.msg, record.args = "mcp_request_failed", ()
    record.exc_info, record.exc_text = None, None
    if record.levelno > logging.WARNING:
        record.levelno, record.levelname = logging.WARNING, "WARNING"


def _innermost(tb: TracebackType | None) -> str | None:
    """``file:line`` of the innermost frame of ``tb``, read without touching the source."""
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def _from_record(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """For a foreign (standard ``logging``) record: its logger's name and our extra fields."""
    record: Any = event.get("_record")
    if record is not None:
        event["logger"] = record.name
        for name in _EXTRAS:
            if hasattr(record, name):
                event[name] = getattr(record, name)
    return event
