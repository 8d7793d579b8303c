"""Stopping on a signal: SIGTERM or SIGINT sets an event the serving commands wait on.

``xidwatch run`` takes a second or more to import and open everything; a SIGTERM in that
time (a rollout, a test harness, Ctrl-C in a script) used to kill it with -15 and no line.
This module imports nothing heavy, so the entry point can hold the signal first thing;
:func:`termination_requested` says one came, and :func:`stop_on_signal` (the one place the
commands install their handlers) then stops as soon as the command has started.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

__all__ = ["hold_termination", "stop_on_signal", "termination_requested"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_caught: list[int] = []
_HELD_FOR = frozenset({"run"})  # commands that install their own handler once started
_VALUED = frozenset({"--log-level"})  # global options whose value is the next word


def hold_termination(argv: Sequence[str] | None = None) -> None:
    """Remember SIGTERM until the command installs its handler, for the commands that do."""
    args = list(sys.argv[1:] if argv is None else argv)
    if _command(args) in _HELD_FOR:
        signal.signal(signal.SIGTERM, _remember)


def _command(args: Sequence[str]) -> str | None:
    """The command's name: the first word that is neither an option nor an option's value."""
    value_next = False
    for arg in args:
        if value_next:
            value_next = False
        elif arg in _VALUED:
            value_next = True
        elif not arg.startswith("-"):
            return arg
    return None


def termination_requested() -> bool:
    """Whether a SIGTERM came while the command was starting."""
    return bool(_caught)


def _remember(signum: int, frame: FrameType | None) -> None:
    _caught.append(signum)


@contextmanager
def stop_on_signal() -> Iterator[asyncio.Event]:
    """An event SIGTERM or SIGINT sets while inside (on the running loop); set at once if a
    SIGTERM came while the command was starting. The handlers are removed on the way out."""
    import asyncio  # the caller's loop runs, so this import is already done: none added

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if termination_requested():
        stop.set()
    try:
        yield stop
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
