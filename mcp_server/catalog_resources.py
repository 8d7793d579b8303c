"""MCP resources: the XID catalog, whole (``xid://catalog``) and per code (``xid://catalog/{code}``)."""

from __future__ import annotations

import json

from mcp.server.mcpserver import MCPServer

from mcp_server.models import XidExplanation
from watcher.kernel.catalog import XidCatalog

__all__ = ["register_catalog_resources"]


def register_catalog_resources(server: MCPServer, catalog: XidCatalog) -> None:
    @server.resource("xid://catalog", mime_type="application/json")
    def xid_catalog() -> str:
        """Every XID NVIDIA publishes: code, mnemonic, title, immediate action, fatality."""
        return json.dumps(
            {
                "entries": [
                    {
                        "code": i.code,
                        "mnemonic": i.mnemonic,
                        "title": i.title,
                        "immediate_action": i.immediate_action,
                        "fatal": i.fatal,
                    }
                    for i in catalog
                ],
                "actions": catalog.actions,
                "causes": catalog.causes,
            }
        )

    @server.resource("xid://catalog/{code}", mime_type="application/json")
    def xid_catalog_entry(code: int) -> str:
        """One catalog entry in full (the same object explain_xid returns)."""
        return XidExplanation.from_info(catalog.lookup(code), catalog).model_dump_json()
