"""What the MCP tools need from the node, passed in once: the store, the catalog, live readings.

Tools never open files of their own choosing or write anything: they get a read-only
connection to the one store named here, per call, and close it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
from mcp.server.mcpserver.exceptions import ToolError

from store.db import open_reader
from store.errors import XidwatchError
from store.inventory import stored_node_name
from store.records import GpuSample
from store.retention import RetentionPolicy
from store.windows import parse_duration_ms, parse_instant_ms
from watcher.clock import now_ms as wall_now_ms
from watcher.kernel.catalog import XidCatalog, default_catalog

__all__ = ["LiveReadings", "ToolDeps", "tool_errors"]


# Reads the node's current readings (the daemon's sampler, or a one-off NVML tick).
LiveReadings = Callable[[], Awaitable[Mapping[str, GpuSample]]]


@dataclass(frozen=True, slots=True)
class ToolDeps:
    db_path: Path
    node: str = ""
    live: LiveReadings | None = None
    catalog: XidCatalog = field(default_factory=default_catalog)
    now_ms: Callable[[], int] = wall_now_ms
    # Read per call: the daemon's retention can change on a config reload.
    retention_of: Callable[[], RetentionPolicy] = RetentionPolicy
    # The daemon's default node name when none is configured (DaemonConfig.node).
    hostname: Callable[[], str] = socket.gethostname

    @property
    def retention(self) -> RetentionPolicy:
        return self.retention_of()

    async def node_name(self, conn: aiosqlite.Connection) -> str:
        """The node these answers are about, the same in every tool's result.

        ``node`` when configured; else the name the daemon recorded with the store's newest
        XID events; else this host's name, as the daemon itself defaults to.
        """
        if self.node:
            return self.node
        return await stored_node_name(conn) or self.hostname()

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read-only connection for one tool call; store errors become ToolErrors."""
        async with tool_errors():
            conn = await open_reader(self.db_path)
        try:
            async with tool_errors():
                yield conn
        finally:
            await conn.close()

    def instant(self, text: str, *, name: str) -> int:
        """A window bound (``24h`` back from now, or ISO 8601) in ms, or a ToolError."""
        try:
            return parse_instant_ms(text, now_ms=self.now_ms())
        except XidwatchError as e:
            raise ToolError(f"{name}: {e}") from e

    def duration(self, text: str, *, name: str, most: str = "24h") -> int:
        """A duration in ms bounded by ``most``, or a ToolError saying what is valid."""
        try:
            value = parse_duration_ms(text)
        except XidwatchError as e:
            raise ToolError(f"{name}: {e}") from e
        if value > parse_duration_ms(most):
            raise ToolError(f"{name} is {text}; at most {most} is allowed")
        return value


@asynccontextmanager
async def tool_errors() -> AsyncIterator[None]:
    """Our deliberate errors (bad GPU, window, cursor) reach the client as ToolErrors."""
    try:
        yield
    except XidwatchError as e:
        raise ToolError(str(e)) from e
