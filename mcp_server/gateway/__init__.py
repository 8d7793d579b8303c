"""The cluster gateway: one MCP server answering for every node by asking the node daemons.

Discovery finds the daemons (Kubernetes pods or a static list); a :class:`Fleet` calls them
with bounded concurrency, a deadline, retries and a breaker per node; the MCP server
forwards the node tools (with a ``node`` argument) and answers fleet-wide questions.
"""

from mcp_server.gateway.discovery import (
    DEFAULT_NAMESPACE,
    DEFAULT_NODE_PORT,
    DEFAULT_SELECTOR,
    KubeNodes,
    NodeRef,
    StaticNodes,
    parse_node_spec,
)
from mcp_server.gateway.errors import GatewayError, NodeCallError
from mcp_server.gateway.fanout import CallPolicy
from mcp_server.gateway.fleet import Fleet, UnknownNodeError
from mcp_server.gateway.retry import RetryPolicy
from mcp_server.gateway.server import build_gateway_server

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_NODE_PORT",
    "DEFAULT_SELECTOR",
    "CallPolicy",
    "Fleet",
    "GatewayError",
    "KubeNodes",
    "NodeCallError",
    "NodeRef",
    "RetryPolicy",
    "StaticNodes",
    "UnknownNodeError",
    "build_gateway_server",
    "parse_node_spec",
]
