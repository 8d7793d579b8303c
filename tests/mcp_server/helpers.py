"""Builders for MCP tests: a store filled by the real daemon, and an in-process client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mcp import Client

from mcp_server.deps import ToolDeps
from mcp_server.server import build_server
from watcher.config import DaemonConfig, SimulationSpec
from watcher.daemon import Daemon


async def fill(db_path: Path, scenario: str = "thermal-runaway", speed: float = 100) -> None:
    """Run the daemon until the scenario has played out, then stop it."""
    daemon = Daemon(
        DaemonConfig(
            db_path=db_path,
            node="sim-node",
            simulate=SimulationSpec(4, scenario=scenario, speed=speed),
            sample_interval_s=0.05,
            checkpoint_interval_s=0.05,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await daemon.ready.wait()
    sim = daemon.simulation
    assert sim is not None and sim.runner is not None and sim.scenario is not None
    async with asyncio.timeout(30):
        while len(sim.runner.applied) < len(sim.scenario.events):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    stop.set()
    await task


def served(db_path: Path, **deps: Any) -> Client:
    """An in-process MCP client of a server over ``db_path`` (use with ``async with``).

    Not a fixture: an async fixture's setup and teardown run in different tasks, and the
    client's task group must be left from the task that entered it.
    """
    return Client(build_server(ToolDeps(db_path=db_path, node="sim-node", **deps)))
