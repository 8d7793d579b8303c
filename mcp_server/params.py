"""Tool parameter types shared by the tools: typed, bounded, and described for the assistant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from store.metrics import METRICS

__all__ = ["Gpu", "GpuOrAll", "MetricName", "Since", "Until"]

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

if TYPE_CHECKING:
    MetricName = str
else:  # an enum in the JSON schema, so the assistant sees every valid name
    MetricName = Literal[tuple(m.name for m in METRICS)]
