"""Builders for MCP tests: a store filled by the real daemon, and an in-process client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp import Client

from mcp_server.deps import ToolDeps
from mcp_server.server import build_server
from tests.daemons import run_scenario
from watcher.config import SimulationSpec


async def fill(db_path: Path, scenario: str = "thermal-runaway", speed: float = 100) -> None:
    """Fill ``db_path`` with the daemon running ``scenario`` on 4 simulated GPUs."""
    await run_scenario(db_path, SimulationSpec(4, scenario=scenario, speed=speed))


def served(db_path: Path, **deps: Any) -> Client:
    """An in-process MCP client of a server over ``db_path`` (use with ``async with``).

    Not a fixture: an async fixture's setup and teardown run in different tasks, and the
    client's task group must be left from the task that entered it.
    """
    return Client(build_server(ToolDeps(db_path=db_path, node="sim-node", **deps)))
