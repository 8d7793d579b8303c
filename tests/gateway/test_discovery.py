"""Discovery: ready pods through the real Kubernetes client, the static list, and failures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes.aio import client
from structlog.testing import capture_logs

from mcp_server.gateway.discovery import (
    DEFAULT_SELECTOR,
    Discovery,
    KubeNodes,
    NodeRef,
    StaticNodes,
    nodes_from_pods,
    parse_node_spec,
)
from mcp_server.gateway.errors import GatewayError
from mcp_server.gateway.transport import ApiProxyTransport, parse_via
from tests.kube_api import KubeApiServer
from watcher.k8s.client import close_kubernetes, connect_kubernetes

LABELS = dict(kv.split("=") for kv in DEFAULT_SELECTOR.split(","))


def _pod(
    node: str,
    ip: str | None = "10.0.0.1",
    *,
    ready: bool = True,
    port: int | None = None,
    created: int = 0,
    deleting: bool = False,
) -> client.V1Pod:
    ports = [client.V1ContainerPort(name="http", container_port=port)] if port else None
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=f"xidwatch-{node}",
            creation_timestamp=datetime(2026, 1, 1, 0, 0, created, tzinfo=UTC),
            deletion_timestamp=datetime(2026, 1, 2, tzinfo=UTC) if deleting else None,
        ),
        spec=client.V1PodSpec(
            node_name=node, containers=[client.V1Container(name="xidwatch", ports=ports)]
        ),
        status=client.V1PodStatus(
            pod_ip=ip,
            conditions=[client.V1PodCondition(type="Ready", status=str(ready))],
        ),
    )


def test_only_ready_pods_with_an_ip_that_are_not_terminating_count() -> None:
    pods = [
        _pod("gpu-a", "10.0.0.1"),
        _pod("gpu-b", "10.0.0.2", ready=False),
        _pod("gpu-c", None),
        _pod("gpu-d", "10.0.0.4", deleting=True),
    ]
    assert nodes_from_pods(pods, 9400) == [NodeRef("gpu-a", "http://10.0.0.1:9400/mcp")]


def test_the_port_named_http_wins_over_the_default_and_ipv6_gets_brackets() -> None:
    pods = [_pod("gpu-a", "10.0.0.1", port=9555), _pod("gpu-b", "fd00::7")]
    assert nodes_from_pods(pods, 9400) == [
        NodeRef("gpu-a", "http://10.0.0.1:9555/mcp"),
        NodeRef("gpu-b", "http://[fd00::7]:9400/mcp"),
    ]


def test_during_a_rollout_the_newest_ready_pod_of_a_node_wins() -> None:
    pods = [_pod("gpu-a", "10.0.0.9", created=5), _pod("gpu-a", "10.0.0.1", created=1)]
    assert nodes_from_pods(pods, 9400) == [NodeRef("gpu-a", "http://10.0.0.9:9400/mcp")]


def test_node_specs_take_a_name_and_a_url_and_add_the_mcp_path() -> None:
    assert parse_node_spec("gpu-1=http://10.0.3.1:9400") == NodeRef(
        "gpu-1", "http://10.0.3.1:9400/mcp"
    )
    assert parse_node_spec("x=https://h:1/custom").url == "https://h:1/custom"
    for bad in ("gpu-1", "=http://h:1", "gpu-1=10.0.3.1:9400"):
        with pytest.raises(GatewayError, match="http"):
            parse_node_spec(bad)


class _Flaky:
    def __init__(self) -> None:
        self.answers: list[list[NodeRef] | GatewayError] = []

    async def list_nodes(self) -> list[NodeRef]:
        answer = self.answers.pop(0)
        if isinstance(answer, GatewayError):
            raise answer
        return answer

    async def aclose(self) -> None:
        pass


async def test_a_failed_refresh_keeps_the_last_good_list_and_logs_each_error_once() -> None:
    lister = _Flaky()
    good = [NodeRef("a", "http://a/mcp")]
    down = GatewayError("cannot reach the Kubernetes API")
    lister.answers = [good, down, down, GatewayError("403"), good]
    changes: list[list[str]] = []
    discovery = Discovery(lister, on_change=lambda nodes: changes.append([n.name for n in nodes]))
    with capture_logs() as logs:
        for _ in range(5):
            await discovery.refresh()
            assert discovery.nodes == tuple(good)
    events = [(e["event"], e.get("error")) for e in logs]
    assert events == [
        ("nodes_discovered", None),
        ("discovery_failed", "cannot reach the Kubernetes API"),
        ("discovery_failed", "403"),
        ("discovery_recovered", None),
    ]
    assert changes == [["a"]] and discovery.failures == 3 and discovery.last_error is None


async def test_the_static_list_is_the_list() -> None:
    nodes = (NodeRef("a", "http://a/mcp"),)
    assert await StaticNodes(nodes).list_nodes() == list(nodes)


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


async def test_kubernetes_discovery_lists_ready_daemon_pods_in_the_namespace(
    kube: KubeApiServer, tmp_path: Path
) -> None:
    kube.add_pod("xw-a", "gpu-monitoring", node="gpu-a", labels=LABELS, pod_ip="10.1.0.1")
    kube.add_pod(
        "xw-b",
        "gpu-monitoring",
        node="gpu-b",
        labels=LABELS,
        pod_ip="10.1.0.2",
        ports={"http": 9555},
    )
    kube.add_pod("xw-c", "gpu-monitoring", node="gpu-c", labels=LABELS, ready=False)
    kube.add_pod("other", "gpu-monitoring", node="gpu-a", labels={"app": "x"})
    kube.add_pod("elsewhere", "default", node="gpu-d", labels=LABELS)
    api = await connect_kubernetes(kube.kubeconfig(tmp_path / "kubeconfig"))
    assert api is not None
    try:
        lister = KubeNodes(api, default_port=9400)
        assert await lister.list_nodes() == [
            NodeRef("gpu-a", "http://10.1.0.1:9400/mcp"),
            NodeRef("gpu-b", "http://10.1.0.2:9555/mcp"),  # its port named http
        ]
        kube.set_ready("xw-b", False, "gpu-monitoring")
        assert [n.name for n in await lister.list_nodes()] == ["gpu-a"]
    finally:
        await close_kubernetes(api)
    (request, _) = kube.requests
    assert request.path == "/api/v1/namespaces/gpu-monitoring/pods"
    assert request.query["labelSelector"] == DEFAULT_SELECTOR


async def test_through_the_api_proxy_a_node_is_its_pods_proxy_url_on_the_api_server(
    kube: KubeApiServer, tmp_path: Path
) -> None:
    kube.add_pod("xw-a", "gpu-monitoring", node="gpu-a", labels=LABELS, pod_ip="10.1.0.1")
    kube.add_pod("xw-b", "gpu-monitoring", node="gpu-b", labels=LABELS, ports={"http": 9555})
    api = await connect_kubernetes(kube.kubeconfig(tmp_path / "kubeconfig"))
    assert api is not None
    try:
        lister = KubeNodes(api, default_port=9400, transport=ApiProxyTransport(api))
        pods = f"{kube.url}/api/v1/namespaces/gpu-monitoring/pods"
        assert await lister.list_nodes() == [
            NodeRef("gpu-a", f"{pods}/xw-a:9400/proxy/mcp"),
            NodeRef("gpu-b", f"{pods}/xw-b:9555/proxy/mcp"),
        ]
    finally:
        await close_kubernetes(api)


async def test_api_errors_become_gateway_errors_that_say_what_to_fix(
    kube: KubeApiServer, tmp_path: Path
) -> None:
    api = await connect_kubernetes(kube.kubeconfig(tmp_path / "kubeconfig"))
    assert api is not None
    try:
        lister = KubeNodes(api, namespace="gpu")
        kube.fail_next(1, status=403)
        with pytest.raises(GatewayError, match="ServiceAccount needs list on pods"):
            await lister.list_nodes()
        kube.down = True
        with pytest.raises(GatewayError, match="503"):
            await lister.list_nodes()
    finally:
        await close_kubernetes(api)


def test_via_auto_is_direct_in_a_pod_and_the_api_proxy_elsewhere() -> None:
    assert parse_via("auto", in_pod=True) == "direct"
    assert parse_via("auto", in_pod=False) == "api-proxy"
    assert parse_via("direct", in_pod=False) == "direct"
    with pytest.raises(GatewayError, match="use auto, direct or api-proxy"):
        parse_via("proxy", in_pod=False)
