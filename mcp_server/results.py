"""Tool results: the structured answer, and the same JSON, compact, as its text."""

from __future__ import annotations

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from mcp_server.answers import answer_data, answer_json

__all__ = ["compact"]


def compact(model: BaseModel) -> CallToolResult:
    """A tool result with the structured answer and the same JSON, compact, as its text.

    The SDK would otherwise render the text block as indented JSON: a 100-event page is a
    third smaller without the indentation, and an assistant reads every byte as tokens.
    Floats are rounded as :func:`mcp_server.answers.answer_data` rounds them.
    """
    data = answer_data(model)
    return CallToolResult(
        content=[TextContent(type="text", text=answer_json(data))], structured_content=data
    )
