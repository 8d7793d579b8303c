"""Builders for store tests (imported, not a fixture module)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import aiosqlite

from store.db import open_reader, prepare_store
from store.flood import FloodPolicy
from store.records import SourceCursor, XidEvent
from store.writer import Item, StoreWriter


def event(
    n: int,
    *,
    xid: int = 13,
    gpu: str = "00000000:3B:00.0",
    ts_ms: int | None = None,
    key: str | None = "kmsg:b1",
) -> XidEvent:
    return XidEvent(
        ts_ms=ts_ms if ts_ms is not None else 1_700_000_000_000 + n * 1000,
        received_ms=1_700_000_000_000 + n * 1000,
        kind="xid",
        xid=xid,
        message=f"msg {n}",
        raw=f"NVRM: Xid (PCI:{gpu}): {xid}, pid={n}, msg {n}",
        source="kmsg",
        action="RESTART_APP",
        node="n1",
        pci_bus_id=gpu,
        pid=n,
        process="python3",
        cursor=SourceCursor(key, n) if key else None,
    )


async def write_all(
    path: Path,
    items: Sequence[Item],
    *,
    flood: FloodPolicy | None = None,
    batch_max: int = 1000,
    now_s: float | None = None,
) -> StoreWriter:
    """Open a writer, put everything, close it; returns the writer for its stats.

    ``now_s`` fixes the writer's clock (it dates watermarks and reloads open bursts by it).
    """
    prepare_store(path)
    clock = (lambda: now_s) if now_s is not None else time.time
    writer = StoreWriter(
        path, flood=flood or FloodPolicy(per_minute=0), batch_max=batch_max, clock=clock
    )
    await writer.open()
    try:
        task = asyncio.create_task(writer.run())
        for item in items:
            writer.put(item)
        await writer.close()
        await task
    finally:
        await writer.aclose_connection()
    return writer


@asynccontextmanager
async def reading(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """A read-only connection that is always closed (an open one keeps pytest alive)."""
    conn = await open_reader(path)
    try:
        yield conn
    finally:
        await conn.close()


def rows(path: Path, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, args).fetchall()
