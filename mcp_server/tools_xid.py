"""MCP tools over XID events: list with filters and cursors, summaries, the catalog, correlation."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from mcp_server.annotations import READ_ONLY
from mcp_server.deps import ToolDeps
from mcp_server.models import XidEventModel, XidExplanation
from mcp_server.params import Since, Until
from store.pci import normalize_pci
from store.queries import MAX_PAGE, XidFilter, list_xids

__all__ = ["register_xid_tools"]


class XidPageResult(BaseModel):
    """Events newest first; pass ``next_cursor`` back to get the next page (null: last page)."""

    events: list[XidEventModel]
    next_cursor: str | None
    total_in_page: int


def register_xid_tools(server: MCPServer, deps: ToolDeps) -> None:
    @server.tool(annotations=READ_ONLY)
    async def list_xid_events(
        since: Since = "24h",
        until: Until = None,
        gpus: Annotated[
            list[Annotated[str, Field(max_length=40)]],
            Field(max_length=16, description="PCI bus ids, any spelling; empty for all GPUs"),
        ] = [],  # noqa: B006 -- pydantic copies defaults; an immutable default breaks the schema
        codes: Annotated[
            list[Annotated[int, Field(ge=0, le=100_000)]],
            Field(max_length=32, description="XID codes; empty for all"),
        ] = [],  # noqa: B006
        actions: Annotated[
            list[Annotated[str, Field(max_length=40)]],
            Field(max_length=16, description="catalog actions, e.g. RESET_GPU, RESTART_BM"),
        ] = [],  # noqa: B006
        kind: Literal["xid", "sxid"] | None = None,
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Field(max_length=200)] = None,
    ) -> XidPageResult:
        """XID and NVSwitch SXid events stored on this node, newest first, with filters.

        A flood of identical XIDs is stored as a burst row whose ``count`` is exact. Each
        event carries the catalog's immediate action; use explain_xid for the full entry and
        correlate_xid (with the event ``id``) for what the GPU was doing around it.
        """
        try:
            pcis = [normalize_pci(g) for g in gpus]
        except ValueError as e:
            raise ToolError(f"gpus: {e}; use a PCI bus id like 0000:3b:00.0") from e
        filters = XidFilter(
            since_ms=deps.instant(since, name="since"),
            until_ms=deps.instant(until, name="until") if until else None,
            pci_bus_ids=pcis,
            codes=codes,
            actions=[a.upper() for a in actions],
            kind=kind,
        )
        async with deps.reader() as conn:
            page = await list_xids(conn, filters, limit=limit, cursor=cursor)
        events = [XidEventModel.from_stored(e, deps.catalog) for e in page.events]
        return XidPageResult(events=events, next_cursor=page.next_cursor, total_in_page=len(events))

    @server.tool(annotations=READ_ONLY)
    async def explain_xid(
        code: Annotated[int, Field(ge=0, le=100_000, description="the XID or SXid number")],
        kind: Literal["xid", "sxid"] = "xid",
    ) -> XidExplanation:
        """What an XID means: description, likely causes, immediate and investigatory action.

        From NVIDIA's XID catalog (codes 1..162); unknown codes get an explicit
        ``known: false`` entry rather than an error.
        """
        return XidExplanation.from_info(deps.catalog.lookup(code, kind), deps.catalog)
