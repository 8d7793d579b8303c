"""The Kubernetes writer for XIDs: Warning Events on the Node and pod, Node status patches.

Every call is retried with backoff for server-side and transport errors (never for 4xx:
RBAC, invalid) up to ``max_attempts``, logged once per distinct failure, and never raises:
the daemon does not see an API failure. :meth:`KubeEventWriter.stop` cuts a backoff short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes.aio import client
from kubernetes.aio.client import ApiClient

from store.pacing import Backoff
from store.records import XidEvent
from watcher.k8s.api import KubeCore
from watcher.k8s.pods import api_error_text
from watcher.kernel.catalog import XidCatalog, default_catalog

__all__ = ["API_BACKOFF", "COMPONENT", "REPORTING_CONTROLLER", "KubeEventWriter"]

REPORTING_CONTROLLER = "xidwatch.io/xidwatch"
COMPONENT = "xidwatch"
API_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
_MESSAGE_LIMIT = 1024  # the API server rejects longer Event messages

log = structlog.get_logger("watcher.k8s.events")


@dataclass(slots=True)
class KubeEventWriterStats:
    """``posted`` counts Event objects (node and pod each)."""

    posted: int = 0
    post_failures: int = 0
    retries: int = 0


def _time(ts_s: float) -> datetime:
    """A UTC datetime whose isoformat always has microseconds.

    The client writes ``datetime.isoformat()``, which drops ``.000000``; the API server
    parses ``eventTime`` (a MicroTime) only with six fractional digits.
    """
    moment = datetime.fromtimestamp(ts_s, UTC)
    return moment if moment.microsecond else moment.replace(microsecond=1)


class KubeEventWriter:
    """Writes what the poster decided to the API server, one call at a time."""

    def __init__(
        self,
        api: ApiClient,
        node: str,
        *,
        catalog: XidCatalog | None = None,
        reason: str = "GpuXid",
        node_event_namespace: str = "default",
        backoff: Backoff = API_BACKOFF,
        max_attempts: int = 5,
        request_timeout_s: float = 10.0,
    ) -> None:
        self.node = node
        self.catalog = catalog or default_catalog()
        self.reason = reason
        self.node_event_namespace = node_event_namespace
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.request_timeout_s = float(request_timeout_s)
        self.stats = KubeEventWriterStats()
        self._core = KubeCore(api)
        self._stopping = asyncio.Event()
        self._node_uid: str | None = None
        self._last_error: str | None = None
        self._name_ns = 0

    def stop(self) -> None:
        """Cut a retry's backoff short; later failures are not retried."""
        self._stopping.set()

    async def read_condition(self, condition: str | None) -> bool | None:
        """Read the Node (its uid names our Events); whether ``condition`` is True there,
        None when the Node could not be read."""
        ok, node = await self._call(
            "read_node", lambda: self._core.read_node(self.node, timeout_s=self.request_timeout_s)
        )
        if not ok:
            return None
        self._node_uid = node.metadata.uid if node.metadata else None
        for cond in (node.status.conditions if node.status else None) or ():
            if cond.type == condition and cond.status == "True":
                log.info("node_condition_found_true", condition=cond.type, reason=cond.reason)
                return True
        return False

    def message(self, event: XidEvent) -> str:
        """What the XID is and what it needs, as an Event (or condition) message."""
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

    async def post(self, event: XidEvent) -> None:
        """The Event on the Node and, when the XID names a pod's process, on the pod."""
        await self._post(self._node_event(event))
        if event.pod is not None:
            await self._post(self._pod_event(event))

    async def patch_status(self, body: dict[str, Any]) -> bool:
        """A strategic-merge patch of the Node's status; True if it was applied."""

        async def patch() -> None:
            await self._core.patch_node_status(self.node, body, timeout_s=self.request_timeout_s)

        ok, _ = await self._call("patch_node_status", patch)
        return ok

    # --- Event bodies -------------------------------------------------------------------

    def _name(self, obj: str) -> str:
        """``<object>.<hex nanoseconds>``, as client-go names Events; unique per writer."""
        self._name_ns = max(time.time_ns(), self._name_ns + 1)
        return f"{obj}.{self._name_ns:x}"

    def _event(self, event: XidEvent, namespace: str, ref: Any) -> Any:
        at = _time(event.ts_ms / 1000.0)
        return client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=self._name(ref.name), namespace=namespace),
            involved_object=ref,
            type="Warning",
            reason=self.reason,
            message=self.message(event),
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

    # --- calls, retries and their logs --------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """(True, result), or (False, None) after ``max_attempts`` or a permanent error."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                result = await fn()
            except Exception as e:  # the daemon never sees an API failure
                self._failed(what, e)
                stopping = self._stopping.is_set()
                if attempt == self.max_attempts or stopping or not _retryable(e):
                    return False, None
                self.stats.retries += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.backoff.delay_s(attempt))
                continue
            if self._last_error is not None:
                log.info("k8s_api_recovered", call=what)
                self._last_error = None
            return True, result
        return False, None

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
