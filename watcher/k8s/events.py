"""Kubernetes Events (and an optional Node condition) for XIDs that need an operator.

``--k8s-events``: for each stored XID whose catalog action is in ``actions`` (default:
reset the GPU, restart the node or the VM) a ``Warning`` Event ``GpuXid`` on the Node, and
another on the pod when the XID names a process in one, so ``kubectl describe`` and event
exporters show it. The same (GPU, code) within ``dedupe_s`` posts once; a token bucket caps
the rate. ``--node-condition TYPE`` also sets that Node condition True on such an XID and
back to False after ``quiet_s`` without one, for node-problem tooling to act on.

:meth:`XidEventPoster.submit` is synchronous and never blocks (the store writer calls it
after each commit); everything that talks to the API runs in :meth:`XidEventPoster.run`,
which retries with backoff and never raises into the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes.aio import client
from kubernetes.aio.client import ApiClient

from store.actions import FATAL_LABELS
from store.records import XidEvent
from watcher.k8s.api import KubeCore
from watcher.k8s.pods import api_error_text
from watcher.kernel.catalog import XidCatalog, default_catalog

__all__ = ["REPORTING_CONTROLLER", "XidEventPoster", "XidEventPosterStats"]

REPORTING_CONTROLLER = "xidwatch.io/xidwatch"
COMPONENT = "xidwatch"
CLEARED_REASON = "NoRecentFatalXid"
_MESSAGE_LIMIT = 1024  # the API server rejects longer Event messages
_RATE_LOG_WINDOW_S = 60.0

log = structlog.get_logger("watcher.k8s.events")


@dataclass(slots=True)
class XidEventPosterStats:
    """Counters for ``/metrics``; ``posted`` counts Event objects (node and pod each)."""

    submitted: int = 0
    queue_dropped: int = 0
    not_qualifying: int = 0
    injected_skipped: int = 0
    deduplicated: int = 0
    rate_limited: int = 0
    posted: int = 0
    post_failures: int = 0
    retries: int = 0
    conditions_set: int = 0
    conditions_cleared: int = 0
    condition_failures: int = 0


def _time(ts_s: float) -> datetime:
    """A UTC datetime whose isoformat always has microseconds.

    The client writes ``datetime.isoformat()``, which drops ``.000000``; the API server
    parses ``eventTime`` (a MicroTime) only with six fractional digits.
    """
    moment = datetime.fromtimestamp(ts_s, UTC)
    return moment if moment.microsecond else moment.replace(microsecond=1)


def _rfc3339(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _TokenBucket:
    """``rate_per_minute`` tokens a minute, at most ``burst`` saved up."""

    def __init__(self, rate_per_minute: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_minute / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class XidEventPoster:
    """Posts Events for fatal XIDs and keeps the Node condition (a Service)."""

    name = "k8s-events"

    def __init__(
        self,
        api: ApiClient,
        node: str,
        *,
        catalog: XidCatalog | None = None,
        actions: Collection[str] = FATAL_LABELS,
        post_injected: bool = False,
        reason: str = "GpuXid",
        dedupe_s: float = 600.0,
        rate_per_minute: float = 10.0,
        burst: int = 10,
        node_condition: str | None = None,
        quiet_s: float = 3600.0,
        queue_size: int = 1000,
        node_event_namespace: str = "default",
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        max_attempts: int = 5,
        request_timeout_s: float = 10.0,
        tick_s: float = 5.0,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.catalog = catalog or default_catalog()
        self.actions = frozenset(actions)
        self.post_injected = post_injected
        self.reason = reason
        self.dedupe_s = dedupe_s
        self.node_condition = node_condition
        self.quiet_s = quiet_s
        self.queue_size = queue_size
        self.node_event_namespace = node_event_namespace
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.max_attempts = max_attempts
        self.request_timeout_s = float(request_timeout_s)
        self.tick_s = tick_s
        self.stats = XidEventPosterStats()
        self._core = KubeCore(api)
        self._now = now
        self._monotonic = monotonic
        self._queue: deque[XidEvent] = deque()
        self._lock = threading.Lock()
        self._overflowing = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bucket = _TokenBucket(rate_per_minute, burst, monotonic())
        self._rate_logged_at: float | None = None
        self._seen: dict[tuple[str, int], float] = {}  # (gpu, code) -> when last posted
        self._node_uid: str | None = None
        self._condition_true = False
        self._last_fatal: float | None = None  # when a qualifying XID was last handled
        self._clear_not_before = 0.0
        self._last_error: str | None = None
        self._name_ns = 0

    # --- intake (any thread, never blocks) ----------------------------------------------

    def submit(self, events: Sequence[XidEvent]) -> None:
        """Queue the committed events that qualify; drop (and count) beyond ``queue_size``."""
        with self._lock:
            for event in events:
                self.stats.submitted += 1
                if event.action not in self.actions:
                    self.stats.not_qualifying += 1
                elif event.injected and not self.post_injected:
                    self.stats.injected_skipped += 1
                    log.debug("k8s_event_injected_skipped", xid=event.xid, gpu=event.pci_bus_id)
                elif len(self._queue) >= self.queue_size:
                    self.stats.queue_dropped += 1
                    if not self._overflowing:
                        log.warning("k8s_events_queue_full", size=self.queue_size)
                    self._overflowing = True
                else:
                    self._queue.append(event)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    @property
    def queued(self) -> int:
        """XIDs waiting to be posted."""
        with self._lock:
            return len(self._queue)

    def _take(self) -> list[XidEvent]:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._overflowing = False
        return batch

    # --- the service --------------------------------------------------------------------

    async def run(self) -> None:
        """Post what :meth:`submit` queued and keep the condition, until stopped.

        Stopping posts what is still queued, one attempt each (no backoff): the daemon
        stops this part after the writer's last commit, so a fatal XID logged as the node
        shuts down still gets its Event.
        """
        self._loop = asyncio.get_running_loop()
        try:
            await self._load_node()
            while not self._stopping:
                for event in self._take():
                    await self._handle(event)
                await self._maybe_clear()
                await self._pause(self.tick_s)
            for event in self._take():
                await self._handle(event)
        finally:
            self._loop = None

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``; a submit or stop ends it early."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        self._wake.clear()

    async def _load_node(self) -> None:
        """The Node's uid (for the Events) and whether our condition is already True."""
        ok, node = await self._call(
            "read_node", lambda: self._core.read_node(self.node, timeout_s=self.request_timeout_s)
        )
        if not ok:
            self._condition_true = self.node_condition is not None  # unknown: clear it later
            self._last_fatal = self._monotonic()
            return
        self._node_uid = node.metadata.uid if node.metadata else None
        for cond in (node.status.conditions if node.status else None) or ():
            if cond.type == self.node_condition and cond.status == "True":
                self._condition_true = True
                self._last_fatal = self._monotonic()  # quiet period counted from start
                log.info("node_condition_found_true", condition=cond.type, reason=cond.reason)

    # --- one XID ------------------------------------------------------------------------

    async def _handle(self, event: XidEvent) -> None:
        now = self._monotonic()
        self._last_fatal = now
        if self.node_condition is not None:
            await self._set_condition(event)
        key = (event.gpu_uuid or event.pci_bus_id or "unknown", event.xid)
        self._seen = {k: t for k, t in self._seen.items() if now - t < self.dedupe_s}
        if key in self._seen:
            self.stats.deduplicated += 1
            log.debug("k8s_event_deduplicated", xid=event.xid, gpu=key[0])
            return
        if not self._bucket.take(now):
            self._rate_limited(now)
            return
        self._seen[key] = now
        await self._post(self._node_event(event))
        if event.pod is not None:
            await self._post(self._pod_event(event))

    def _rate_limited(self, now: float) -> None:
        self.stats.rate_limited += 1
        last = self._rate_logged_at
        if last is None or now - last >= _RATE_LOG_WINDOW_S:
            log.warning(
                "k8s_events_rate_limited",
                per_minute=round(self._bucket.rate_per_s * 60, 2),
                rate_limited=self.stats.rate_limited,
            )
            self._rate_logged_at = now

    def _message(self, event: XidEvent) -> str:
        info = self.catalog.lookup(event.xid, event.kind)
        label = "SXid" if event.kind == "sxid" else "XID"
        name = f" ({info.mnemonic})" if info.mnemonic else ""
        gpu = ", ".join(x for x in (event.pci_bus_id, event.gpu_uuid) if x) or "unknown GPU"
        parts = [f"{label} {event.xid}{name} on GPU {gpu}: {info.title}."]
        parts.append(f"Action {event.action}: {self.catalog.action_text(event.action)}")
        if event.pid is not None:
            parts.append(
                f"Process {event.pid}" + (f" ({event.process})." if event.process else ".")
            )
        if event.pod is not None:
            parts.append(f"Pod {event.pod.namespace}/{event.pod.pod}.")
        text = " ".join(parts)
        text = f"[injected] {text}" if event.injected else text
        return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."

    def _name(self, obj: str) -> str:
        """``<object>.<hex nanoseconds>``, as client-go names Events; unique per poster."""
        self._name_ns = max(time.time_ns(), self._name_ns + 1)
        return f"{obj}.{self._name_ns:x}"

    def _event(self, event: XidEvent, namespace: str, ref: Any) -> Any:
        at = _time(event.ts_ms / 1000.0)
        return client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=self._name(ref.name), namespace=namespace),
            involved_object=ref,
            type="Warning",
            reason=self.reason,
            message=self._message(event),
            action=event.action,
            source=client.V1EventSource(component=COMPONENT, host=self.node),
            reporting_component=REPORTING_CONTROLLER,
            reporting_instance=self.node,
            first_timestamp=at,
            last_timestamp=at,
            event_time=at,
            count=1,
        )

    def _node_event(self, event: XidEvent) -> Any:
        # kubectl describe node finds Events by the node's uid or, as the kubelet sets it,
        # by its name: either works when the uid could not be read.
        uid = self._node_uid or self.node
        ref = client.V1ObjectReference(api_version="v1", kind="Node", name=self.node, uid=uid)
        return self._event(event, self.node_event_namespace, ref)

    def _pod_event(self, event: XidEvent) -> Any:
        pod = event.pod
        assert pod is not None
        field_path = f"spec.containers{{{pod.container}}}" if pod.container else None
        ref = client.V1ObjectReference(
            api_version="v1",
            kind="Pod",
            namespace=pod.namespace,
            name=pod.pod,
            uid=pod.uid,
            field_path=field_path,
        )
        return self._event(event, pod.namespace, ref)

    async def _post(self, body: Any) -> None:
        namespace = body.metadata.namespace

        async def create() -> None:
            try:
                await self._core.create_event(namespace, body, timeout_s=self.request_timeout_s)
            except client.ApiException as e:
                if e.status != 409:  # 409: an earlier attempt got through
                    raise

        ok, _ = await self._call("create_event", create)
        if ok:
            self.stats.posted += 1
            log.info(
                "k8s_event_posted",
                kind=body.involved_object.kind,
                name=body.involved_object.name,
                namespace=namespace,
            )
        else:
            self.stats.post_failures += 1

    # --- the Node condition -------------------------------------------------------------

    async def _set_condition(self, event: XidEvent) -> None:
        if self._condition_true:
            return
        stamp = _rfc3339(self._now())
        cond = {
            "type": self.node_condition,
            "status": "True",
            "reason": f"Xid{event.xid}",
            "message": self._message(event),
            "lastTransitionTime": stamp,
            "lastHeartbeatTime": stamp,
        }
        if await self._patch_condition(cond):
            self._condition_true = True
            self.stats.conditions_set += 1
            log.warning("node_condition_set", condition=self.node_condition, xid=event.xid)
        else:
            self.stats.condition_failures += 1

    async def _maybe_clear(self) -> None:
        now = self._monotonic()
        last = self._last_fatal
        if not self._condition_true or last is None or now - last < self.quiet_s:
            return
        if now < self._clear_not_before:
            return
        stamp = _rfc3339(self._now())
        minutes = round(self.quiet_s / 60.0, 1)
        cond = {
            "type": self.node_condition,
            "status": "False",
            "reason": CLEARED_REASON,
            "message": f"No XID needing {', '.join(sorted(self.actions))} in {minutes} min.",
            "lastTransitionTime": stamp,
            "lastHeartbeatTime": stamp,
        }
        if await self._patch_condition(cond):
            self._condition_true = False
            self.stats.conditions_cleared += 1
            log.info("node_condition_cleared", condition=self.node_condition)
        else:
            self.stats.condition_failures += 1
            self._clear_not_before = now + self.retry_max_s

    async def _patch_condition(self, cond: dict[str, Any]) -> bool:
        body = {"status": {"conditions": [cond]}}

        async def patch() -> None:
            await self._core.patch_node_status(self.node, body, timeout_s=self.request_timeout_s)

        ok, _ = await self._call("patch_node_status", patch)
        return ok

    # --- calls, retries and their logs --------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """(True, result), or (False, None) after ``max_attempts`` or a permanent error."""
        delay = self.retry_initial_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                result = await fn()
            except Exception as e:  # the daemon never sees an API failure
                self._failed(what, e)
                if attempt == self.max_attempts or self._stopping or not _retryable(e):
                    return False, None
                self.stats.retries += 1
                await self._backoff(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if self._last_error is not None:
                log.info("k8s_api_recovered", call=what)
                self._last_error = None
            return True, result
        return False, None

    async def _backoff(self, seconds: float) -> None:
        """Sleep for a retry; only :meth:`stop` cuts it short (a submit does not)."""
        deadline = self._monotonic() + seconds
        while not self._stopping and (left := deadline - self._monotonic()) > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return
            self._wake.clear()

    def _failed(self, what: str, error: Exception) -> None:
        text = f"{what}: {api_error_text(error)}"
        if text != self._last_error:
            log.warning("k8s_api_failed", call=what, error=api_error_text(error))
            self._last_error = text


def _retryable(error: Exception) -> bool:
    """Server-side and transport errors are worth another try; 4xx (RBAC, invalid) are not."""
    if isinstance(error, client.ApiException):
        status = error.status or 0
        return status == 429 or status >= 500 or status == 0
    return True
