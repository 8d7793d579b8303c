"""The core/v1 calls xidwatch makes, sent without the generated ``CoreV1Api``.

``kubernetes.aio``'s ``CoreV1Api`` is one generated module of 77,000 lines; importing it
costs every process that talks to Kubernetes (each node daemon in a cluster, and the
gateway) about 17 MiB and half a second, for the five calls below. Each is built, sent and
read through the same ``ApiClient`` that ``CoreV1Api`` uses (its configuration, bearer
token, TLS, models in and out, ``ApiException`` on a status outside 2xx), so only the
import is saved. Arguments are typed and few, so there is nothing for the generated
validators to catch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the library loads only when a client connects (watcher.k8s.client)
    from kubernetes.aio.client import ApiClient, CoreV1Event, V1Node, V1PodList

__all__ = ["KubeCore"]

JSON = "application/json"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"


class KubeCore:
    """``list`` pods, ``get`` a node, ``create`` an Event, ``patch`` a node's status."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def list_node_pods(
        self, node: str, *, resource_version: str | None = None, timeout_s: float | None = None
    ) -> V1PodList:
        """Pods on ``node`` in every namespace (``spec.nodeName`` field selector).

        ``resource_version="0"`` lets the API server answer from its watch cache.
        """
        query = [("fieldSelector", f"spec.nodeName={node}")]
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        pods: V1PodList = await self._call(
            "GET", "/api/v1/pods", query=query, returns="V1PodList", timeout_s=timeout_s
        )
        return pods

    async def list_namespaced_pods(
        self, namespace: str, *, label_selector: str, timeout_s: float | None = None
    ) -> V1PodList:
        pods: V1PodList = await self._call(
            "GET",
            "/api/v1/namespaces/{namespace}/pods",
            path={"namespace": namespace},
            query=[("labelSelector", label_selector)],
            returns="V1PodList",
            timeout_s=timeout_s,
        )
        return pods

    async def read_node(self, name: str, *, timeout_s: float | None = None) -> V1Node:
        node: V1Node = await self._call(
            "GET",
            "/api/v1/nodes/{name}",
            path={"name": name},
            returns="V1Node",
            timeout_s=timeout_s,
        )
        return node

    async def create_event(
        self, namespace: str, event: CoreV1Event, *, timeout_s: float | None = None
    ) -> CoreV1Event:
        created: CoreV1Event = await self._call(
            "POST",
            "/api/v1/namespaces/{namespace}/events",
            path={"namespace": namespace},
            body=event,
            returns="CoreV1Event",
            timeout_s=timeout_s,
        )
        return created

    async def patch_node_status(
        self, name: str, patch: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> V1Node:
        """A strategic-merge patch of ``nodes/<name>/status`` (conditions merge by type)."""
        node: V1Node = await self._call(
            "PATCH",
            "/api/v1/nodes/{name}/status",
            path={"name": name},
            body=dict(patch),
            content_type=STRATEGIC_MERGE,
            returns="V1Node",
            timeout_s=timeout_s,
        )
        return node

    async def _call(
        self,
        method: str,
        path_template: str,
        *,
        returns: str,
        path: Mapping[str, str] | None = None,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = JSON,
        timeout_s: float | None = None,
    ) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        request = await self.api.param_serialize(
            method,
            path_template,
            path_params=dict(path or {}),
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = await self.api.call_api(*request, _request_timeout=timeout_s)
        await response.read()  # type: ignore[no-untyped-call]  # untyped library
        types = {"200": returns, "201": returns, "202": returns}
        return self.api.response_deserialize(response, types).data
