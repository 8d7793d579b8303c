"""Fleet answers from node answers: pure functions, so ranking and totals test without HTTP.

Node answers are read through small models that take only the fields used here (extra
fields are ignored), so nodes a version ahead or behind still aggregate; a node whose
answer cannot be read is reported as failed (``protocol``), never dropped silently.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, TypedDict, TypeVar

from pydantic import BaseModel, ValidationError

from mcp_server.gateway.fanout import FanOutResult, NodeAnswer, NodeFailure
from mcp_server.gateway.history import GpuTrendPoint
from mcp_server.gateway.models import (
    FindingBrief,
    FleetGpu,
    FleetGpuHealth,
    FleetHealth,
    FleetInventory,
    FleetMetricTrend,
    FleetXidCode,
    FleetXidNode,
    FleetXidRow,
    FleetXidSummary,
    GpuTrend,
    NodeAttention,
    NodeFailureModel,
    NodeGpus,
    NodesNeedingAttention,
    VerdictBrief,
)
from store.actions import (
    Action,
    Cause,
    action_rank,
    code_action,
    is_fatal_label,
    label_rank,
    label_tier,
)
from store.health import action_status
from store.windows import format_ts

__all__ = [
    "fleet_health",
    "fleet_inventory",
    "fleet_metric_trend",
    "fleet_xid_summary",
    "nodes_needing_attention",
]

M = TypeVar("M", bound=BaseModel)
FINDINGS_PER_GPU = 3
_STATUS_RANK = {"critical": 0, "warning": 1, "ok": 2}


class _GpuList(BaseModel):
    gpus: list[FleetGpu]


class _SummaryRow(BaseModel):
    kind: str
    xid: int
    pci_bus_id: str | None
    action: str
    count: int
    first_ts_ms: int | None = None  # None from Prometheus, which keeps counts only
    last_ts_ms: int | None = None


class _Summary(BaseModel):
    rows: list[_SummaryRow]


class _HealthGpuInfo(BaseModel):
    index: int
    name: str


class _HealthGpu(BaseModel):
    pci_bus_id: str
    gpu: _HealthGpuInfo | None
    status: str
    score: int
    verdict: VerdictBrief | None = None
    findings: list[FindingBrief]


class _Health(BaseModel):
    gpus: list[_HealthGpu]


class _RecordedVerdict(BaseModel):
    action: Action
    cause: Cause


class _RecordedGpu(BaseModel):
    gpu: str
    pci_bus_id: str
    model: str
    verdict: _RecordedVerdict
    lost: bool


class _LastKnown(NamedTuple):
    as_of: str
    gpus: list[FleetGpuHealth]


class _Recorded(BaseModel):
    """A node's get_gpu_health as Prometheus has it (PrometheusHistory.health)."""

    as_of: str
    gpus: list[_RecordedGpu]


def fleet_inventory(fan: FanOutResult) -> FleetInventory:
    parsed, failed = _parse(fan, _GpuList)
    nodes = [NodeGpus(node=node, gpus=answer.gpus) for node, answer in parsed]
    models = Counter(g.name for n in nodes for g in n.gpus)
    return FleetInventory(
        **_meta(fan, failed),
        gpus_total=sum(models.values()),
        by_model=dict(models.most_common()),
        nodes=nodes,
    )


def fleet_xid_summary(
    fan: FanOutResult, *, since_ms: int, until_ms: int, limit: int = 500
) -> FleetXidSummary:
    parsed, failed = _parse(fan, _Summary)
    rows = sorted((_xid_row(node, r) for node, answer in parsed for r in answer.rows), key=_worst)
    return FleetXidSummary(
        **_meta(fan, failed),
        since=format_ts(since_ms),
        until=format_ts(until_ms),
        total=sum(r.count for r in rows),
        nodes_with_xids=len({r.node for r in rows}),
        by_node=_by_node(rows),
        by_code=_by_code(rows),
        rows=rows[:limit],
        rows_truncated=len(rows) > limit,
    )


