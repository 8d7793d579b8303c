"""Kubernetes Events (and an optional Node condition) for XIDs that need an operator.

``--k8s-events``: for each stored XID whose catalog action is in ``actions`` (default:
reset the GPU, restart the node or the VM) a ``Warning`` Event ``GpuXid`` on the Node, and
another on the pod when the XID names a process in one, so ``kubectl describe`` and event
exporters show it. ``--node-condition TYPE`` also sets that Node condition True on such an
XID and back to False after ``quiet_s`` without one, for node-problem tooling to act on.

:class:`XidEventPoster` is the Service that joins three parts: the rate-limited queue
(:mod:`watcher.k8s.event_queue`), the condition's state (:mod:`watcher.k8s.condition`)
and the writer that talks to the API (:mod:`watcher.k8s.event_writer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from store.records import XidEvent
from watcher.k8s.condition import CLEARED_REASON, NodeCondition, NodeConditionStats
from watcher.k8s.event_queue import XidEventQueue
from watcher.k8s.event_writer import REPORTING_CONTROLLER, KubeEventWriter

__all__ = ["REPORTING_CONTROLLER", "XidEventPoster", "XidEventPosterStats"]

log = structlog.get_logger("watcher.k8s.events")


class XidEventPosterStats:
    """The parts' counters read as one (``stats.posted``, ``stats.rate_limited``), for
    ``/metrics``; each counter is kept by the part that counts it."""

    def __init__(self, *parts: object) -> None:
        self._parts = parts

    def __getattr__(self, name: str) -> int:
        for part in self._parts:
            if hasattr(part, name):
                return int(getattr(part, name))
        raise AttributeError(name)


def _rfc3339(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class XidEventPoster:
    """Posts Events for what the queue admits and keeps the Node condition (a Service).

    Stopping posts what is still queued, one attempt each (no backoff): the daemon stops
    this part after the writer's last commit, so a fatal XID logged as the node shuts down
    still gets its Event.
    """

    name = "k8s-events"

    def __init__(
        self,
        queue: XidEventQueue,
        writer: KubeEventWriter,
        *,
        condition: NodeCondition | None = None,
        tick_s: float = 5.0,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.writer = writer
        self.condition = condition
        self.tick_s = tick_s
        self.ticks = 0  # passes of the loop done: a test waits on it, never on the clock
        self._now = now
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def stats(self) -> XidEventPosterStats:
        cond = self.condition.stats if self.condition is not None else NodeConditionStats()
        return XidEventPosterStats(self.queue.stats, self.writer.stats, cond)

    @property
    def queued(self) -> int:
        """XIDs waiting to be posted."""
        return self.queue.queued

    def submit(self, events: Sequence[XidEvent]) -> None:
        """Queue the committed events that qualify (any thread, never blocks)."""
        self.queue.submit(events)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Post what :meth:`submit` queued and keep the condition, until stopped."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._start()
            while not self._stopping:
                for event in self.queue.take():
                    await self._handle(event)
                await self._maybe_clear()
                self.ticks += 1
                await self._pause(self.tick_s)
            for event in self.queue.take():
                await self._handle(event)
        finally:
            self._loop = None

    def stop(self) -> None:
        self._stopping = True
        self.writer.stop()
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``; a submit or stop ends it early."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        self._wake.clear()

    async def _start(self) -> None:
        cond = self.condition
        found = await self.writer.read_condition(cond.type if cond is not None else None)
        if cond is not None:
            cond.found(found, self._monotonic())  # quiet period counted from start

    async def _handle(self, event: XidEvent) -> None:
        now = self._monotonic()
        cond = self.condition
        if cond is not None and cond.fatal(now):
            body = cond.body("True", f"Xid{event.xid}", self.writer.message(event), self._stamp())
            ok = await self.writer.patch_status(body)
            cond.set_done(ok)
            if ok:
                log.warning("node_condition_set", condition=cond.type, xid=event.xid)
        if self.queue.admit(event, now):
            await self.writer.post(event)

    async def _maybe_clear(self) -> None:
        cond = self.condition
        now = self._monotonic()
        if cond is None or not cond.clear_due(now):
            return
        minutes = round(cond.quiet_s / 60.0, 1)
        actions = ", ".join(sorted(self.queue.actions))
        message = f"No XID needing {actions} in {minutes} min."
        ok = await self.writer.patch_status(
            cond.body("False", CLEARED_REASON, message, self._stamp())
        )
        cond.clear_done(ok, now)
        if ok:
            log.info("node_condition_cleared", condition=cond.type)

    def _stamp(self) -> str:
        return _rfc3339(self._now())
