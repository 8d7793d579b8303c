"""How long a node's verdicts take: ``get_gpu_health`` on a busy store.

The store: 8 GPUs sampled every 30 s for 2 days, and 3,000 XIDs of ten codes (application,
memory, off-the-bus, reset-class, NVLink) spread over them. Health judges the newest XID of
each code on each GPU (about 80 judgements), each with the node's XIDs and processes a day
either side and the telemetry around it. The peer, side by side: the same judgements each
reading its own context, as ``correlate_xid`` does for one XID.

Run: ``python -m bench.health``
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiosqlite

from store.correlation import gpu_of, judge_xid
from store.db import open_reader
from store.health import NodeFacts, events_to_judge, health_report
from store.inventory import latest_samples
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import GpuInfo, GpuSample, SampleBatch, StoredXid
from store.retention import RetentionPolicy
from store.writer import Item
from tests.store.helpers import event, write_all
from watcher.clock import now_ms

__all__ = ["main"]

DAY_MS = 86_400_000
XIDS = 3_000
ROUNDS = 5
_CODES = (
    (13, "RESTART_APP"),
    (31, "RESTART_APP"),
    (43, "IGNORE"),
    (45, "WORKFLOW_XID_45"),
    (79, "RESTART_BM"),
    (48, "WORKFLOW_XID_48"),
    (92, "IGNORE"),
    (62, "RESET_GPU"),
    (119, "RESET_GPU"),
    (74, "WORKFLOW_NVLINK_ERR"),
)


def build(db: Path, now: int) -> None:
    rng = random.Random(1)
    pcis = [f"00000000:{b:02X}:00.0" for b in (0x18, 0x3B, 0x86, 0xAF, 0xC1, 0xD8, 0xDA, 0xDB)]
    gpus = tuple(
        GpuInfo(f"GPU-{i:08d}-0000", i, "NVIDIA H100", p, slowdown_temp_c=89, shutdown_temp_c=92)
        for i, p in enumerate(pcis)
    )
    items: list[Item] = [
        SampleBatch(
            t,
            tuple(GpuSample(g.uuid, t, temperature_c=60 + rng.randint(0, 5)) for g in gpus),
            gpus=gpus,
        )
        for t in range(now - 2 * DAY_MS, now, 30_000)
    ]
    for n in range(1, XIDS + 1):
        code, action = rng.choice(_CODES)
        e = event(n, xid=code, gpu=rng.choice(pcis), ts_ms=now - rng.randint(0, 2 * DAY_MS))
        items.append(replace(e, action=action, process=rng.choice(("python3", "trainer"))))
    asyncio.run(write_all(db, items))


async def measure(db: Path) -> tuple[list[float], list[float], int]:
    conn = await open_reader(db)
    shared, alone, judged = [], [], 0
    try:
        for _ in range(ROUNDS):
            now = now_ms()
            started = time.perf_counter()
            await health_report(conn, since_ms=now - DAY_MS, now_ms=now)
            shared.append(time.perf_counter() - started)
            started = time.perf_counter()
            judged = await _each_alone(conn, now)
            alone.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return shared, alone, judged


async def _each_alone(conn: aiosqlite.Connection, now: int) -> int:
    """The peer: every judgement health makes, each reading its own context."""
    xids: list[StoredXid] = []
    cursor = None
    while True:
        filters = XidFilter(since_ms=now - DAY_MS, until_ms=now, kind="xid")
        page = await list_xids(conn, filters, limit=MAX_PAGE, cursor=cursor)
        xids += page.events
        if (cursor := page.next_cursor) is None:
            break
    gpus = [item.gpu for item in await latest_samples(conn)]
    events = events_to_judge(NodeFacts(now_ms=now, xids=tuple(xids)), gpus)
    for e in events:
        found = await gpu_of(conn, e)
        await judge_xid(conn, e, found=found, now_ms=now, retention=RetentionPolicy())
    return len(events)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "xidwatch.db"
        build(db, now_ms())
        shared, alone, judged = asyncio.run(measure(db))
    head = f"get_gpu_health on 8 GPUs, {XIDS} XIDs over 2 days ({judged} judgements)"
    print(f"{head}, {ROUNDS} rounds")
    print(f"  shared context (what health does): p50 {statistics.median(shared):.3f} s")
    print(f"  each judgement alone (peer):       p50 {statistics.median(alone):.3f} s")


if __name__ == "__main__":
    main()
