"""SIGTERM before the daemon's loop is up: remembered, then honoured as a clean stop.

``xidwatch run`` takes a second or more to import and open everything; a SIGTERM in that
time (a rollout, a test harness, Ctrl-C in a script) used to kill it with -15 and no line.
This module imports nothing heavy, so the entry point can hold the signal first thing;
:func:`termination_requested` tells the daemon to stop as soon as it has started.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import FrameType

__all__ = ["hold_termination", "termination_requested"]

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
