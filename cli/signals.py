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


def hold_termination(argv: Sequence[str] | None = None) -> None:
    """Remember SIGTERM until the command installs its handler, for the commands that do."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), None)
    if command in _HELD_FOR:
        signal.signal(signal.SIGTERM, _remember)


def termination_requested() -> bool:
    """Whether a SIGTERM came while the command was starting."""
    return bool(_caught)


def _remember(signum: int, frame: FrameType | None) -> None:
    _caught.append(signum)
