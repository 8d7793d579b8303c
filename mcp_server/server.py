"""The node's MCP server, assembled once from the tool, resource and prompt modules."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from mcp_server.catalog_resources import register_catalog_resources
from mcp_server.deps import ToolDeps
from mcp_server.prompts import register_prompts
from mcp_server.tools import TOOLS, add_tools
from watcher.prometheus import installed_version

__all__ = ["build_server"]

INSTRUCTIONS = """\
xidwatch answers questions about this node's NVIDIA GPUs from its own records: XID errors
from the kernel log (exactly once, with NVIDIA's catalog action) and NVML telemetry kept for
months (raw 48 h, 1-minute rollups 30 days, 1-hour rollups 400 days). Everything is
read-only. Start with get_gpu_health or list_xid_events; use correlate_xid with an event id
to see what the GPU was doing around an XID; explain_xid for what a code means. GPUs can be
named by index, UUID (or a unique prefix) or PCI bus id in any spelling, including GPUs
seen only in kernel XID lines; windows as durations back from now (24h, 7d) or ISO
8601 times.
"""


def build_server(deps: ToolDeps) -> MCPServer:
    """An MCPServer with every xidwatch tool, the catalog resources and the prompts."""
    server = MCPServer(
        "xidwatch", instructions=INSTRUCTIONS, version=installed_version(), log_level="WARNING"
    )
    add_tools(server, TOOLS, (deps, deps.catalog))
    register_catalog_resources(server, deps.catalog)
    register_prompts(server)
    return server