def fleet_health(
    fan: FanOutResult,
    *,
    since_ms: int,
    limit: int = 500,
    recorded: Sequence[NodeAnswer] = (),
) -> FleetHealth:
    """Every GPU worst first; ``recorded``: Prometheus's answers for nodes that gave none."""
    parsed, failed = _parse(fan, _Health)
    gpus = _ranked(_by(parsed, _recorded(recorded)))
    return FleetHealth(
        **_meta(fan, failed),
        since=format_ts(since_ms),
        gpus_total=len(gpus),
        by_status=dict(Counter(g.status for g in gpus)),
        gpus=gpus[:limit],
        truncated=len(gpus) > limit,
    )


def nodes_needing_attention(
    health: FanOutResult,
    xids: FanOutResult,
    *,
    since_ms: int,
    recorded: Sequence[NodeAnswer] = (),
) -> NodesNeedingAttention:
    """Nodes with GPUs not ok, fatal XIDs in the window, or no answer, each with why.

    ``recorded``: Prometheus's health answers for nodes that gave none (their XIDs, from
    Prometheus too, are in ``xids``); such a node stays failed, with its last known state.
    """
    health_parsed, health_unreadable = _parse(health, _Health)
    xid_parsed, xid_unreadable = _parse(xids, _Summary)
    failed: dict[str, NodeFailure] = {}
    for f in (*health.failures, *health_unreadable, *xids.failures, *xid_unreadable):
        failed.setdefault(f.node, f)
    last_known = _recorded(recorded)
    sick = {
        node: [g for g in gpus if g.status != "ok"] for node, gpus in _by(health_parsed, last_known)
    }
    fatal = {
        node: sorted(
            (_xid_row(node, r) for r in answer.rows if is_fatal_label(r.action)), key=_worst
        )
        for node, answer in xid_parsed
    }
    asked = sorted({*_names(health), *_names(xids)})
    entries = [
        entry
        for node in asked
        if (
            entry := _attention(
                node, sick.get(node, []), fatal.get(node, []), failed.get(node), last_known
            )
        )
    ]
    entries.sort(key=lambda e: (_ATTENTION_RANK[e.status], -len(e.reasons), e.node))
    return NodesNeedingAttention(
        nodes_asked=len(asked),
        nodes_answered=len(asked) - len(failed),
        nodes_failed=[_failure(f) for f in sorted(failed.values(), key=lambda f: f.node)],
        since=format_ts(since_ms),
        nodes=entries,
        nodes_ok=len(asked) - len(entries),
    )


def fleet_metric_trend(
    points: Sequence[GpuTrendPoint],
    *,
    metric: str,
    series: str,
    source: str,
    up: set[str],
    since_ms: int,
    until_ms: int,
    limit: int,
) -> FleetMetricTrend:
    """Rank one metric's GPUs three ways: steepest rise, highest peak, least headroom."""
    gpus = [_gpu_trend(p, up) for p in points]
    near = [g for g in gpus if g.headroom is not None]
    nodes = {g.node for g in gpus}
    return FleetMetricTrend(
        metric=metric,
        since=format_ts(since_ms),
        until=format_ts(until_ms),
        source=source,
        series=series,
        gpus_total=len(gpus),
        nodes=len(nodes),
        nodes_down_now=sorted(nodes - up),
        rising=sorted(gpus, key=lambda g: (-g.slope_per_hour, g.node, g.gpu))[:limit],
        highest=sorted(gpus, key=lambda g: (-g.peak, g.node, g.gpu))[:limit],
        nearest_threshold=sorted(near, key=lambda g: (g.headroom, g.node, g.gpu))[:limit],
    )


def _gpu_trend(p: GpuTrendPoint, up: set[str]) -> GpuTrend:
    headroom = None if p.threshold is None else p.threshold - p.last
    rising = headroom is not None and headroom > 0 and p.slope_per_hour > 0
    return GpuTrend(
        node=p.node,
        gpu=p.labels.get("gpu", ""),
        uuid=p.labels.get("uuid", ""),
        pci_bus_id=p.labels.get("pci_bus_id", ""),
        model=p.labels.get("model", ""),
        last=p.last,
        peak=p.peak,
        slope_per_hour=round(p.slope_per_hour, 6),
        threshold=p.threshold,
        headroom=headroom,
        hours_to_threshold=round(headroom / p.slope_per_hour, 2)
        if rising and headroom is not None
        else None,
        node_up=p.node in up,
    )


