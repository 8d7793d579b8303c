"""Ingesting captures to completion (``xidwatch replay``, the demo): same pipeline, same writer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from store.db import prepare_store
from store.flood import FloodPolicy
from store.writer import StoreWriter
from watcher.clock import now_ms
from watcher.kernel.catalog import default_catalog
from watcher.kernel.replay import ReplaySource
from watcher.pipeline import XidPipeline

__all__ = ["ReplayResult", "replay_captures"]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: lines read, events found, and what the store made of them."""

    lines: int
    events: int
    stored: int
    folded: int
    duplicates: int


async def replay_captures(
    paths: Sequence[Path],
    db_path: Path,
    *,
    node: str = "",
    boot_wall_ms: int | None = None,
    flood: FloodPolicy | None = None,
) -> ReplayResult:
    """Replay each capture into the store at ``db_path``, in order; idempotent per capture."""
    await asyncio.to_thread(prepare_store, db_path)
    writer = StoreWriter(db_path, flood=flood)
    await writer.open()
    pipeline = XidPipeline(writer.put, default_catalog(), node=node)
    lines = 0
    try:
        writer_task = asyncio.create_task(writer.run())
        for path in paths:
            source = ReplaySource(path, boot_wall_ms=boot_wall_ms, now_ms=now_ms)
            await source.run(pipeline.handle)
            lines += source.lines_read
            pipeline.flush(final=True)  # the capture is whole: nothing more will come
        await writer.close()
        await writer_task
    finally:
        await writer.aclose_connection()
    s = writer.stats
    return ReplayResult(
        lines, pipeline.stats.events, s.events_stored, s.events_folded, s.duplicates_skipped
    )
