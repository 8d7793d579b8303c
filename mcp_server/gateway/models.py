"""The gateway tools' results. Every fleet answer names the nodes that did not answer.

Fleet answers keep per-GPU records short (an assistant reads 1600 GPUs as tokens); the
per-node tools return the node's own answer untouched under ``result``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from store.actions import Action, Cause, Tier

__all__ = [
    "FindingBrief",
    "FleetAnswer",
    "FleetGpu",
    "FleetGpuHealth",
    "FleetHealth",
    "FleetInventory",
    "FleetXidCode",
    "FleetXidNode",
    "FleetXidRow",
    "FleetXidSummary",
    "NodeAttention",
    "NodeFailureModel",
    "NodeGpus",
    "NodeInfo",
    "NodeList",
    "NodeToolResult",
    "NodesNeedingAttention",
    "VerdictBrief",
]


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


class NodeToolResult(BaseModel):
    """A node tool's answer, as the node gave it."""

    node: str
    latency_ms: float
    result: dict[str, Any] = Field(description="the node tool's structured result, untouched")


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
    last_discovery: str | None
    nodes: list[NodeInfo]


class FleetGpu(BaseModel):
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
    first_ts: str
    last_ts: str


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
    confidence: str
    because: str


class FleetGpuHealth(BaseModel):
    node: str
    pci_bus_id: str
    index: int | None
    name: str | None
    status: str
    score: int
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
