"""The node tools, forwarded: same names and parameters as on a node, plus ``node``.

The parameters are not restated here. The gateway walks :data:`mcp_server.tools.TOOLS`, the
list the node's own server serves, and each forwarder takes its tool's MCP parameters
(bounds, enums, descriptions) with ``node`` put first, so a parameter added to a node tool
reaches the gateway with it. A tool that needs only the XID catalog (``explain_xid``) is
not forwarded: the catalog is here, so the node's own tool function answers it locally.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field

from mcp_server.annotations import READ_ONLY
from mcp_server.gateway.errors import GatewayError, NodeCallError
from mcp_server.gateway.fleet import Fleet, UnknownNodeError
from mcp_server.gateway.models import NodeToolResult
from mcp_server.results import compact
from mcp_server.tools import TOOLS, ToolFn, add_tools, dependency, description, parameters
from store.errors import XidwatchError
from watcher.kernel.catalog import XidCatalog

__all__ = ["NodeName", "is_local", "node_errors", "register_node_tools"]

NodeName = Annotated[
    str,
    Field(min_length=1, max_length=253, description="the node's name, as list_nodes shows it"),
]
_GATEWAY_NOTE = (
    "\n\nOn the gateway: asks the named node (list_nodes shows them); the node's answer is "
    "under ``result``, untouched."
)


def is_local(tool: ToolFn) -> bool:
    """Whether the gateway answers ``tool`` itself: it needs only the XID catalog."""
    return dependency(tool) is XidCatalog


def register_node_tools(server: MCPServer, fleet: Fleet, catalog: XidCatalog) -> None:
    """A forwarder for every node tool, and the catalog-only ones answered from ``catalog``."""
    add_tools(server, [t for t in TOOLS if is_local(t)], (catalog,))
    for tool in TOOLS:
        if not is_local(tool):
            server.add_tool(
                _forwarder(fleet, tool),
                name=tool.__name__,
                description=description(tool) + _GATEWAY_NOTE,
                annotations=READ_ONLY,
            )


def _forwarder(fleet: Fleet, tool: ToolFn) -> Callable[..., Awaitable[CallToolResult]]:
    name = tool.__name__

    async def forward(node: str, **arguments: Any) -> CallToolResult:
        args = {k: v for k, v in arguments.items() if v is not None}
        async with node_errors(node, name):
            try:
                answer = await fleet.call(node, name, args)
            except (NodeCallError, UnknownNodeError) as e:
                recorded = await fleet.recorded(node, name, args, e)
                if recorded is None:
                    raise
                return compact(recorded)
        return compact(
            NodeToolResult(
                node=answer.node, latency_ms=round(answer.latency_s * 1000, 1), result=answer.result
            )
        )

    own = parameters(tool)
    if any(p.name == "node" for p in own):
        raise GatewayError(f"node tool {name} has a 'node' parameter; the gateway needs that name")
    node = inspect.Parameter("node", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=NodeName)
    forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # read by the SDK
        [node, *own], return_annotation=Annotated[CallToolResult, NodeToolResult]
    )
    forward.__name__ = name
    return forward


@asynccontextmanager
async def node_errors(node: str, tool: str) -> AsyncIterator[None]:
    """Why a node gave no answer, as a ToolError naming the node."""
    try:
        yield
    except NodeCallError as e:
        if e.reason == "tool_error":
            raise ToolError(f"node {node}: {e.args[0]}") from e
        raise ToolError(f"node {node} did not answer {tool}: {e}") from e
    except XidwatchError as e:
        raise ToolError(str(e)) from e
