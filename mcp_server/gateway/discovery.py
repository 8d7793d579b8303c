"""Which node daemons exist: ready pods found through the Kubernetes API, or a static list.

Each pod's endpoint is the :class:`~mcp_server.gateway.transport.Transport`'s URL for it: its
pod IP (``direct``) or the API server's pod proxy (``api-proxy``).

A :class:`NodeLister` answers once; :class:`Discovery` asks it every ``refresh_s`` and keeps
the last list that worked when the API fails (a gateway that forgot every node during an
API server upgrade would answer nothing), logging each distinct failure once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import structlog

from mcp_server.gateway.errors import GatewayError
from mcp_server.gateway.transport import DirectTransport, PodEndpoint, Transport
from watcher.clock import now_ms as wall_now_ms
from watcher.k8s.api import KubeCore
from watcher.k8s.client import close_kubernetes
from watcher.settings import DEFAULT_PORT

if TYPE_CHECKING:
    from kubernetes.aio.client import ApiClient, ApiException

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_NODE_PORT",
    "DEFAULT_SELECTOR",
    "Discovery",
    "KubeNodes",
    "NodeLister",
    "NodeRef",
    "StaticNodes",
    "nodes_from_pods",
    "parse_node_spec",
    "static_node",
]

log = structlog.get_logger("mcp_server.gateway.discovery")

DEFAULT_NAMESPACE = "gpu-monitoring"
DEFAULT_SELECTOR = "app.kubernetes.io/name=xidwatch,app.kubernetes.io/component=node-daemon"
DEFAULT_NODE_PORT = DEFAULT_PORT  # the daemon's own default
DEFAULT_REFRESH_S = 30.0
PORT_NAME = "http"
LIST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True, order=True)
class NodeRef:
    """A node daemon: its name, its MCP endpoint URL, and its cluster ("" when only one).

    With several clusters the name is ``cluster/node`` (:mod:`mcp_server.gateway.clusters`).
    """

    name: str
    url: str
    cluster: str = ""


class NodeLister(Protocol):
    """Lists the node daemons once; raises :class:`GatewayError` when it cannot."""

    async def list_nodes(self) -> list[NodeRef]: ...

    async def aclose(self) -> None: ...


def parse_node_spec(text: str) -> NodeRef:
    """``NAME=URL`` (``--node``); a URL with no path gets ``/mcp``."""
    name, sep, url = text.partition("=")
    if not sep or not name.strip():
        raise GatewayError(f"--node {text!r}: use NAME=URL, e.g. gpu-17=http://10.0.3.17:9607")
    return static_node(name.strip(), url.strip())


def static_node(name: str, url: str) -> NodeRef:
    """A node at ``url``: ``http(s)://HOST:PORT``, with ``/mcp`` added when it has no path."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GatewayError(f"node {name}: {url!r} is not an http(s) URL like http://10.0.3.17:9607")
    path = parts.path if parts.path not in ("", "/") else "/mcp"
    return NodeRef(name, f"{parts.scheme}://{parts.netloc}{path}")


@dataclass(frozen=True, slots=True)
class StaticNodes:
    """A fixed list (``--node NAME=URL``): off-cluster use, and tests without an API server."""

    nodes: tuple[NodeRef, ...]

    async def list_nodes(self) -> list[NodeRef]:
        return list(self.nodes)

    async def aclose(self) -> None:
        pass


