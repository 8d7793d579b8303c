"""The gateway tools' results. Every fleet answer names the nodes that did not answer.

Fleet answers keep per-GPU records short (an assistant reads 1600 GPUs as tokens); the
per-node tools return the node's own answer untouched under ``result``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from store.actions import Action, Cause, Tier

__all__ = [
    "ClusterFailureModel",
    "FindingBrief",
    "FleetAnswer",
    "FleetCluster",
    "FleetGpu",
    "FleetGpuHealth",
    "FleetHealth",
    "FleetInventory",
    "FleetMetricTrend",
    "FleetXidCode",
    "FleetXidNode",
    "FleetXidRow",
    "FleetXidSummary",
    "GpuTrend",
    "NodeAttention",
    "NodeFailureModel",
    "NodeGpus",
    "NodeInfo",
    "NodeList",
    "NodeToolResult",
    "NodesNeedingAttention",
    "VerdictBrief",
]


class ClusterFailureModel(BaseModel):
    cluster: str = Field(description="the kubeconfig context's name")
    error: str = Field(description="why its API server could not list the daemon pods")


class FleetCluster(BaseModel):
    cluster: str
    nodes_asked: int
    nodes_answered: int


class NodeFailureModel(BaseModel):
    node: str
    reason: str = Field(
        description="timeout, refused, transport, http_401, http_403, http_421, http_4xx, "
        "http_5xx, protocol, tool_error or breaker_open"
    )
    error: str


class FleetAnswer(BaseModel):
    """What every fleet answer carries: how many nodes answered, and who did not and why."""

    nodes_asked: int
    nodes_answered: int
    nodes_failed: list[NodeFailureModel] = Field(description="every node without an answer")
    transport: Literal["direct", "api-proxy"] | None = Field(
        default=None,
        description="how the nodes were reached: direct (pod IPs) or api-proxy (the "
        "Kubernetes API server's pod proxy)",
    )
    from_prometheus: list[str] | None = Field(
        default=None,
        description="nodes answered from Prometheus's copy of their series, not by the node "
        "itself (no pids, messages or XID times there); the others answered themselves. "
        "In fleet_health and nodes_needing_attention these are nodes that did not answer "
        "(still in nodes_failed), shown as their daemon last exported them. "
        "Null without --prometheus-url",
    )
    prometheus_error: str | None = Field(
        default=None,
        description="why Prometheus could not answer; the answer is the nodes' own, as without it",
    )
    clusters: list[FleetCluster] | None = Field(
        default=None,
        description="per cluster (kubeconfig context), its nodes asked and answered; node "
        "names are then cluster/node. Null with one cluster",
    )
    clusters_failed: list[ClusterFailureModel] | None = Field(
        default=None,
        description="clusters whose API server failed the last pod listing (their nodes as "
        "last listed are still asked). Null with one cluster",
    )


class NodeToolResult(BaseModel):
    """A node tool's answer, as the node gave it (or, for a node that does not answer, as
    far as Prometheus has its series)."""

    node: str
    latency_ms: float
    result: dict[str, Any] = Field(description="the node tool's structured result, untouched")
    source: Literal["node", "prometheus"] = Field(
        default="node",
        description="prometheus: the node did not answer and ``result`` is rebuilt from its "
        "series, with ``result.missing`` saying what they lack",
    )
    node_error: str | None = Field(default=None, description="why the node did not answer")


class NodeInfo(BaseModel):
    name: str
    url: str
    breaker: str = Field(description="closed, half-open or open")
    consecutive_failures: int
    last_error: str | None
    last_latency_ms: float | None
    last_answer: str | None = Field(description="when the node last answered (ISO 8601)")


class NodeList(BaseModel):
    source: str = Field(description="where the list comes from (Kubernetes or --node)")
    discovery_error: str | None = Field(description="the last refresh's error; the list kept")
    clusters_failed: list[ClusterFailureModel] | None = Field(
        default=None, description="clusters whose last listing failed; null with one cluster"
    )

    last_discovery: str | None
    nodes: list[NodeInfo]


class FleetGpu(BaseModel):
    """A node's GpuModel (its list_gpus answer), briefly: 1600 GPUs are read as tokens.

    Each field is GpuModel's own, read from the node's answer by validation
    (tests/mcp_server/test_models.py holds the types alike); the defaults let a node that
    does not send one still be counted.
    """

    index: int
    uuid: str
    name: str
    pci_bus_id: str
    driver_version: str | None = None
    memory_total_bytes: int | None = None
    lost: bool = False


class NodeGpus(BaseModel):
    node: str
    gpus: list[FleetGpu]


class FleetInventory(FleetAnswer):
    gpus_total: int
    by_model: dict[str, int] = Field(description="GPU count per model name")
    nodes: list[NodeGpus]


class FleetXidRow(BaseModel):
    node: str
    pci_bus_id: str | None
    kind: str
    xid: int
    action: str = Field(description="the catalog's label, as stored with the event")
    needs: Action = Field(description="what this XID needs on its own, in the verdict's words")
    tier: Tier = Field(description="what that takes out: node, gpu, escalate, ...")
    count: int
    first_ts: str | None = Field(description="null from Prometheus, which keeps counts only")
    last_ts: str | None


class FleetXidCode(BaseModel):
    kind: str
    xid: int
    action: str
    needs: Action
    tier: Tier
    count: int
    nodes: int
    gpus: int


class FleetXidNode(BaseModel):
    node: str
    total: int
    worst_action: str
    worst_needs: Action
    worst_tier: Tier
    codes: list[int]


class FleetXidSummary(FleetAnswer):
    """XIDs over one window on every node, worst first: by catalog action, then count."""

    since: str
    until: str
    total: int
    nodes_with_xids: int
    by_node: list[FleetXidNode]
    by_code: list[FleetXidCode]
    rows: list[FleetXidRow] = Field(description="per (node, GPU, code), worst first")
    rows_truncated: bool


class FindingBrief(BaseModel):
    severity: str
    code: str
    message: str


class VerdictBrief(BaseModel):
    """A GPU's verdict as its node gave it (get_gpu_health has the steps)."""

    cause: Cause
    action: Action
    confidence: str | None = Field(description="null from Prometheus, which keeps none")
    because: str


