"""Tool parameter types shared by the tools: typed, bounded, and described for the assistant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from store.metrics import METRICS
from store.pci import normalize_pci

__all__ = ["Gpu", "GpuOrAll", "MetricName", "PciIds", "Since", "Until", "pci_ids"]

Gpu = Annotated[
    str, Field(max_length=100, description="GPU index (0), UUID or unique prefix, or PCI bus id")
]
GpuOrAll = Annotated[
    str | None,
    Field(max_length=100, description="GPU index, UUID or PCI bus id; omit for every GPU"),
]
Since = Annotated[
    str,
    Field(max_length=40, description="window start: duration back from now (24h, 7d) or ISO 8601"),
]
Until = Annotated[
    str | None, Field(max_length=40, description="window end (duration or ISO 8601); default now")
]

PciIds = Annotated[
    list[Annotated[str, Field(max_length=40)]],
    Field(max_length=16, description="PCI bus ids, any spelling; empty for all GPUs"),
]


def pci_ids(values: list[str]) -> list[str]:
    """``values`` in NVML's spelling, or a ToolError naming the one that is not a PCI id."""
    try:
        return [normalize_pci(v) for v in values]
    except ValueError as e:
        raise ToolError(f"gpus: {e}; use a PCI bus id like 0000:3b:00.0") from e


if TYPE_CHECKING:
    MetricName = str
else:  # an enum in the JSON schema, so the assistant sees every valid name
    MetricName = Literal[tuple(m.name for m in METRICS)]
