"""Flood folding: how many individual XID rows one (kind, GPU, code) may add per minute.

A node can print hundreds of thousands of identical XID lines a day. Each (kind, GPU,
code) gets a token bucket measured on the events' own timestamps (so a replayed flood
folds the same way as a live one): ``burst`` events pass at once, then ``per_minute``.
Events without a token are folded into a burst row whose count stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from store.pacing import TokenBucket

__all__ = ["MAX_BURST_SPAN_MS", "FloodKey", "FloodPolicy", "FloodState"]

MAX_BURST_SPAN_MS = 3_600_000
"""A burst row covers at most an hour; a longer flood gets one row per hour. Window queries
rely on this bound to use the time index (see ``store.queries``)."""

FloodKey = tuple[str, str, int]  # (kind, pci_bus_id or "", xid)


@dataclass(frozen=True, slots=True)
class FloodPolicy:
    """Limits for individual rows; ``per_minute <= 0`` turns folding off."""

    burst: int = 20
    per_minute: float = 6.0
    gap_ms: int = 10 * 60_000
    """A burst row keeps absorbing folded events until this long passes without one."""

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0


@dataclass(slots=True)
class FloodState:
    """Token buckets per key. Pure in-memory state; copy it to plan a batch that may fail."""

    policy: FloodPolicy
    buckets: dict[FloodKey, TokenBucket] = field(default_factory=dict)

    def admit(self, key: FloodKey, ts_ms: int) -> bool:
        """True if an event at ``ts_ms`` may be stored individually (takes a token)."""
        if not self.policy.enabled:
            return True
        bucket = self.buckets.get(key)
        if bucket is None:
            policy = self.policy
            bucket = TokenBucket.full(policy.burst, policy.per_minute, 60_000, ts_ms)
            self.buckets[key] = bucket
        return bucket.take(ts_ms)

    def copy(self) -> FloodState:
        return FloodState(self.policy, {k: b.copy() for k, b in self.buckets.items()})
