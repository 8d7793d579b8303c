"""MCP tools about the GPUs themselves: inventory and current readings (live or stored)."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_server.annotations import READ_ONLY, compact
from mcp_server.deps import ToolDeps
from mcp_server.models import GpuModel, HealthModel, SampleModel
from mcp_server.params import GpuOrAll
from store.health import node_health
from store.inventory import latest_samples, resolve_gpus
from store.inventory import list_gpus as stored_gpus
from store.processes import PodSpan, ProcessSpan, pods_at, processes_at
from store.windows import format_ts

__all__ = ["register_gpu_tools"]


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


class HealthResult(BaseModel):
    node: str
    since: str
    gpus: list[HealthModel] = Field(description="worst first")


class ProcessesResult(BaseModel):
    at: str | None = Field(description="the time asked for; null means now")
    processes: list[ProcessSpan] = Field(description="with each one's pod when known")
    pods: list[PodSpan] = Field(
        description="Kubernetes pods holding each GPU then, and how that is known "
        "(annotation, whole-node GPU request, process); empty off Kubernetes"
    )


class SnapshotResult(BaseModel):
    node: str
    gpus: list[SnapshotModel]


def register_gpu_tools(server: MCPServer, deps: ToolDeps) -> None:
    @server.tool(annotations=READ_ONLY)
    async def list_gpus() -> Annotated[CallToolResult, GpuListResult]:
        """Every GPU this node has seen: index, UUID, model, PCI id, driver, limits, lost or not.

        Limits (slowdown/shutdown temperature, power limits) are the GPU's own, as NVML
        reports them; ``lost`` means it stopped answering NVML (e.g. fell off the bus).
        """
        async with deps.reader() as conn:
            gpus = await stored_gpus(conn)
        return compact(
            GpuListResult(node=deps.node, gpus=[GpuModel.from_inventory(g) for g in gpus])
        )

    @server.tool(annotations=READ_ONLY)
    async def get_gpu_snapshot(gpu: GpuOrAll = None) -> Annotated[CallToolResult, SnapshotResult]:
        """Current readings for one GPU or all: temperature, power, clocks, utilization, memory,
        ECC, remapped rows, throttle reasons, PCIe replays, NVLink, process count.

        Live NVML readings when the server runs on the node with a driver; otherwise the
        newest stored sample. ``source`` and ``age_s`` say which and how old.
        """
        live = await deps.live() if deps.live is not None else {}
        now = deps.now_ms()
        async with deps.reader() as conn:
            stored = await latest_samples(conn, [gpu] if gpu else [])
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
        return compact(SnapshotResult(node=deps.node, gpus=out))

    @server.tool(annotations=READ_ONLY)
    async def get_gpu_health(
        gpu: GpuOrAll = None,
        since: Annotated[
            str, Field(max_length=40, description="how far back XIDs count (24h, 7d)")
        ] = "24h",
    ) -> Annotated[CallToolResult, HealthResult]:
        """Per GPU a status (ok, warning, critical), a 0-100 score and the reasons, worst first.

        Thresholds come from each GPU's own slowdown/shutdown temperature and power limit.
        XIDs count by their catalog action and NVIDIA's workflows (13/31 repeating on one
        GPU vs spread over several, 45 alone vs after other XIDs, 48 with 63/64, the recovery
        action a 154 names). A fatal state clears on reboot, GPU reset or an operator's
        acknowledgement (xidwatch ack), and the finding says which.
        """
        since_ms = deps.instant(since, name="since")
        async with deps.reader() as conn:
            results = await node_health(conn, since_ms=since_ms, now_ms=deps.now_ms())
            if gpu is not None:
                wanted = {g.info.pci_bus_id for _, g in await resolve_gpus(conn, [gpu])}
                results = [h for h in results if h.pci_bus_id in wanted]
        ranked = sorted(results, key=lambda h: (h.score, h.pci_bus_id))
        return compact(
            HealthResult(
                node=deps.node,
                since=format_ts(since_ms),
                gpus=[HealthModel.from_health(h) for h in ranked],
            )
        )

    @server.tool(annotations=READ_ONLY)
    async def get_gpu_processes(
        gpu: GpuOrAll = None,
        at: Annotated[
            str | None,
            Field(max_length=40, description="a past time (ISO 8601 or 2h back); omit for now"),
        ] = None,
    ) -> Annotated[CallToolResult, ProcessesResult]:
        """Compute processes on a GPU (or every GPU) now or at a past time: pid, name, memory,
        Kubernetes namespace/pod/container, and when each was first and last seen by the
        sampler; plus the pods holding each GPU then ("which pod had GPU 3 at 02:14").
        """
        at_ms = deps.instant(at, name="at") if at else None
        async with deps.reader() as conn:
            selected = await resolve_gpus(conn, [gpu] if gpu else [])
            uuids = [g.info.uuid for _, g in selected]
            spans = [span for u in uuids for span in await processes_at(conn, u, at_ms)]
            pods = [span for u in uuids for span in await pods_at(conn, u, at_ms)]
        at_ts = format_ts(at_ms) if at_ms else None
        return compact(ProcessesResult(at=at_ts, processes=spans, pods=pods))