_ATTENTION_RANK = {"critical": 0, "unreachable": 1, "warning": 2}
_LAST_KNOWN = (
    "last known state from Prometheus (its daemon's last scrape, {as_of}): no scores, "
    "findings, XID times, pids or messages there"
)


def _names(fan: FanOutResult) -> list[str]:
    return [a.node for a in fan.answers] + [f.node for f in fan.failures]


def _attention(
    node: str,
    sick: list[FleetGpuHealth],
    fatal: list[FleetXidRow],
    failure: NodeFailure | None,
    last_known: Mapping[str, _LastKnown],
) -> NodeAttention | None:
    reasons = [f"not answering: {failure.reason}: {failure.error}"] if failure else []
    if node in last_known:
        reasons.append(_LAST_KNOWN.format(as_of=last_known[node].as_of))
    reasons += [f"GPU {_gpu_name(g)} {_why(g)}" for g in sick]
    reasons += [
        f"XID {x.xid} ({x.needs}) x{x.count} on {x.pci_bus_id or 'unknown GPU'}"
        + (f", last {x.last_ts}" if x.last_ts else "")
        for x in fatal
    ]
    if not reasons:
        return None
    if any(g.status == "critical" for g in sick) or fatal:
        status = "critical"
    elif failure is not None:
        status = "unreachable"
    else:
        status = "warning"
    return NodeAttention(node=node, status=status, reasons=reasons, gpus=sick, fatal_xids=fatal)


def _gpu_name(g: FleetGpuHealth) -> str:
    return g.pci_bus_id if g.index is None else str(g.index)


def _why(g: FleetGpuHealth) -> str:
    """``needs reboot_node (thermal): because``; a node too old for verdicts: its finding."""
    if g.verdict is not None:
        return f"needs {g.verdict.action} ({g.verdict.cause}): {g.verdict.because}"
    return f"{g.status}: {g.findings[0].message if g.findings else 'no finding given'}"


def _action_rank(g: FleetGpuHealth) -> int:
    return -action_rank(g.verdict.action) if g.verdict is not None else 0


def _by(
    parsed: Sequence[tuple[str, _Health]], last_known: Mapping[str, _LastKnown] | None = None
) -> Iterable[tuple[str, list[FleetGpuHealth]]]:
    """Each node's GPUs: from its own answer, or as Prometheus last knew them."""
    for node, answer in parsed:
        yield node, [_gpu_health(node, g) for g in answer.gpus]
    for node, known in (last_known or {}).items():
        yield node, known.gpus


def _ranked(by_node: Iterable[tuple[str, list[FleetGpuHealth]]]) -> list[FleetGpuHealth]:
    """Worst action first, then lowest score (none known, from Prometheus, after)."""
    gpus = [g for _, gs in by_node for g in gs]
    return sorted(
        gpus,
        key=lambda g: (
            _action_rank(g),
            g.score is None,
            g.score or 0,
            _STATUS_RANK.get(g.status, 0),
            g.node,
            g.pci_bus_id,
        ),
    )


def _recorded(recorded: Sequence[NodeAnswer]) -> dict[str, _LastKnown]:
    """Per node Prometheus answered for: when it was last scraped, and its GPUs as then.

    An answer that cannot be read adds nothing: the node is already failed, with its error.
    """
    parsed, _ = _parse(FanOutResult(tuple(recorded), ()), _Recorded)
    return {
        node: _LastKnown(answer.as_of, [_recorded_gpu(node, answer.as_of, g) for g in answer.gpus])
        for node, answer in parsed
    }


def _recorded_gpu(node: str, as_of: str, g: _RecordedGpu) -> FleetGpuHealth:
    """A GPU with the verdict its node's daemon exported, its status judged as the node's."""
    lost = "the GPU was lost (NVML GpuIsLost); " if g.lost else ""
    v = g.verdict
    return FleetGpuHealth(
        node=node,
        pci_bus_id=g.pci_bus_id,
        index=int(g.gpu) if g.gpu.isdigit() else None,
        name=g.model or None,
        status=action_status(v.action),
        score=None,
        verdict=VerdictBrief(
            cause=v.cause,
            action=v.action,
            confidence=None,
            because=f"{lost}the node's own verdict, as Prometheus last scraped it at {as_of}",
        ),
        findings=[],
    )


