"""MCP tools over XID events: list with filters and cursors, summaries, the catalog, correlation."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_server.deps import ToolDeps
from mcp_server.models import GpuModel, XidEventModel, XidExplanation, record_values
from mcp_server.params import Gpus, Since, Until
from mcp_server.results import compact
from store.actions import Action, Cause
from store.causes import MetricAround, MetricStats
from store.correlation import NearbyXid
from store.correlation import correlate_xid as correlate
from store.inventory import select_gpus
from store.processes import PodSpan, ProcessSpan
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import GpuStateEvent, XidSummaryRow
from store.windows import check_window, format_ts
from store.xid_summary import (
    ActionTotal,
    CodeTotal,
    GpuTotal,
    PairChange,
    XidWindowSummary,
    summarize_with_changes,
)
from watcher.kernel.catalog import XidCatalog

__all__ = [
    "CorrelationResult",
    "XidPageResult",
    "XidSummaryResult",
    "correlate_xid",
    "explain_xid",
    "list_xid_events",
    "summarize_xid_events",
]


class NearbyXidModel(BaseModel):
    """Another XID in the window, in one compact row (list_xid_events has the full event)."""

    id: int
    offset_s: float = Field(description="seconds from the correlated XID (negative: before)")
    kind: str
    xid: int
    count: int
    pci_bus_id: str | None
    same_gpu: bool
    pid: int | None = None
    process: str | None = None
    pod: str | None = Field(default=None, description="namespace/pod when known")

    @classmethod
    def from_nearby(cls, n: NearbyXid) -> NearbyXidModel:
        e = n.event
        return cls(
            id=e.id,
            offset_s=round(n.offset_s, 1),
            kind=e.kind,
            xid=e.xid,
            count=e.count,
            pci_bus_id=e.pci_bus_id,
            same_gpu=n.same_gpu,
            pid=e.pid,
            process=e.process,
            pod=f"{e.pod.namespace}/{e.pod.pod}" if e.pod else None,
        )


class MetricSideModel(BaseModel):
    """A metric on one side of the XID: extremes, first and last bucket, and the slope when it
    means something (5 buckets over 10 minutes or more). The side's window is in ``windows``."""

    points: int = Field(description="buckets with data")
    samples: int
    min: float | None
    avg: float | None
    max: float | None
    first: float | None
    last: float | None
    slope_per_hour: float | None

    @classmethod
    def from_stats(cls, m: MetricStats | None) -> MetricSideModel | None:
        # The side's window (since/until, tier, step) is given once, in ``windows``.
        return None if m is None else cls.model_validate(m, from_attributes=True)


class MetricAroundModel(BaseModel):
    metric: str
    unit: str
    before: MetricSideModel | None
    after: MetricSideModel | None

    @classmethod
    def from_around(cls, m: MetricAround) -> MetricAroundModel:
        before, after = MetricSideModel.from_stats(m.before), MetricSideModel.from_stats(m.after)
        return cls(metric=m.metric, unit=m.unit, before=before, after=after)


class SideWindowModel(BaseModel):
    """The samples one side covers (narrowed to those there), the tier and bucket width."""

    since: str
    until: str
    tier: str
    step_ms: int

    @classmethod
    def of(cls, metrics: tuple[MetricAround, ...], side: str) -> SideWindowModel | None:
        stats = [getattr(m, side) for m in metrics if getattr(m, side) is not None]
        if not stats:
            return None
        s0: MetricStats = stats[0]
        return cls(
            since=format_ts(s0.since_ms),
            until=format_ts(s0.until_ms),
            tier=s0.tier,
            step_ms=s0.step_ms,
        )


