"""A circuit breaker per node, so a dead node costs one fast refusal instead of a timeout.

Closed: calls go through; after ``threshold`` consecutive failures it opens. Open: calls
are refused at once until ``cooldown_s`` has passed, then it is half-open. Half-open: one
trial call goes through (others are refused while it runs); success closes it, failure
opens it for another cooldown. The clock is injected, so tests step time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(IntEnum):
    """The gauge values of ``xidwatch_gateway_node_breaker_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class CircuitBreaker:
    """Counts one node's consecutive failures; :meth:`allow` says whether to call it now."""

    def __init__(
        self,
        threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def failures(self) -> int:
        """Consecutive failures so far (0 after a success)."""
        return self._failures

    @property
    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when not open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """True to make the call now; in half-open, True only for the one trial call."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._trial_running:
            return False
        self._trial_running = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_running or (self._opened_at is None and self._failures >= self.threshold):
            self._opened_at = self._clock()  # a late failure does not extend the cooldown
        self._trial_running = False

    def release(self) -> None:
        """A call that ended without a verdict (cancelled): let the next one be the trial."""
        self._trial_running = False
