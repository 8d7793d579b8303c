"""KubeCore: the five core/v1 calls, with the real client, against the loopback API server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes.aio import client

from tests.kube_api import STRATEGIC_MERGE_PATCH, KubeApiServer
from watcher.k8s.api import KubeCore
from watcher.k8s.client import close_kubernetes, connect_kubernetes


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[tuple[KubeCore, KubeApiServer]]:
    with KubeApiServer() as kube:
        kube.add_node("node-a")
        kube.add_pod("train-0", "ml", node="node-a", labels={"app": "train"})
        kube.add_pod("train-1", "ml", node="node-b", labels={"app": "train"})
        kube.add_pod("web", "ml", node="node-a", labels={"app": "web"})
        api = await connect_kubernetes(kube.kubeconfig(tmp_path / "kubeconfig"), environ={})
        assert api is not None
        try:
            yield KubeCore(api), kube
        finally:
            await close_kubernetes(api)


async def test_pods_are_listed_by_node_and_by_label_as_models(
    core: tuple[KubeCore, KubeApiServer],
) -> None:
    kc, kube = core
    on_node = await kc.list_node_pods("node-a", resource_version="0", timeout_s=5)
    labelled = await kc.list_namespaced_pods("ml", label_selector="app=train")
    assert sorted(p.metadata.name for p in on_node.items if p.metadata) == ["train-0", "web"]
    assert sorted(p.metadata.name for p in labelled.items if p.metadata) == ["train-0", "train-1"]
    first, second = kube.requests
    assert (first.method, first.path) == ("GET", "/api/v1/pods")
    assert first.query == {"fieldSelector": "spec.nodeName=node-a", "resourceVersion": "0"}
    assert second.path == "/api/v1/namespaces/ml/pods"
    assert second.query == {"labelSelector": "app=train"}
    assert first.headers["authorization"] == f"Bearer {kube.token}"


async def test_an_event_is_created_and_a_node_condition_merged_by_type(
    core: tuple[KubeCore, KubeApiServer],
) -> None:
    kc, kube = core
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="node-a.xid79", namespace="default"),
        involved_object=client.V1ObjectReference(kind="Node", name="node-a"),
        reason="GpuXid",
        message="XID 79",
        type="Warning",
    )
    created = await kc.create_event("default", event)
    condition = {"type": "GpuXidFatal", "status": "True", "reason": "Xid79", "message": "m"}
    node = await kc.patch_node_status("node-a", {"status": {"conditions": [condition]}})
    assert created.reason == "GpuXid"
    assert [e["reason"] for e in kube.events] == ["GpuXid"]
    assert node.status is not None and node.status.conditions is not None
    assert [c.type for c in node.status.conditions] == ["Ready", "GpuXidFatal"]
    post, patch = kube.requests
    assert (post.method, post.path, post.content_type) == (
        "POST",
        "/api/v1/namespaces/default/events",
        "application/json",
    )
    assert (patch.method, patch.path) == ("PATCH", "/api/v1/nodes/node-a/status")
    assert patch.content_type == STRATEGIC_MERGE_PATCH


async def test_a_status_outside_2xx_raises_the_clients_api_exception(
    core: tuple[KubeCore, KubeApiServer],
) -> None:
    kc, kube = core
    with pytest.raises(client.ApiException) as missing:
        await kc.read_node("node-z")
    kube.fail_next(1, status=403)
    with pytest.raises(client.ApiException) as refused:
        await kc.list_node_pods("node-a")
    assert (missing.value.status, refused.value.status) == (404, 403)


def test_the_generated_core_v1_api_is_never_imported(tmp_path: Path) -> None:
    """Its 77,000 lines cost every connected process ~17 MiB; KubeCore makes it unneeded."""
    code = f"""
import asyncio, sys
from pathlib import Path
from tests.kube_api import KubeApiServer
from watcher.k8s.client import close_kubernetes, connect_kubernetes
from watcher.k8s.api import KubeCore

async def main():
    with KubeApiServer() as kube:
        kube.add_node("node-a")
        api = await connect_kubernetes(kube.kubeconfig(Path({str(tmp_path)!r}) / "k"), environ={{}})
        core = KubeCore(api)
        await core.read_node("node-a")
        await core.list_node_pods("node-a")
        await close_kubernetes(api)

asyncio.run(main())
print("kubernetes.aio.client.api.core_v1_api" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
