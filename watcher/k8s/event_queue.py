"""The rate-limited queue of XIDs waiting for a Kubernetes Event.

:meth:`XidEventQueue.submit` is synchronous and never blocks (the store writer calls it
after each commit, from any thread): it keeps the XIDs whose catalog action is in
``actions`` (injected ones only when asked), up to ``size``, and counts the rest. When the
poster takes one, :meth:`XidEventQueue.admit` decides whether it gets an Event: the same
(GPU, code) within ``dedupe_s`` once, and at most ``rate_per_minute`` (``burst`` at once).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import structlog

from store.actions import FATAL_LABELS
from store.pacing import TokenBucket
from store.records import XidEvent

__all__ = ["XidEventQueue", "XidEventQueueStats"]

_RATE_LOG_WINDOW_S = 60.0

log = structlog.get_logger("watcher.k8s.events")


@dataclass(slots=True)
class XidEventQueueStats:
    submitted: int = 0
    queue_dropped: int = 0
    not_qualifying: int = 0
    injected_skipped: int = 0
    deduplicated: int = 0
    rate_limited: int = 0


class XidEventQueue:
    """Qualifying XIDs, bounded; deduplicated and rate-limited as they are taken."""

    def __init__(
        self,
        *,
        actions: Collection[str] = FATAL_LABELS,
        post_injected: bool = False,
        dedupe_s: float = 600.0,
        rate_per_minute: float = 10.0,
        burst: int = 10,
        size: int = 1000,
    ) -> None:
        self.actions = frozenset(actions)
        self.post_injected = post_injected
        self.dedupe_s = dedupe_s
        self.rate_per_minute = rate_per_minute
        self.size = size
        self.stats = XidEventQueueStats()
        self._queue: deque[XidEvent] = deque()
        self._lock = threading.Lock()
        self._overflowing = False
        self._bucket = TokenBucket.full(burst, rate_per_minute, 60.0, 0.0)  # full at any start
        self._seen: dict[tuple[str, int], float] = {}  # (gpu, code) -> when last admitted
        self._rate_logged_at: float | None = None

    def submit(self, events: Sequence[XidEvent]) -> None:
        """Queue the committed events that qualify; drop (and count) beyond ``size``."""
        with self._lock:
            for event in events:
                self.stats.submitted += 1
                if event.action not in self.actions:
                    self.stats.not_qualifying += 1
                elif event.injected and not self.post_injected:
                    self.stats.injected_skipped += 1
                    log.debug("k8s_event_injected_skipped", xid=event.xid, gpu=event.pci_bus_id)
                elif len(self._queue) >= self.size:
                    self.stats.queue_dropped += 1
                    if not self._overflowing:
                        log.warning("k8s_events_queue_full", size=self.size)
                    self._overflowing = True
                else:
                    self._queue.append(event)

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def take(self) -> list[XidEvent]:
        """Everything queued, oldest first."""
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._overflowing = False
        return batch

    def admit(self, event: XidEvent, now: float) -> bool:
        """True if ``event`` gets an Event at ``now`` (monotonic seconds); counts why not."""
        key = (event.gpu_uuid or event.pci_bus_id or "unknown", event.xid)
        self._seen = {k: t for k, t in self._seen.items() if now - t < self.dedupe_s}
        if key in self._seen:
            self.stats.deduplicated += 1
            log.debug("k8s_event_deduplicated", xid=event.xid, gpu=key[0])
            return False
        if not self._bucket.take(now):
            self._rate_limited(now)
            return False
        self._seen[key] = now
        return True

    def _rate_limited(self, now: float) -> None:
        self.stats.rate_limited += 1
        last = self._rate_logged_at
        if last is None or now - last >= _RATE_LOG_WINDOW_S:
            log.warning(
                "k8s_events_rate_limited",
                per_minute=round(self.rate_per_minute, 2),
                rate_limited=self.stats.rate_limited,
            )
            self._rate_logged_at = now
