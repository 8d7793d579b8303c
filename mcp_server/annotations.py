"""What every xidwatch tool shares: read-only annotations, and compact results."""

from __future__ import annotations

from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel

__all__ = ["READ_ONLY", "compact"]

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


def compact(model: BaseModel) -> CallToolResult:
    """A tool result with the structured answer and the same JSON, compact, as its text.

    The SDK would otherwise render the text block as indented JSON: a 100-event page is a
    third smaller without the indentation, and an assistant reads every byte as tokens.
    """
    return CallToolResult(
        content=[TextContent(type="text", text=model.model_dump_json())],
        structured_content=model.model_dump(mode="json"),
    )
