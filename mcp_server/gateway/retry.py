"""Retries for one node call: how many, and the backoff between them, inside the node's deadline.

Full jitter (a delay drawn from 0 to the exponential bound) spreads the retries of a
gateway that fanned out to 200 nodes at once, so a node coming back is not hit by every
retry in the same millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from store.pacing import Backoff

__all__ = ["NODE_BACKOFF", "RetryPolicy"]

NODE_BACKOFF = Backoff(initial_s=0.1, max_s=2.0, jitter=1.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` more attempts after the first, for errors worth retrying (never tool errors)."""

    retries: int = 2
    backoff: Backoff = field(default=NODE_BACKOFF)