def _gpu_health(node: str, g: _HealthGpu) -> FleetGpuHealth:
    return FleetGpuHealth(
        node=node,
        pci_bus_id=g.pci_bus_id,
        index=g.gpu.index if g.gpu else None,
        name=g.gpu.name if g.gpu else None,
        status=g.status,
        score=g.score,
        verdict=g.verdict,
        findings=g.findings[:FINDINGS_PER_GPU],
    )


def _worst(r: FleetXidRow) -> tuple[int, int, str, str, int]:
    return (label_rank(r.action, r.xid), -r.count, r.node, r.pci_bus_id or "", r.xid)


def _xid_row(node: str, r: _SummaryRow) -> FleetXidRow:
    return FleetXidRow(
        node=node,
        pci_bus_id=r.pci_bus_id,
        kind=r.kind,
        xid=r.xid,
        action=r.action,
        needs=code_action(r.xid, r.action),
        tier=label_tier(r.action, r.xid),
        count=r.count,
        first_ts=None if r.first_ts_ms is None else format_ts(r.first_ts_ms),
        last_ts=None if r.last_ts_ms is None else format_ts(r.last_ts_ms),
    )


def _by_node(rows: Sequence[FleetXidRow]) -> list[FleetXidNode]:
    grouped: dict[str, list[FleetXidRow]] = defaultdict(list)
    for r in rows:  # already worst first, so each node's first row is its worst
        grouped[r.node].append(r)
    out = [
        FleetXidNode(
            node=node,
            total=sum(r.count for r in rs),
            worst_action=rs[0].action,
            worst_needs=rs[0].needs,
            worst_tier=rs[0].tier,
            codes=sorted({r.xid for r in rs}),
        )
        for node, rs in grouped.items()
    ]
    rank = {node: label_rank(rs[0].action, rs[0].xid) for node, rs in grouped.items()}
    return sorted(out, key=lambda n: (rank[n.node], -n.total, n.node))


def _by_code(rows: Sequence[FleetXidRow]) -> list[FleetXidCode]:
    grouped: dict[tuple[str, int, str], list[FleetXidRow]] = defaultdict(list)
    for r in rows:
        grouped[(r.kind, r.xid, r.action)].append(r)
    out = [
        FleetXidCode(
            kind=kind,
            xid=xid,
            action=action,
            needs=code_action(xid, action),
            tier=label_tier(action, xid),
            count=sum(r.count for r in rs),
            nodes=len({r.node for r in rs}),
            gpus=len({(r.node, r.pci_bus_id) for r in rs}),
        )
        for (kind, xid, action), rs in grouped.items()
    ]
    return sorted(out, key=lambda c: (label_rank(c.action, c.xid), -c.count, c.xid))


def _parse(fan: FanOutResult, model: type[M]) -> tuple[list[tuple[str, M]], list[NodeFailure]]:
    parsed: list[tuple[str, M]] = []
    failed: list[NodeFailure] = []
    for answer in fan.answers:
        try:
            parsed.append((answer.node, model.model_validate(answer.result)))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            failed.append(
                NodeFailure(answer.node, "protocol", f"unreadable answer ({where}: {first['msg']})")
            )
    return parsed, failed


class _Meta(TypedDict):
    nodes_asked: int
    nodes_answered: int
    nodes_failed: list[NodeFailureModel]


def _meta(fan: FanOutResult, unreadable: Sequence[NodeFailure]) -> _Meta:
    failures = sorted((*fan.failures, *unreadable), key=lambda f: f.node)
    asked = len(fan.answers) + len(fan.failures)
    return _Meta(
        nodes_asked=asked,
        nodes_answered=asked - len(failures),
        nodes_failed=[_failure(f) for f in failures],
    )


def _failure(f: NodeFailure) -> NodeFailureModel:
    return NodeFailureModel(node=f.node, reason=f.reason, error=f.error)
