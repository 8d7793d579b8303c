"""The cluster tools: the node list, and questions answered by asking every node at once."""

from __future__ import annotations

from typing import Annotated

from mcp_types import CallToolResult
from pydantic import Field

from mcp_server.deps import tool_errors
from mcp_server.gateway.fleet import Fleet
from mcp_server.gateway.models import (
    FleetHealth,
    FleetInventory,
    FleetMetricTrend,
    FleetXidSummary,
    NodeInfo,
    NodeList,
    NodesNeedingAttention,
)
from mcp_server.params import Since, Until
from mcp_server.results import compact
from mcp_server.tools import ToolFn
from store.windows import format_ts

__all__ = [
    "FLEET_TOOLS",
    "fleet_health",
    "fleet_inventory",
    "fleet_metric_trend",
    "fleet_xid_summary",
    "list_nodes",
    "nodes_needing_attention",
]

Limit = Annotated[int, Field(ge=1, le=5000, description="at most this many entries, worst first")]
TrendMetric = Annotated[
    str,
    Field(
        pattern=r"^xidwatch_gpu_[a-z_]+$",
        max_length=80,
        description="a per-GPU gauge of the daemons (docs/metrics.md), e.g. "
        "xidwatch_gpu_temperature_celsius, xidwatch_gpu_power_watts, "
        "xidwatch_gpu_memory_used_bytes, xidwatch_gpu_utilization_ratio",
    ),
]
XidSince = Annotated[
    str,
    Field(max_length=40, description="how far back XIDs count: duration (24h, 7d) or ISO 8601"),
]


async def list_nodes(fleet: Fleet) -> Annotated[CallToolResult, NodeList]:
    """The node daemons the gateway knows: name, URL, circuit breaker state (closed,
    half-open, open), consecutive failures, last error and last latency.

    Names are what the per-node tools take as ``node``: ``cluster/node`` when the gateway
    serves several clusters (``clusters_failed`` then names any whose API server failed).
    """

    d = fleet.discovery
    nodes = [
        NodeInfo(
            name=s.ref.name,
            url=s.ref.url,
            breaker=s.breaker.state.label,
            consecutive_failures=s.breaker.failures,
            last_error=s.last_error,
            last_latency_ms=None if s.last_latency_s is None else round(s.last_latency_s * 1e3, 1),
            last_answer=format_ts(s.last_answer_ms) if s.last_answer_ms else None,
        )
        for s in fleet.nodes()
    ]
    last = format_ts(d.last_success_ms) if d.last_success_ms else None
    return compact(
        NodeList(
            source=fleet.source,
            discovery_error=d.last_error,
            clusters_failed=fleet.clusters_failed(),
            last_discovery=last,
            nodes=nodes,
        )
    )


async def fleet_inventory(fleet: Fleet) -> Annotated[CallToolResult, FleetInventory]:
    """Every node's GPUs (index, UUID, model, PCI id, driver, lost), and counts per model.

    Partial when nodes fail: ``nodes_failed`` names each with the reason.
    """
    async with tool_errors():
        return compact(await fleet.inventory())


async def fleet_xid_summary(
    fleet: Fleet, since: Since = "24h", until: Until = None, limit: Limit = 200
) -> Annotated[CallToolResult, FleetXidSummary]:
    """Which nodes and GPUs had which XIDs in a window (at most 400 days), worst first:
    ranked by the catalog's action (power-cycle the node, reset the GPU, escalate,
    restart the job, ignore), then by count. Totals per node and per code too.

    Partial when nodes fail: ``nodes_failed`` names each with the reason. With Prometheus
    (--prometheus-url), nodes it scraped in the window, down now included, are answered
    from their series (``from_prometheus``: counts, no XID times).
    """
    async with tool_errors():
        return compact(await fleet.xid_summary(since, until, limit=limit))


async def fleet_metric_trend(
    fleet: Fleet,
    metric: TrendMetric,
    since: Since = "24h",
    until: Until = None,
    threshold: Annotated[
        float | None,
        Field(
            description="compare against this value; default the GPU's own limit where "
            "there is one (slowdown temperature, power limit, memory size)"
        ),
    ] = None,
    limit: Annotated[int, Field(ge=1, le=500, description="GPUs in each ranking")] = 20,
) -> Annotated[CallToolResult, FleetMetricTrend]:
    """One GPU metric across the fleet from Prometheus, in one query: the GPUs with the
    steepest rise, the highest values and the least headroom to their threshold, with
    hours to reach it at the current slope. Nodes down now are included (``node_up``).

    Needs the gateway's --prometheus-url; ``metric`` is a Prometheus gauge of the daemons.
    """
    async with tool_errors():
        return compact(
            await fleet.metric_trend(metric, since, until, threshold=threshold, limit=limit)
        )


async def fleet_health(
    fleet: Fleet, since: XidSince = "24h", limit: Limit = 200
) -> Annotated[CallToolResult, FleetHealth]:
    """Every GPU on every node with its status (ok, warning, critical) and 0-100 score,
    worst first, with its worst findings; counts by status. get_gpu_health with a
    ``node`` gives one GPU's every finding.

    Partial when nodes fail: ``nodes_failed`` names each with the reason.
    """
    async with tool_errors():
        return compact(await fleet.health(since, limit=limit))


async def nodes_needing_attention(
    fleet: Fleet,
    since: XidSince = "24h",
) -> Annotated[CallToolResult, NodesNeedingAttention]:
    """Nodes that need a person: GPUs not ok, fatal XIDs in the window (GPU reset,
    node power-cycle, ...), or not answering, each with the reasons in sentences.
    Critical first, then unreachable, then warnings.
    """
    async with tool_errors():
        return compact(await fleet.needing_attention(since))


# The cluster tools, served with the gateway's Fleet (mcp_server.tools.add_tools).
FLEET_TOOLS: tuple[ToolFn, ...] = (
    list_nodes,
    fleet_inventory,
    fleet_xid_summary,
    fleet_metric_trend,
    fleet_health,
    nodes_needing_attention,
)
