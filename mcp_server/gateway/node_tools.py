"""The node tools, forwarded: same names and parameters as on a node, plus ``node``.

The parameters are not restated here. The node's own modules register their tools on a
recorder, and each forwarder takes its tool's signature (bounds, enums, descriptions) with
``node`` put first, so a parameter added to a node tool reaches the gateway with it.
``explain_xid`` is not forwarded: the catalog is here, so it is answered locally by the
node's own tool function.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, Icon, ToolAnnotations
from pydantic import Field

from mcp_server.annotations import READ_ONLY, compact
from mcp_server.deps import ToolDeps
from mcp_server.gateway.errors import GatewayError, NodeCallError
from mcp_server.gateway.fleet import Fleet
from mcp_server.gateway.models import NodeToolResult
from mcp_server.tools_gpu import register_gpu_tools
from mcp_server.tools_history import register_history_tools
from mcp_server.tools_xid import register_xid_tools
from store.errors import XidwatchError

__all__ = ["LOCAL_TOOLS", "NodeName", "local_deps", "node_tools", "register_node_tools"]

NodeName = Annotated[
    str,
    Field(min_length=1, max_length=253, description="the node's name, as list_nodes shows it"),
]
LOCAL_TOOLS = frozenset({"explain_xid"})  # answered from the gateway's own catalog
_NO_STORE = Path("/nonexistent/the-gateway-has-no-store")
_GATEWAY_NOTE = (
    "\n\nOn the gateway: asks the named node (list_nodes shows them); the node's answer is "
    "under ``result``, untouched."
)


def local_deps() -> ToolDeps:
    """Deps for the tools the gateway answers itself: the catalog only, never a store."""
    return ToolDeps(db_path=_NO_STORE)


@dataclass(frozen=True, slots=True)
class NodeTool:
    fn: Callable[..., Any]
    annotations: ToolAnnotations | None


class _Recorder(MCPServer):
    """Keeps each tool function the node's modules register, instead of serving it."""

    def __init__(self) -> None:
        super().__init__("xidwatch-node-tools")
        self.recorded: dict[str, NodeTool] = {}

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: ToolAnnotations | None = None,
        icons: list[Icon] | None = None,
        meta: dict[str, Any] | None = None,
        structured_output: bool | None = None,
    ) -> None:
        self.recorded[name or fn.__name__] = NodeTool(fn, annotations)


def node_tools() -> dict[str, NodeTool]:
    """Every tool a node daemon serves, by name, as its own modules define it."""
    recorder = _Recorder()
    deps = local_deps()
    register_gpu_tools(recorder, deps)
    register_history_tools(recorder, deps)
    register_xid_tools(recorder, deps)
    return recorder.recorded


def register_node_tools(server: MCPServer, fleet: Fleet) -> None:
    """A forwarder for every node tool, and the local ones as they are."""
    for name, tool in node_tools().items():
        if name in LOCAL_TOOLS:
            server.add_tool(tool.fn, name=name, annotations=tool.annotations or READ_ONLY)
        else:
            description = (inspect.getdoc(tool.fn) or name) + _GATEWAY_NOTE
            server.add_tool(
                _forwarder(fleet, name, tool.fn),
                name=name,
                description=description,
                annotations=READ_ONLY,
            )


def _forwarder(
    fleet: Fleet, name: str, node_fn: Callable[..., Any]
) -> Callable[..., Awaitable[CallToolResult]]:
    async def forward(node: str, **arguments: Any) -> CallToolResult:
        args = {k: v for k, v in arguments.items() if v is not None}
        async with node_errors(node, name):
            answer = await fleet.call(node, name, args)
        return compact(
            NodeToolResult(
                node=answer.node, latency_ms=round(answer.latency_s * 1000, 1), result=answer.result
            )
        )

    own = inspect.signature(node_fn, eval_str=True)
    if "node" in own.parameters:
        raise GatewayError(f"node tool {name} has a 'node' parameter; the gateway needs that name")
    node = inspect.Parameter("node", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=NodeName)
    forward.__signature__ = own.replace(  # type: ignore[attr-defined]  # read by the SDK
        parameters=[node, *own.parameters.values()],
        return_annotation=Annotated[CallToolResult, NodeToolResult],
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
