"""How the gateway reaches a node daemon: straight to its pod IP, or through the API server.

``direct`` POSTs to ``http://POD_IP:PORT/mcp``: it needs a route to the pod network, which a
gateway in the cluster has. ``api-proxy`` POSTs to the API server's pod proxy,
``{server}/api/v1/namespaces/NS/pods/NAME:PORT/proxy/mcp``, with the kubeconfig's own
credentials and TLS (the ``kubernetes.aio`` configuration discovery uses: token, client
certificate, exec plugin, CA, ``tls-server-name``, ``proxy-url``), so it needs only the API
server: a laptop outside the cluster network.

What the daemon sees through the proxy: the API server authenticates the caller and checks
RBAC (a POST is ``create`` on ``pods/proxy``), removes the ``Authorization`` header, and
forwards the request with the ``Host`` header the caller sent it (the API server's own name
from the kubeconfig, e.g. ``abc.gr7.eu-west-1.eks.amazonaws.com``), adding
``X-Forwarded-For`` and ``X-Forwarded-Uri``. So a daemon reached this way lists that name in
``--allowed-host`` (its DNS-rebinding protection stays on) and cannot require a bearer token
of its own: RBAC on ``pods/proxy`` is the access control.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, get_args
from urllib.parse import quote, urlsplit

from mcp_server.gateway.connections import ConnectionPool
from mcp_server.gateway.errors import GatewayError, NodeCallError

if TYPE_CHECKING:
    from kubernetes.aio.client import ApiClient

__all__ = [
    "ApiProxyTransport",
    "DirectTransport",
    "PodEndpoint",
    "Transport",
    "Via",
    "default_via",
    "node_url",
    "parse_via",
]

Via = Literal["direct", "api-proxy"]
VIAS: tuple[Via, ...] = get_args(Via)
ERROR_BODY_BYTES = 16 * 1024  # enough for an API server Status or a daemon's refusal


@dataclass(frozen=True, slots=True)
class PodEndpoint:
    """A daemon pod as discovery found it."""

    namespace: str
    name: str
    ip: str
    port: int


class Transport(Protocol):
    """Where a node call goes, with which headers and TLS, and what a refusal means."""

    @property
    def via(self) -> Via: ...

    def url(self, pod: PodEndpoint) -> str: ...

    async def headers(self) -> dict[str, str]: ...

    def pool(self) -> ConnectionPool:
        """New connections that go this way (TLS, proxy); the caller closes them."""
        ...

    def refusal(self, status: int, body: bytes, url: str) -> NodeCallError: ...


def parse_via(text: str, *, in_pod: bool) -> Via:
    """``--via``: direct, api-proxy, or auto (direct in a pod, else api-proxy)."""
    if text == "auto":
        return default_via(in_pod=in_pod)
    if text not in VIAS:
        raise GatewayError(f"--via {text!r}: use auto, direct or api-proxy")
    return "direct" if text == "direct" else "api-proxy"


def default_via(*, in_pod: bool) -> Via:
    """In a pod the pod network is routable; anywhere else only the API server is."""
    return "direct" if in_pod else "api-proxy"


def node_url(host: str, port: int) -> str:
    """``http://HOST:PORT/mcp``, with an IPv6 address in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name, not an address
    return f"http://{host}:{port}/mcp"


class DirectTransport:
    """To the pod IP, with the nodes' bearer token when they require one."""

    via: Via = "direct"

    def __init__(self, token: str | None = None) -> None:
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def url(self, pod: PodEndpoint) -> str:
        return node_url(pod.ip, pod.port)

    async def headers(self) -> dict[str, str]:
        return self._headers

    def pool(self) -> ConnectionPool:
        return ConnectionPool()

    def refusal(self, status: int, body: bytes, url: str) -> NodeCallError:
        return _daemon_refusal(status, urlsplit(url).netloc, allow="$(POD_IP)", token=True)


class ApiProxyTransport:
    """Through the API server's pod proxy, as the kubeconfig's user."""

    via: Via = "api-proxy"

    def __init__(self, api: ApiClient) -> None:
        self._config = api.configuration
        self._ssl = api.rest_client.ssl_context
        self.server = str(self._config.host).rstrip("/")
        parts = urlsplit(self.server)
        self.api_host = parts.netloc  # the Host header the daemons see through the proxy
        name = parts.hostname or ""
        self.allowed_host = f"[{name}]" if ":" in name else name  # what they must allow

    def url(self, pod: PodEndpoint) -> str:
        ns, name = quote(pod.namespace, safe=""), quote(pod.name, safe="")
        return f"{self.server}/api/v1/namespaces/{ns}/pods/{name}:{pod.port}/proxy/mcp"

    async def headers(self) -> dict[str, str]:
        """The kubeconfig's credential, asked for per call: an exec plugin's token expires."""
        auth = await self._config.auth_settings()
        value = auth.get("BearerToken", {}).get("value")
        return {"Authorization": value} if value else {}

    def pool(self) -> ConnectionPool:
        """With the kubeconfig's TLS (CA, client certificate, tls-server-name) and proxy-url."""
        return ConnectionPool(
            tls=self._ssl,
            server_hostname=self._config.tls_server_name or None,
            proxy=self._config.proxy or None,
        )

    def refusal(self, status: int, body: bytes, url: str) -> NodeCallError:
        status_message = _kube_status_message(body)
        if status_message is None:  # the daemon's own answer, passed through
            return _daemon_refusal(status, self.api_host, allow=self.allowed_host, token=False)
        return _api_refusal(status, status_message, url)


def _daemon_refusal(status: int, host: str, *, allow: str, token: bool) -> NodeCallError:
    """The daemon's own refusal; ``token``: whether a node token can reach it this way."""
    if status == 401:
        if not token:
            return NodeCallError(
                "http_401",
                "the daemon requires a bearer token, which cannot pass the API server's pod "
                "proxy (it removes Authorization): use --via direct, or run the daemons "
                "without --auth-token-file and rely on RBAC on pods/proxy",
            )
        return NodeCallError(
            "http_401", "the node wants a bearer token: give the gateway --node-token-file"
        )
    if status == 403:
        return NodeCallError("http_403", "the node refused the request (403 Forbidden)")
    if status == 421:
        return NodeCallError(
            "http_421",
            f"the node refused the Host header {host}: start its daemon with "
            f"--allowed-host={allow}",
        )
    if status >= 500:
        return NodeCallError("http_5xx", f"the node answered HTTP {status}")
    return NodeCallError("http_4xx", f"the node answered HTTP {status}")


def _api_refusal(status: int, message: str, url: str) -> NodeCallError:
    """The API server's own refusal (a ``Status``), in words that name the fix."""
    if status == 401:
        return NodeCallError(
            "http_401",
            f"the Kubernetes API refused the kubeconfig's credentials ({message}): log in "
            "again (kubectl auth whoami)",
        )
    if status == 403:
        return NodeCallError(
            "http_403",
            f"Kubernetes RBAC: {message}; the user needs get and create on pods/proxy in the "
            "daemons' namespace (deploy/components/api-proxy-access)",
        )
    if status == 404:
        return NodeCallError(
            "http_4xx", f"the API server has no such pod ({message}): replaced or deleted"
        )
    if status >= 500:
        return NodeCallError("http_5xx", f"the API server could not reach the pod: {message}")
    return NodeCallError("http_4xx", f"the API server answered HTTP {status}: {message}")


def _kube_status_message(body: bytes) -> str | None:
    """The message of a Kubernetes ``Status`` object, or None when the body is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, Mapping) or doc.get("kind") != "Status":
        return None
    return str(doc.get("message") or doc.get("reason") or "no message")
