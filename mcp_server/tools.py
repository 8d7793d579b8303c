"""Every node tool in one list, walked by the node's server and by the gateway alike.

A tool is a module-level async function. Its first parameter is what it needs from the node,
given by :func:`bind`: ``deps: ToolDeps`` (the store, live readings, the clock), or only
``catalog: XidCatalog`` for a tool that reads nothing else. The other parameters are its MCP
parameters (bounds, enums and descriptions in their annotations) and its docstring is its
description. A test calls a tool directly: ``await list_gpus(ToolDeps(db_path=...))``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult

from mcp_server.annotations import READ_ONLY
from mcp_server.tools_gpu import get_gpu_health, get_gpu_processes, get_gpu_snapshot, list_gpus
from mcp_server.tools_history import get_metric_history, get_metric_trend
from mcp_server.tools_xid import (
    correlate_xid,
    explain_xid,
    list_xid_events,
    summarize_xid_events,
)

__all__ = ["TOOLS", "ToolFn", "add_tools", "bind", "dependency", "description", "parameters"]

# A tool function: its dependency first, then its MCP parameters, answering a tool result.
ToolFn = Callable[..., Awaitable[CallToolResult]]

TOOLS: tuple[ToolFn, ...] = (
    list_gpus,
    get_gpu_snapshot,
    get_gpu_health,
    get_gpu_processes,
    get_metric_history,
    get_metric_trend,
    list_xid_events,
    summarize_xid_events,
    correlate_xid,
    explain_xid,
)


def add_tools(server: MCPServer, tools: Sequence[ToolFn], given: Sequence[object]) -> None:
    """Serve ``tools`` on ``server``, each bound to its dependency from ``given``.

    The node serves :data:`TOOLS` with ``(deps, deps.catalog)``; the gateway serves its
    fleet tools with its ``Fleet``.
    """
    for tool in tools:
        server.add_tool(
            bind(tool, given),
            name=tool.__name__,
            description=description(tool),
            annotations=READ_ONLY,
        )


def bind(tool: ToolFn, given: Sequence[object]) -> ToolFn:
    """``tool`` with its dependency filled from ``given`` (the first of its type), and the
    signature of its MCP parameters alone, which the SDK reads for the input schema."""
    need = dependency(tool)
    value = next((g for g in given if isinstance(g, need)), None)
    if value is None:
        raise TypeError(f"tool {tool.__name__} needs a {need.__name__}; none was given")

    async def call(**arguments: Any) -> CallToolResult:
        return await tool(value, **arguments)

    call.__signature__ = _signature(tool).replace(  # type: ignore[attr-defined]  # read by the SDK
        parameters=parameters(tool)
    )
    call.__name__ = tool.__name__
    call.__doc__ = tool.__doc__
    return call


def dependency(tool: ToolFn) -> type:
    """The type of what ``tool`` needs from the node: its first parameter's annotation."""
    first = next(iter(_signature(tool).parameters.values()))
    if not isinstance(first.annotation, type):
        raise TypeError(f"tool {tool.__name__}: its first parameter must name a dependency type")
    return first.annotation


def parameters(tool: ToolFn) -> list[inspect.Parameter]:
    """The MCP parameters of ``tool``: every parameter after its dependency."""
    return list(_signature(tool).parameters.values())[1:]


def description(tool: ToolFn) -> str:
    """The tool's description: its docstring, dedented."""
    return inspect.getdoc(tool) or tool.__name__


def _signature(tool: ToolFn) -> inspect.Signature:
    return inspect.signature(tool, eval_str=True)
