"""Several clusters as one fleet: nodes named ``cluster/node``, each cluster's own API server.

With more than one kubeconfig context (``--context`` repeated, or ``--all-contexts``) every
node is named ``CLUSTER/NODE`` (the context's name, then the Kubernetes node's), in every
answer and in the per-node tools' ``node`` parameter, since two clusters may well both
have a ``gpu-node-01``. One cluster keeps plain node names.

Each cluster is listed by its own lister and reached with its own transport (its API
server, credentials and TLS), so a node call goes out with its cluster's credentials. A
cluster whose API server cannot list its pods keeps its last good node list (as one
cluster does) and is named in ``clusters_failed``; it is never fatal unless every cluster
fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from mcp_server.gateway.client import NodeClient
from mcp_server.gateway.discovery import NodeLister, NodeRef
from mcp_server.gateway.errors import GatewayError, NodeCallError
from mcp_server.gateway.transport import Transport

__all__ = ["SEPARATOR", "ClusterClient", "ClusterNodes", "UnloadedCluster", "qualified"]

SEPARATOR = "/"


def qualified(cluster: str, node: str) -> str:
    """``cluster/node``: the name a node goes by when the gateway serves several clusters."""
    return f"{cluster}{SEPARATOR}{node}"


class UnloadedCluster:
    """A context whose kubeconfig entry did not load: listed as failed, every time."""

    def __init__(self, error: str) -> None:
        self.error = error

    async def list_nodes(self) -> list[NodeRef]:
        raise GatewayError(self.error)

    async def aclose(self) -> None:
        pass


class ClusterNodes:
    """The nodes of several clusters, each listed by its own lister, named ``cluster/node``."""

    def __init__(self, clusters: Mapping[str, NodeLister]) -> None:
        if len(clusters) < 2:
            raise GatewayError("ClusterNodes serves two clusters or more; use one lister")
        self.clusters = dict(clusters)
        self.failed: dict[str, str] = {}  # cluster -> why its last listing failed
        self._last: dict[str, list[NodeRef]] = {name: [] for name in clusters}

    async def list_nodes(self) -> list[NodeRef]:
        """Every cluster's nodes; a failed cluster keeps its last list and is in ``failed``."""
        names = list(self.clusters)
        outcomes = await asyncio.gather(
            *(self.clusters[name].list_nodes() for name in names), return_exceptions=True
        )
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, GatewayError):
                self.failed[name] = str(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                self.failed.pop(name, None)
                self._last[name] = [
                    replace(ref, name=qualified(name, ref.name), cluster=name) for ref in outcome
                ]
        if len(self.failed) == len(names):
            raise GatewayError(
                "no cluster could be listed: "
                + "; ".join(f"{name}: {error}" for name, error in sorted(self.failed.items()))
            )
        return sorted(ref for refs in self._last.values() for ref in refs)

    async def aclose(self) -> None:
        for lister in self.clusters.values():
            await lister.aclose()


class ClusterClient:
    """Node calls, each sent with its own cluster's transport (credentials, TLS, proxy)."""

    def __init__(self, transports: Mapping[str, Transport]) -> None:
        self._pools = {name: transport.pool() for name, transport in transports.items()}
        self._clients = {
            name: NodeClient(self._pools[name], transport) for name, transport in transports.items()
        }
        self._routes: dict[str, NodeClient] = {}

    def route(self, refs: Sequence[NodeRef]) -> None:
        """Follow discovery: each node's URL goes through its cluster's client."""
        self._routes = {ref.url: self._clients[ref.cluster] for ref in refs}

    async def call_tool(
        self, url: str, tool: str, arguments: Mapping[str, Any], *, timeout_s: float
    ) -> dict[str, Any]:
        client = self._routes.get(url)
        if client is None:
            raise NodeCallError("refused", f"no cluster is known for {url}")
        return await client.call_tool(url, tool, arguments, timeout_s=timeout_s)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