class CorrelationResult(BaseModel):
    """An XID in context: what its GPU was doing before and after, what else happened."""

    event: XidEventModel
    gpu: GpuModel | None
    since: str
    until: str
    likely_cause: Cause = Field(
        description="thermal, gpu_memory, gpu_hardware, application, bus_or_link, power, "
        "follows_other_xid, unknown or none; the same judgement get_gpu_health's verdict uses"
    )
    action: Action = Field(
        description="what this XID needs on its own: none, watch, restart_application, "
        "run_diagnostics, reset_gpu, reboot_node or replace_gpu (get_gpu_health weighs it "
        "with everything else on the GPU)"
    )
    confidence: str
    evidence: list[str] = Field(description="sentences with the numbers behind the cause")
    windows: dict[str, SideWindowModel | None] = Field(
        description="before and after: the time each side of the metrics covers"
    )
    metrics: list[MetricAroundModel] = Field(description="per metric: stats before and after")
    nearby_xids: list[NearbyXidModel]
    nearby_truncated: bool
    processes: list[ProcessSpan] = Field(description="processes on that GPU at the time")
    pods: list[PodSpan] = Field(
        description="Kubernetes pods holding that GPU at the time (annotation, whole-node "
        "GPU request or one of their processes); empty off Kubernetes"
    )
    gpu_events: list[GpuStateEvent]


class XidSummaryResult(BaseModel):
    """Exact counts over the window, and the change from the window of equal length before."""

    since: str
    until: str
    previous_since: str
    total: int
    previous_total: int
    rows: list[XidSummaryRow] = Field(description="per (kind, code, GPU, action), most first")
    by_code: list[CodeTotal]
    by_gpu: list[GpuTotal]
    by_action: list[ActionTotal]
    new_codes: list[CodeTotal] = Field(description="codes not seen in the previous window")
    new_gpus: list[GpuTotal] = Field(description="GPUs with XIDs now and none before")
    new_pairs: list[PairChange]
    grown: list[PairChange] = Field(description="(code, GPU) pairs whose count went up")

    @classmethod
    def from_summary(cls, w: XidWindowSummary) -> XidSummaryResult:
        # The window's bounds are milliseconds in the record, ISO text in the answer.
        return cls(
            **record_values(w, "since_ms", "until_ms", "previous_since_ms"),
            since=format_ts(w.since_ms),
            until=format_ts(w.until_ms),
            previous_since=format_ts(w.previous_since_ms),
        )


class XidPageResult(BaseModel):
    """Events newest first; pass ``next_cursor`` back to get the next page (null: last page)."""

    events: list[XidEventModel]
    next_cursor: str | None
    total_in_page: int


async def list_xid_events(
    deps: ToolDeps,
    since: Since = "24h",
    until: Until = None,
    gpus: Gpus = [],  # noqa: B006 -- pydantic copies defaults; a tuple breaks the schema
    codes: Annotated[
        list[Annotated[int, Field(ge=0, le=100_000)]],
        Field(max_length=32, description="XID codes; empty for all"),
    ] = [],  # noqa: B006
    actions: Annotated[
        list[Annotated[str, Field(max_length=40)]],
        Field(max_length=16, description="catalog actions, e.g. RESET_GPU, RESTART_BM"),
    ] = [],  # noqa: B006
    kind: Literal["xid", "sxid"] | None = None,
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Field(max_length=200)] = None,
) -> Annotated[CallToolResult, XidPageResult]:
    """XID and NVSwitch SXid events stored on this node, newest first, with filters.

    A flood of identical XIDs is stored as a burst row whose ``count`` is exact. Each
    event carries the catalog's immediate action; use explain_xid for the full entry and
    correlate_xid (with the event ``id``) for what the GPU was doing around it. A GPU
    is named by index, UUID (or unique prefix) or PCI bus id, including a GPU seen only
    in kernel lines.
    """
    since_ms = deps.instant(since, name="since")
    until_ms = deps.instant(until, name="until") if until else None
    async with deps.reader() as conn:
        check_window(since_ms, until_ms)
        pcis = (await select_gpus(conn, gpus)).pci_bus_ids if gpus else ()
        filters = XidFilter(
            since_ms=since_ms,
            until_ms=until_ms,
            pci_bus_ids=pcis,
            codes=codes,
            actions=[a.upper() for a in actions],
            kind=kind,
        )
        page = await list_xids(conn, filters, limit=limit, cursor=cursor)
    events = [XidEventModel.from_stored(e, deps.catalog) for e in page.events]
    return compact(
        XidPageResult(events=events, next_cursor=page.next_cursor, total_in_page=len(events))
    )


