"""Retries for one node call: exponential backoff with full jitter, inside the node's deadline.

Full jitter (a delay drawn from 0 to the exponential bound) spreads the retries of a
gateway that fanned out to 200 nodes at once, so a node coming back is not hit by every
retry in the same millisecond.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` more attempts after the first, for errors worth retrying (never tool errors)."""

    retries: int = 2
    base_s: float = 0.1
    cap_s: float = 2.0
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        bound = min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))
        return bound * self.rand()
