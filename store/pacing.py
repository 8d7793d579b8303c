"""Pacing: the one token bucket and the one retry backoff that every part uses.

Both are pure: time is passed in (``now``, in whatever unit the caller counts, so a
replayed flood folds on the events' own timestamps and a test drives a fake clock), and the
backoff's randomness is injectable.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff", "TokenBucket"]

_MAX_DOUBLINGS = 64  # past this the cap has long been reached; 2.0 ** 1024 would overflow


@dataclass(slots=True)
class TokenBucket:
    """``per`` tokens every ``period`` (the unit of ``now``), at most ``burst`` saved up.

    Starts full. Time that runs backwards (an out-of-order event) adds nothing and does not
    move the bucket's clock back.
    """

    burst: float
    per: float
    period: float
    at: float
    tokens: float

    @classmethod
    def full(cls, burst: float, per: float, period: float, now: float) -> TokenBucket:
        return cls(float(burst), per, period, now, float(burst))

    def take(self, now: float) -> bool:
        """True, and one token spent, if a token is there at ``now``."""
        elapsed = max(0.0, now - self.at)
        self.tokens = min(self.burst, self.tokens + elapsed * self.per / self.period)
        self.at = max(self.at, now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def copy(self) -> TokenBucket:
        return TokenBucket(self.burst, self.per, self.period, self.at, self.tokens)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``initial_s`` doubling per attempt up to ``max_s``, with jitter.

    ``jitter`` is the share of each delay drawn at random: 0 waits exactly the bound, 1 is
    full jitter (uniform from 0 to the bound), which spreads the retries of many callers
    that failed at once so a recovering peer is not hit by all of them together.
    """

    initial_s: float
    max_s: float
    jitter: float = 0.0
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"Backoff jitter {self.jitter}: give a share from 0 to 1")

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        bound = min(self.max_s, self.initial_s * 2.0**doublings)
        return bound * (1.0 - self.jitter + self.jitter * self.rand())
