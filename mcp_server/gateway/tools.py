"""The cluster tools: the node list, and questions answered by asking every node at once."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from mcp_server.annotations import READ_ONLY, compact
from mcp_server.deps import tool_errors
from mcp_server.gateway.fleet import Fleet
from mcp_server.gateway.models import (
    FleetHealth,
    FleetInventory,
    FleetXidSummary,
    NodeInfo,
    NodeList,
    NodesNeedingAttention,
)
from mcp_server.params import Since, Until
from store.windows import format_ts

__all__ = ["register_fleet_tools"]

Limit = Annotated[int, Field(ge=1, le=5000, description="at most this many entries, worst first")]
XidSince = Annotated[
    str,
    Field(max_length=40, description="how far back XIDs count: duration (24h, 7d) or ISO 8601"),
]


def register_fleet_tools(server: MCPServer, fleet: Fleet) -> None:
    @server.tool(annotations=READ_ONLY)
    async def list_nodes() -> Annotated[CallToolResult, NodeList]:
        """The node daemons the gateway knows: name, URL, circuit breaker state (closed,
        half-open, open), consecutive failures, last error and last latency.

        Names are what the per-node tools take as ``node``.
        """
        d = fleet.discovery
        nodes = [
            NodeInfo(
                name=s.ref.name,
                url=s.ref.url,
                breaker=s.breaker.state.label,
                consecutive_failures=s.breaker.failures,
                last_error=s.last_error,
                last_latency_ms=None
                if s.last_latency_s is None
                else round(s.last_latency_s * 1e3, 1),
                last_answer=format_ts(s.last_answer_ms) if s.last_answer_ms else None,
            )
            for s in fleet.nodes()
        ]
        last = format_ts(d.last_success_ms) if d.last_success_ms else None
        return compact(
            NodeList(
                source=fleet.source, discovery_error=d.last_error, last_discovery=last, nodes=nodes
            )
        )

    @server.tool(annotations=READ_ONLY)
    async def fleet_inventory() -> Annotated[CallToolResult, FleetInventory]:
        """Every node's GPUs (index, UUID, model, PCI id, driver, lost), and counts per model.

        Partial when nodes fail: ``nodes_failed`` names each with the reason.
        """
        async with tool_errors():
            return compact(await fleet.inventory())

    @server.tool(annotations=READ_ONLY)
    async def fleet_xid_summary(
        since: Since = "24h", until: Until = None, limit: Limit = 200
    ) -> Annotated[CallToolResult, FleetXidSummary]:
        """Which nodes and GPUs had which XIDs in a window (at most 400 days), worst first:
        ranked by the catalog's action (power-cycle the node, reset the GPU, escalate,
        restart the job, ignore), then by count. Totals per node and per code too.

        Partial when nodes fail: ``nodes_failed`` names each with the reason.
        """
        async with tool_errors():
            return compact(await fleet.xid_summary(since, until, limit=limit))

    @server.tool(annotations=READ_ONLY)
    async def fleet_health(
        since: XidSince = "24h", limit: Limit = 200
    ) -> Annotated[CallToolResult, FleetHealth]:
        """Every GPU on every node with its status (ok, warning, critical) and 0-100 score,
        worst first, with its worst findings; counts by status. get_gpu_health with a
        ``node`` gives one GPU's every finding.

        Partial when nodes fail: ``nodes_failed`` names each with the reason.
        """
        async with tool_errors():
            return compact(await fleet.health(since, limit=limit))

    @server.tool(annotations=READ_ONLY)
    async def nodes_needing_attention(
        since: XidSince = "24h",
    ) -> Annotated[CallToolResult, NodesNeedingAttention]:
        """Nodes that need a person: GPUs not ok, fatal XIDs in the window (GPU reset,
        node power-cycle, ...), or not answering, each with the reasons in sentences.
        Critical first, then unreachable, then warnings.
        """
        async with tool_errors():
            return compact(await fleet.needing_attention(since))