class KubeNodes:
    """Ready node-daemon pods in one namespace, by label selector."""

    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        selector: str = DEFAULT_SELECTOR,
        default_port: int = DEFAULT_NODE_PORT,
        transport: Transport | None = None,
    ) -> None:
        self._api = api
        self.transport = transport or DirectTransport()
        self._core = KubeCore(api)
        self.namespace = namespace
        self.selector = selector
        self.default_port = default_port

    async def list_nodes(self) -> list[NodeRef]:
        import aiohttp
        from kubernetes.aio.client import ApiException

        try:
            pods = await self._core.list_namespaced_pods(
                self.namespace, label_selector=self.selector, timeout_s=LIST_TIMEOUT_S
            )
        except ApiException as e:
            raise GatewayError(self._api_error(e)) from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise GatewayError(f"cannot reach the Kubernetes API: {e or type(e).__name__}") from e
        try:
            return nodes_from_pods(pods.items or (), self.default_port, self.transport)
        except (AttributeError, TypeError, ValueError) as e:  # a pod missing what Ready implies
            raise GatewayError(f"cannot read the pod list: {type(e).__name__}: {e}") from e

    async def aclose(self) -> None:
        await close_kubernetes(self._api)

    def _api_error(self, e: ApiException) -> str:
        where = f"pods in namespace {self.namespace}"
        if e.status in (401, 403):
            return (
                f"the Kubernetes API refused to list {where} ({e.status} {e.reason}): "
                "the gateway's ServiceAccount needs list on pods there (deploy/gateway/rbac.yaml)"
            )
        return f"listing {where} failed: {e.status} {e.reason}"


def nodes_from_pods(
    pods: Iterable[Any], default_port: int, transport: Transport | None = None
) -> list[NodeRef]:
    """One endpoint per node from ready, running, not-terminating pods; the newest pod wins."""
    transport = transport or DirectTransport()
    chosen: dict[str, tuple[str, NodeRef]] = {}
    for pod in pods:
        if not _ready(pod) or not pod.spec.node_name:
            continue
        endpoint = PodEndpoint(
            namespace=pod.metadata.namespace or "",
            name=pod.metadata.name or "",
            ip=pod.status.pod_ip,
            port=_port(pod, default_port),
        )
        ref = NodeRef(pod.spec.node_name, transport.url(endpoint))
        created = str(pod.metadata.creation_timestamp or "")
        if ref.name not in chosen or created > chosen[ref.name][0]:
            chosen[ref.name] = (created, ref)
    return sorted(ref for _, ref in chosen.values())


def _ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None or not pod.status or not pod.status.pod_ip:
        return False
    conditions = pod.status.conditions or ()
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _port(pod: Any, default: int) -> int:
    for container in pod.spec.containers or ():
        for port in container.ports or ():
            if port.name == PORT_NAME:
                return int(port.container_port)
    return default


class Discovery:
    """The current node list, refreshed from a lister; the last good one survives failures."""

    def __init__(
        self,
        lister: NodeLister,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        on_change: Callable[[Sequence[NodeRef]], None] = lambda nodes: None,
        now_ms: Callable[[], int] = wall_now_ms,
    ) -> None:
        self.lister = lister
        self.refresh_s = refresh_s
        self.nodes: tuple[NodeRef, ...] = ()
        self.last_error: str | None = None
        self.last_success_ms: int | None = None
        self.failures = 0
        self._on_change = on_change
        self._now_ms = now_ms

    @property
    def succeeded(self) -> bool:
        """At least one listing worked (the gateway knows some truth about the cluster)."""
        return self.last_success_ms is not None

    async def refresh(self) -> None:
        """List once; on failure keep the previous nodes and log the error if it is new."""
        try:
            found = tuple(await self.lister.list_nodes())
        except GatewayError as e:
            self.failures += 1
            if str(e) != self.last_error:
                log.warning("discovery_failed", error=str(e), keeping=len(self.nodes))
            self.last_error = str(e)
            return
        if self.last_error is not None:
            log.info("discovery_recovered", nodes=len(found))
        self.last_error = None
        self.last_success_ms = self._now_ms()
        if found != self.nodes:
            log.info("nodes_discovered", nodes=len(found), added=_diff(found, self.nodes))
            self.nodes = found
            self._on_change(found)

    async def run(self) -> None:
        """Refresh every ``refresh_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()


def _diff(new: Sequence[NodeRef], old: Sequence[NodeRef]) -> list[str]:
    before = {n.name for n in old}
    return sorted(n.name for n in new if n.name not in before)[:20]
