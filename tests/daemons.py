"""Running the real daemon on simulated GPUs until a scenario has played out (shared by tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from watcher.config import DaemonConfig, SimulationSpec
from watcher.daemon import Daemon


async def run_scenario(db_path: Path, spec: SimulationSpec, **config: object) -> Daemon:
    """Run the daemon (fast ticks) until every timeline entry is applied; return it stopped."""
    daemon = Daemon(
        DaemonConfig(
            db_path=db_path,
            node="sim-node",
            simulate=spec,
            sample_interval_s=0.05,
            checkpoint_interval_s=0.05,
            **config,  # type: ignore[arg-type]
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
        await asyncio.sleep(0.3)  # the last lines reach the store; NVML holds expire
    stop.set()
    await task
    return daemon
