"""The batched writer: exactly-once by watermark, flood folding with exact counts, disk full."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from store.db import prepare_store
from store.flood import MAX_BURST_SPAN_MS, FloodPolicy, FloodState
from store.records import Checkpoint, SourceCursor
from store.writer import StoreWriter
from tests.store.helpers import event, write_all
from tests.waiting import wait_until_async


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_events_are_committed_with_their_watermark(db_path: Path) -> None:
    writer = await write_all(db_path, [event(n) for n in range(50)])
    assert _rows(db_path, "SELECT count(*), min(seq), max(seq) FROM xid_events") == [(50, 0, 49)]
    assert _rows(db_path, "SELECT source_key, position FROM watermarks") == [("kmsg:b1", 49)]
    assert writer.stats.events_stored == 50
    assert writer.stats.batches >= 1


async def test_a_restarted_writer_skips_what_its_watermark_covers(db_path: Path) -> None:
    await write_all(db_path, [event(n) for n in range(10)])
    second = await write_all(db_path, [event(n) for n in range(5, 15)])
    assert _rows(db_path, "SELECT count(*), count(DISTINCT seq) FROM xid_events") == [(15, 15)]
    assert second.stats.duplicates_skipped == 5


async def test_checkpoints_move_the_watermark_past_noise(db_path: Path) -> None:
    await write_all(db_path, [event(1), Checkpoint(SourceCursor("kmsg:b1", 900))])
    assert _rows(db_path, "SELECT position FROM watermarks") == [(900,)]
    again = await write_all(db_path, [event(500)])
    assert again.stats.duplicates_skipped == 1


async def test_one_kmsg_record_handed_over_twice_in_a_batch_is_stored_once(
    db_path: Path,
) -> None:
    await write_all(db_path, [event(1), event(1)])
    assert _rows(db_path, "SELECT boot_id, seq FROM xid_events") == [("b1", 1)]


async def test_a_flood_is_folded_into_a_burst_with_an_exact_count(db_path: Path) -> None:
    flood = FloodPolicy(burst=5, per_minute=1)
    events = [event(n, ts_ms=1_700_000_000_000 + n * 100) for n in range(1000)]
    writer = await write_all(db_path, list(events), flood=flood)
    ((individual, bursts, total),) = _rows(
        db_path, "SELECT sum(burst = 0), sum(burst = 1), sum(count) FROM xid_events"
    )
    assert total == 1000
    assert individual == 6  # 5 at once, one more token after a minute
    assert bursts == 1
    assert writer.stats.events_folded == 994
    last = _rows(db_path, "SELECT pid, last_ts_ms FROM xid_events WHERE burst = 1")
    assert last == [(999, events[-1].ts_ms)]


async def test_folding_is_per_gpu_and_code(db_path: Path) -> None:
    flood = FloodPolicy(burst=2, per_minute=1)
    events = [event(n, xid=13 + n % 2, ts_ms=1_700_000_000_000 + n) for n in range(20)]
    await write_all(db_path, list(events), flood=flood)
    rows = _rows(
        db_path, "SELECT xid, sum(burst = 0), sum(count) FROM xid_events GROUP BY xid ORDER BY xid"
    )
    assert rows == [(13, 2, 10), (14, 2, 10)]


async def test_a_burst_continues_across_batches_and_restarts(db_path: Path) -> None:
    flood = FloodPolicy(burst=1, per_minute=0.001)
    now = 1_700_000_000_000
    await write_all(db_path, [event(n, ts_ms=now + n) for n in range(10)], flood=flood)
    prepare_store(db_path)
    writer = StoreWriter(db_path, flood=flood, clock=lambda: now / 1000)
    await writer.open()
    task = asyncio.create_task(writer.run())
    for n in range(10, 20):
        writer.put(event(n, ts_ms=now + n))
    await writer.close()
    await task
    await writer.aclose_connection()
    # the restarted writer's token bucket is new, so one more individual row; the rest join
    # the same burst row rather than starting another
    assert _rows(db_path, "SELECT sum(count), sum(burst = 1) FROM xid_events") == [(20, 1)]


async def test_a_burst_never_spans_more_than_the_bound(db_path: Path) -> None:
    step = MAX_BURST_SPAN_MS // 4
    events = [event(n, ts_ms=1_700_000_000_000 + n * step) for n in range(12)]
    await write_all(
        db_path, list(events), flood=FloodPolicy(burst=1, per_minute=0.0001, gap_ms=step)
    )
    spans = _rows(db_path, "SELECT last_ts_ms - ts_ms FROM xid_events WHERE burst = 1")
    assert spans and all(int(str(span)) < MAX_BURST_SPAN_MS for (span,) in spans)
    assert _rows(db_path, "SELECT sum(count) FROM xid_events") == [(12,)]


async def test_disk_full_keeps_xids_in_memory_and_retries_until_space_returns(
    db_path: Path,
) -> None:
    prepare_store(db_path)
    writer = StoreWriter(db_path, flood=FloodPolicy(per_minute=0), max_backoff_s=0.05)
    await writer.open()
    assert writer._conn is not None
    pages = (await (await writer._conn.execute("PRAGMA page_count")).fetchone() or (0,))[0]
    await writer._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    task = asyncio.create_task(writer.run())
    for n in range(300):
        writer.put(event(n))
    await wait_until_async(lambda: writer.stats.commit_retries >= 2, 10)
    assert writer.stats.events_stored == 0
    await writer._conn.execute("PRAGMA max_page_count = 1073741823")  # space returns
    await writer.close()
    await asyncio.wait_for(task, 10)
    await writer.aclose_connection()
    assert _rows(db_path, "SELECT count(*) FROM xid_events") == [(300,)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=600_000), min_size=1, max_size=200),
    st.integers(min_value=1, max_value=10),
    st.floats(min_value=0.1, max_value=60),
)
def test_token_bucket_admits_at_most_burst_plus_refill(
    offsets: list[int], burst: int, per_minute: float
) -> None:
    state = FloodState(FloodPolicy(burst=burst, per_minute=per_minute))
    times = sorted(offsets)
    admitted = sum(state.admit(("xid", "g", 13), t) for t in times)
    span_min = (times[-1] - times[0]) / 60_000
    assert admitted <= burst + span_min * per_minute + 1
    assert admitted >= min(len(times), burst)
