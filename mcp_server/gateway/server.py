"""The gateway's MCP server, assembled once: node tools forwarded, fleet tools, the catalog."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from mcp_server.catalog_resources import register_catalog_resources
from mcp_server.gateway.fleet import Fleet
from mcp_server.gateway.node_tools import register_node_tools
from mcp_server.gateway.tools import FLEET_TOOLS
from mcp_server.tools import add_tools
from watcher.kernel.catalog import default_catalog
from watcher.prometheus import installed_version

__all__ = ["build_gateway_server"]

INSTRUCTIONS = """\
The xidwatch gateway answers for every GPU node in the cluster by asking each node's own
xidwatch daemon (XID errors from the kernel log with NVIDIA's catalog action, and months of
NVML telemetry). Everything is read-only. Start with nodes_needing_attention or
fleet_xid_summary for the whole fleet; then use the per-node tools (the node daemon's tools,
same names and parameters, plus `node`) on the nodes they name: get_gpu_health,
list_xid_events, correlate_xid. list_nodes shows the nodes and whether each answers. Fleet
answers are partial when nodes fail: nodes_failed names each with the reason.
"""


def build_gateway_server(fleet: Fleet) -> MCPServer:
    """An MCPServer answering for ``fleet``: per-node tools, fleet tools, catalog resources."""
    server = MCPServer(
        "xidwatch-gateway",
        instructions=INSTRUCTIONS,
        version=installed_version(),
        log_level="WARNING",
    )
    catalog = default_catalog()
    add_tools(server, FLEET_TOOLS, (fleet,))
    register_node_tools(server, fleet, catalog)
    register_catalog_resources(server, catalog)
    return server