async def summarize_xid_events(
    deps: ToolDeps,
    since: Since = "24h",
    until: Until = None,
    gpus: Gpus = [],  # noqa: B006
) -> Annotated[CallToolResult, XidSummaryResult]:
    """Counts of XIDs over a window by code, GPU and catalog action, with first/last seen,
    and what is new compared with the window of the same length just before it (new
    codes, new GPUs, new (code, GPU) pairs, counts that grew). Bursts count exactly.
    """
    since_ms = deps.instant(since, name="since")
    until_ms = deps.instant(until, name="until") if until else deps.now_ms()
    async with deps.reader() as conn:
        check_window(since_ms, until_ms)
        pcis = (await select_gpus(conn, gpus)).pci_bus_ids if gpus else ()
        summary = await summarize_with_changes(
            conn, since_ms=since_ms, until_ms=until_ms, pci_bus_ids=pcis
        )
    return compact(XidSummaryResult.from_summary(summary))


async def correlate_xid(
    deps: ToolDeps,
    event_id: Annotated[int, Field(ge=1, le=2**63 - 1, description="the id from list_xid_events")],
    before: Annotated[
        str, Field(max_length=10, description="how far back to look (e.g. 15m, 2h)")
    ] = "15m",
    after: Annotated[str, Field(max_length=10, description="how far after (e.g. 5m)")] = "5m",
) -> Annotated[CallToolResult, CorrelationResult]:
    """One stored XID in context: the GPU's temperature, power, clocks, utilization,
    memory, throttling, PCIe replays and ECC before and after it, the other XIDs around
    it (on this GPU and others), the processes and Kubernetes pods on that GPU then, and a
    likely cause with the action this XID needs and the evidence. The cause is the
    same judgement get_gpu_health's verdict uses (NVIDIA's workflows: which workloads
    failed where for 13/31/43, 45 and 154 following others, 48 with 63/64, heat, power
    or PCIe/NVLink errors before a 79), from a fixed context whatever window you ask for.
    """
    before_ms = deps.duration(before, name="before", most="24h")
    after_ms = deps.duration(after, name="after", most="24h")
    async with deps.reader() as conn:
        c = await correlate(
            conn,
            event_id,
            before_ms=before_ms,
            after_ms=after_ms,
            now_ms=deps.now_ms(),
            retention=deps.retention,
        )
    catalog = deps.catalog
    return compact(
        CorrelationResult(
            event=XidEventModel.from_stored(c.event, catalog),
            gpu=GpuModel.from_inventory(c.gpu) if c.gpu else None,
            since=format_ts(c.since_ms),
            until=format_ts(c.until_ms),
            likely_cause=c.judgement.cause,
            action=c.judgement.action,
            confidence=c.judgement.confidence,
            evidence=list(c.judgement.evidence),
            windows={side: SideWindowModel.of(c.metrics, side) for side in ("before", "after")},
            metrics=[MetricAroundModel.from_around(m) for m in c.metrics],
            nearby_xids=[NearbyXidModel.from_nearby(n) for n in c.nearby_xids],
            nearby_truncated=c.nearby_truncated,
            processes=list(c.processes),
            pods=list(c.pods),
            gpu_events=list(c.gpu_events),
        )
    )


async def explain_xid(
    catalog: XidCatalog,
    code: Annotated[int, Field(ge=0, le=100_000, description="the XID or SXid number")],
    kind: Literal["xid", "sxid"] = "xid",
) -> Annotated[CallToolResult, XidExplanation]:
    """What an XID means: description, likely causes, immediate and investigatory action.

    From NVIDIA's XID catalog (codes 1..162); unknown codes get an explicit
    ``known: false`` entry rather than an error.
    """
    return compact(XidExplanation.from_info(catalog.lookup(code, kind), catalog))