class FleetGpuHealth(BaseModel):
    node: str
    pci_bus_id: str
    index: int | None
    name: str | None
    status: str
    score: int | None = Field(description="0-100; null from Prometheus, which keeps none")
    verdict: VerdictBrief | None = Field(
        default=None, description="the node's verdict for this GPU (null from older nodes)"
    )
    findings: list[FindingBrief] = Field(description="the worst few; get_gpu_health has all")


class FleetHealth(FleetAnswer):
    since: str
    gpus_total: int
    by_status: dict[str, int]
    gpus: list[FleetGpuHealth] = Field(description="worst first")
    truncated: bool


class NodeAttention(BaseModel):
    node: str
    status: str = Field(description="critical, unreachable or warning")
    reasons: list[str]
    gpus: list[FleetGpuHealth] = Field(description="its GPUs that are not ok")
    fatal_xids: list[FleetXidRow]


class NodesNeedingAttention(FleetAnswer):
    since: str
    nodes: list[NodeAttention] = Field(description="critical, then unreachable, then warning")
    nodes_ok: int


class GpuTrend(BaseModel):
    """One GPU's reading of one metric over the window, from Prometheus."""

    node: str
    gpu: str = Field(description="the NVML index")
    uuid: str
    pci_bus_id: str
    model: str
    last: float = Field(description="the newest value in the window")
    peak: float = Field(description="the highest value in the window")
    slope_per_hour: float = Field(description="least-squares slope over the window")
    threshold: float | None = Field(
        description="the GPU's own limit (slowdown temperature, power limit, memory size) "
        "or the threshold asked for"
    )
    headroom: float | None = Field(description="threshold minus last")
    hours_to_threshold: float | None = Field(
        description="at the current slope; null when flat, falling or without a threshold"
    )
    node_up: bool = Field(description="whether Prometheus still scrapes the node's daemon")


class FleetMetricTrend(BaseModel):
    """One metric across the fleet: steepest rise, highest values, nearest their limit."""

    metric: str
    since: str
    until: str
    source: str = Field(description="the Prometheus asked")
    series: str = Field(description="the series read: the raw gauge or its recorded 5m means")
    gpus_total: int
    nodes: int
    nodes_down_now: list[str] = Field(description="nodes in the window not scraped now")
    rising: list[GpuTrend] = Field(description="steepest rise first")
    highest: list[GpuTrend] = Field(description="highest peak first")
    nearest_threshold: list[GpuTrend] = Field(description="least headroom first")
