"""Tool annotations shared by every xidwatch tool: read-only, closed world, idempotent."""

from __future__ import annotations

from mcp_types import ToolAnnotations

__all__ = ["READ_ONLY"]

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
