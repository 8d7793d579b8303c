"""Tool parameter types shared by the tools: typed, bounded, and described for the assistant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from store.telemetry import METRICS

__all__ = ["Gpu", "GpuOrAll", "Gpus", "MetricName", "Since", "Until"]

# Every GPU parameter is resolved by store.inventory.select_gpus / resolve_gpus.
_NAMING = "GPU index (0), UUID or unique prefix, or PCI bus id (any spelling, e.g. 3b:00.0)"

Gpu = Annotated[str, Field(max_length=100, description=_NAMING)]
GpuOrAll = Annotated[
    str | None, Field(max_length=100, description=f"{_NAMING}; omit for every GPU")
]
Gpus = Annotated[
    list[Annotated[str, Field(max_length=100)]],
    Field(max_length=16, description=f"GPUs, each a {_NAMING}; empty for all GPUs"),
]
Since = Annotated[
    str,
    Field(max_length=40, description="window start: duration back from now (24h, 7d) or ISO 8601"),
]
Until = Annotated[
    str | None, Field(max_length=40, description="window end (duration or ISO 8601); default now")
]

if TYPE_CHECKING:
    MetricName = str
else:  # an enum in the JSON schema, so the assistant sees every valid name
    MetricName = Literal[tuple(m.name for m in METRICS)]
