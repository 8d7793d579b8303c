"""What every xidwatch tool shares: read-only annotations, and compact results."""

from __future__ import annotations

import json
from typing import Any

from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel

from store.trend import round_sig

__all__ = ["READ_ONLY", "compact"]

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


def compact(model: BaseModel) -> CallToolResult:
    """A tool result with the structured answer and the same JSON, compact, as its text.

    The SDK would otherwise render the text block as indented JSON: a 100-event page is a
    third smaller without the indentation, and an assistant reads every byte as tokens.
    Floats keep four significant digits (never fewer whole digits): ``-2376.0000000000005``
    is noise to a reader and costs tokens.
    """
    data = _rounded(model.model_dump(mode="json"))
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round_sig(value)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
