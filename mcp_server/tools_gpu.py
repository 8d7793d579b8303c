"""MCP tools about the GPUs themselves: inventory and current readings (live or stored)."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_server.deps import ToolDeps
from mcp_server.models import GpuModel, HealthResult, SampleModel
from mcp_server.params import GpuOrAll
from mcp_server.results import compact
from store.health import health_report
from store.inventory import latest_samples, select_gpus
from store.inventory import list_gpus as stored_gpus
from store.processes import PodSpan, ProcessSpan, pods_at, processes_at
from store.windows import format_ts

__all__ = [
    "GpuListResult",
    "ProcessesResult",
    "SnapshotResult",
    "get_gpu_health",
    "get_gpu_processes",
    "get_gpu_snapshot",
    "list_gpus",
]


class GpuListResult(BaseModel):
    node: str
    gpus: list[GpuModel]


class SnapshotModel(BaseModel):
    gpu: GpuModel
    source: Literal["live", "stored", "none"] = Field(
        description="live: read from NVML just now or on the last tick; stored: the newest "
        "sample in the store (the daemon may be down); none: never sampled"
    )
    age_s: float | None = Field(description="seconds since the reading was taken")
    sample: SampleModel | None


class ProcessesResult(BaseModel):
    at: str | None = Field(description="the time asked for; null means now")
    processes: list[ProcessSpan] = Field(description="with each one's pod when known")
    pods: list[PodSpan] = Field(
        description="Kubernetes pods holding each GPU then, and how that is known "
        "(annotation, whole-node GPU request, process); empty off Kubernetes"
    )
    notes: list[str] = Field(
        default_factory=list,
        description="GPUs lost by then (their processes ended when they were lost) and GPUs "
        "seen only in XID lines (no process is recorded for them)",
    )


class SnapshotResult(BaseModel):
    node: str
    gpus: list[SnapshotModel]


async def list_gpus(deps: ToolDeps) -> Annotated[CallToolResult, GpuListResult]:
    """Every GPU this node has seen: index, UUID, model, PCI id, driver, limits, lost or not.

    Limits (slowdown/shutdown temperature, power limits) are the GPU's own, as NVML
    reports them; ``lost`` means it stopped answering NVML (e.g. fell off the bus).
    """
    async with deps.reader() as conn:
        gpus = await stored_gpus(conn)
        node = await deps.node_name(conn)
    return compact(GpuListResult(node=node, gpus=[GpuModel.from_inventory(g) for g in gpus]))


async def get_gpu_snapshot(
    deps: ToolDeps, gpu: GpuOrAll = None
) -> Annotated[CallToolResult, SnapshotResult]:
    """Current readings for one GPU or all: temperature, power, clocks, utilization, memory,
    ECC, remapped rows, throttle reasons, PCIe replays, NVLink, process count.

    Live NVML readings when the server runs on the node with a driver; otherwise the
    newest stored sample. ``source`` and ``age_s`` say which and how old.
    """
    live = await deps.live() if deps.live is not None else {}
    now = deps.now_ms()
    async with deps.reader() as conn:
        stored = await latest_samples(conn, [gpu] if gpu else [])
        node = await deps.node_name(conn)
    out = []
    for item in stored:
        sample = live.get(item.gpu.info.uuid)
        source: Literal["live", "stored", "none"] = "live"
        if sample is None:
            sample, source = item.sample, "stored" if item.sample else "none"
        out.append(
            SnapshotModel(
                gpu=GpuModel.from_inventory(item.gpu),
                source=source,
                age_s=None if sample is None else round((now - sample.ts_ms) / 1000, 3),
                sample=SampleModel.from_sample(sample) if sample else None,
            )
        )
    return compact(SnapshotResult(node=node, gpus=out))


async def get_gpu_health(
    deps: ToolDeps,
    gpu: GpuOrAll = None,
    since: Annotated[
        str, Field(max_length=40, description="how far back XIDs count (24h, 7d)")
    ] = "24h",
) -> Annotated[CallToolResult, HealthResult]:
    """Per GPU one verdict: the likely cause, the ONE action it needs (none, watch,
    restart_application, run_diagnostics, reset_gpu, reboot_node, replace_gpu), why with
    the numbers, and the steps; plus the node's verdict (the most disruptive action any
    GPU needs). Findings under each verdict are the evidence.

    Thresholds are each GPU's own slowdown/shutdown temperature and power limit. XIDs
    are judged as correlate_xid judges them (NVIDIA's workflows: which workloads failed
    where for 13/31/43, 48 with 63/64, what came before a 79, a 154's recovery action).
    A fatal state stays until a reboot, GPU reset or acknowledgement (xidwatch ack)
    clears it, whatever ``since`` says; the verdict says which cleared it. ``coverage``
    says what time the store covers.
    """
    since_ms = deps.instant(since, name="since")
    async with deps.reader() as conn:
        report = await health_report(
            conn,
            since_ms=since_ms,
            now_ms=deps.now_ms(),
            node=await deps.node_name(conn),
            selectors=[gpu] if gpu else [],
            retention=deps.retention,
        )
    return compact(HealthResult.from_report(report))


async def get_gpu_processes(
    deps: ToolDeps,
    gpu: GpuOrAll = None,
    at: Annotated[
        str | None,
        Field(max_length=40, description="a past time (ISO 8601 or 2h back); omit for now"),
    ] = None,
) -> Annotated[CallToolResult, ProcessesResult]:
    """Compute processes on a GPU (or every GPU) now or at a past time: pid, name, memory,
    Kubernetes namespace/pod/container, and when each was first and last seen by the
    sampler; plus the pods holding each GPU then ("which pod had GPU 3 at 02:14").
    A GPU lost by then (fell off the bus) runs nothing: its processes show
    ``running: false`` and ``ended_ts_ms``, the moment it was lost.
    """
    at_ms = deps.instant(at, name="at") if at else None
    async with deps.reader() as conn:
        selected = await select_gpus(conn, [gpu] if gpu else [])
        uuids = selected.uuids
        spans = [span for u in uuids for span in await processes_at(conn, u, at_ms)]
        pods = [span for u in uuids for span in await pods_at(conn, u, at_ms)]
    notes = [
        f"GPU {g.info.index} ({g.info.pci_bus_id}) was lost at {format_ts(lost)}: "
        "its processes ended then"
        for _, g in selected.gpus
        if (lost := g.lost_since_ms) is not None and (at_ms is None or at_ms >= lost)
    ]
    notes += [
        f"GPU {pci} is known only from XID lines (NVML never listed it): "
        "no processes are recorded for it"
        for pci in (selected.xid_only if gpu else ())
    ]
    at_ts = format_ts(at_ms) if at_ms is not None else None
    return compact(ProcessesResult(at=at_ts, processes=spans, pods=pods, notes=notes))
