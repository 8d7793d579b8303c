"""Waiting for something to happen: the suite's one polling helper, sync and async.

A test waits on a condition it can observe (a store count, a log record, a counter),
never for a fixed time: on a busy machine a fixed sleep is either too short (the test
fails) or checks nothing. ``tests/test_suite_rules.py`` keeps every other sleep out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["wait_until", "wait_until_async"]

_INTERVAL_S = 0.02


def _attempts(
    predicate: Callable[[], T | None], timeout_s: float, message: str | Callable[[], str] | None
) -> Iterator[T | None]:
    """``predicate()`` again at each step, until the step after ``timeout_s`` fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        yield predicate()
        if time.monotonic() > deadline:
            said = message() if callable(message) else message
            raise AssertionError(f"not so within {timeout_s} s" + (f": {said}" if said else ""))


def wait_until(
    predicate: Callable[[], T | None],
    timeout_s: float = 30.0,
    *,
    message: str | Callable[[], str] | None = None,
    interval_s: float = _INTERVAL_S,
) -> T:
    """``predicate()``'s first true value; fail (saying ``message``) after ``timeout_s``."""
    attempts = _attempts(predicate, timeout_s, message)
    while not (value := next(attempts)):
        time.sleep(interval_s)
    return value  # true, so not None


async def wait_until_async(
    predicate: Callable[[], T | None],
    timeout_s: float = 30.0,
    *,
    message: str | Callable[[], str] | None = None,
    interval_s: float = _INTERVAL_S,
) -> T:
    """:func:`wait_until` on the event loop: other tasks run while it waits."""
    attempts = _attempts(predicate, timeout_s, message)
    while not (value := next(attempts)):
        await asyncio.sleep(interval_s)
    return value
