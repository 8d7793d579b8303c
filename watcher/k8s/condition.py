"""The Node condition's state: True on a qualifying XID, back to False after a quiet period.

Pure: time (monotonic seconds) is passed in and the API writes are the caller's, so the
quiet period is tested on a fake clock. ``--node-condition TYPE`` turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CLEARED_REASON", "NodeCondition", "NodeConditionStats"]

CLEARED_REASON = "NoRecentFatalXid"


@dataclass(slots=True)
class NodeConditionStats:
    conditions_set: int = 0
    conditions_cleared: int = 0
    condition_failures: int = 0


class NodeCondition:
    """Whether the condition is True, and when it is due to be cleared."""

    def __init__(self, type_: str, *, quiet_s: float, retry_s: float) -> None:
        self.type = type_
        self.quiet_s = quiet_s
        self.retry_s = retry_s  # wait after a failed clear before trying again
        self.stats = NodeConditionStats()
        self.true = False
        self._last_fatal: float | None = None  # when a qualifying XID was last handled
        self._clear_not_before = 0.0

    def found(self, true: bool | None, now: float) -> None:
        """The state read at start (None: unreadable); a True one is cleared after quiet."""
        if true is None or true:
            self.true = True
            self._last_fatal = now

    def fatal(self, now: float) -> bool:
        """A qualifying XID at ``now``: restarts the quiet period; True if the condition
        has to be set."""
        self._last_fatal = now
        return not self.true

    def clear_due(self, now: float) -> bool:
        last = self._last_fatal
        if not self.true or last is None or now - last < self.quiet_s:
            return False
        return now >= self._clear_not_before

    def body(self, status: str, reason: str, message: str, stamp: str) -> dict[str, Any]:
        """A strategic-merge patch of ``nodes/status`` with this condition."""
        cond = {
            "type": self.type,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": stamp,
            "lastHeartbeatTime": stamp,
        }
        return {"status": {"conditions": [cond]}}

    def set_done(self, ok: bool) -> None:
        if ok:
            self.true = True
            self.stats.conditions_set += 1
        else:
            self.stats.condition_failures += 1

    def clear_done(self, ok: bool, now: float) -> None:
        if ok:
            self.true = False
            self.stats.conditions_cleared += 1
        else:
            self.stats.condition_failures += 1
            self._clear_not_before = now + self.retry_s
