"""MCP tools about the GPUs themselves: inventory and current readings (live or stored)."""

from __future__ import annotations

from typing import Literal

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from mcp_server.annotations import READ_ONLY
from mcp_server.deps import ToolDeps
from mcp_server.models import GpuModel, SampleModel
from mcp_server.params import GpuOrAll
from store.inventory import latest_samples
from store.inventory import list_gpus as stored_gpus

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


class SnapshotResult(BaseModel):
    node: str
    gpus: list[SnapshotModel]


def register_gpu_tools(server: MCPServer, deps: ToolDeps) -> None:
    @server.tool(annotations=READ_ONLY)
    async def list_gpus() -> GpuListResult:
        """Every GPU this node has seen: index, UUID, model, PCI id, driver, limits, lost or not.

        Limits (slowdown/shutdown temperature, power limits) are the GPU's own, as NVML
        reports them; ``lost`` means it stopped answering NVML (e.g. fell off the bus).
        """
        async with deps.reader() as conn:
            gpus = await stored_gpus(conn)
        return GpuListResult(node=deps.node, gpus=[GpuModel.from_inventory(g) for g in gpus])

    @server.tool(annotations=READ_ONLY)
    async def get_gpu_snapshot(gpu: GpuOrAll = None) -> SnapshotResult:
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
        return SnapshotResult(node=deps.node, gpus=out)
