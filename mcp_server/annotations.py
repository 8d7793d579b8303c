"""Tool annotations: every xidwatch tool is read-only, idempotent and closed-world."""

from __future__ import annotations

from mcp_types import ToolAnnotations

__all__ = ["READ_ONLY"]

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
