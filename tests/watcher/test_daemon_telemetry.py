"""The daemon on simulated GPUs: samples, rollups and both XID witnesses reach the store once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.daemons import run_scenario
from watcher.config import SimulationSpec


async def test_a_scenario_reaches_the_store_through_kmsg_and_nvml_exactly_once(
    db_path: Path,
) -> None:
    spec = SimulationSpec(4, scenario="app-crash-loop", speed=50)
    daemon = await run_scenario(db_path, spec)
    with sqlite3.connect(db_path) as conn:
        xids = conn.execute(
            "SELECT xid, source, gpu_uuid, pci_bus_id FROM xid_events ORDER BY id"
        ).fetchall()
        gpus = dict(conn.execute("SELECT idx, uuid FROM gpus").fetchall())
        per_gpu = dict(conn.execute("SELECT gpu, count(*) FROM samples GROUP BY gpu").fetchall())
        rollup_n = conn.execute("SELECT sum(temp_c_n) FROM rollup_1m").fetchone()[0]
        processes = conn.execute(
            "SELECT pid FROM gpu_processes WHERE gpu = (SELECT id FROM gpus WHERE idx = 1)"
        ).fetchall()
    assert [x[0] for x in xids] == [13, 31, 43, 45] * 4
    assert {x[1] for x in xids} == {"kmsg"}  # the NVML witness merged, not duplicated
    assert {x[2] for x in xids} == {gpus[1]}
    assert daemon.pipeline.stats.nvml_merged == 16
    assert len(per_gpu) == 4 and min(per_gpu.values()) >= 3
    assert rollup_n == sum(per_gpu.values())  # every sample counted once in the 1m tier
    assert {31000, 31017, 31034} <= {p for (p,) in processes}


async def test_without_a_kernel_log_nvml_alone_records_the_xids(db_path: Path) -> None:
    spec = SimulationSpec(2, scenario="thermal-runaway", speed=100)
    daemon = await run_scenario(db_path, spec, kmsg=False)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT xid, source FROM xid_events ORDER BY id").fetchall()
        lost = conn.execute("SELECT state FROM gpu_events").fetchall()
    assert rows == [(62, "nvml"), (79, "nvml"), (45, "nvml")]
    assert lost == [("lost",)]
    assert daemon.sampler is not None and daemon.sampler.stats.gpus_lost == 1
