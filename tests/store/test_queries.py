"""Listing and summarising stored XIDs: filters, cursor pagination, exact burst counts, indexes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from store.db import open_reader
from store.errors import InvalidQueryError
from store.flood import FloodPolicy
from store.queries import XidFilter, list_xids, summarize_xids
from tests.store.helpers import event, write_all

T0 = 1_700_000_000_000
GPU_A, GPU_B = "00000000:3B:00.0", "00000000:86:00.0"


@pytest.fixture
async def filled(db_path: Path) -> Path:
    events = [
        event(n, xid=(13, 31, 79)[n % 3], gpu=(GPU_A, GPU_B)[n % 2], ts_ms=T0 + n * 1000)
        for n in range(30)
    ]
    await write_all(db_path, list(events))
    return db_path


async def test_listing_is_newest_first_and_pages_cover_everything_once(filled: Path) -> None:
    conn = await open_reader(filled)
    seen: list[int] = []
    cursor = None
    while True:
        page = await list_xids(conn, XidFilter(), limit=7, cursor=cursor)
        seen += [e.seq or 0 for e in page.events]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    await conn.close()
    assert seen == list(range(29, -1, -1))


async def test_filters_combine(filled: Path) -> None:
    conn = await open_reader(filled)
    page = await list_xids(
        conn, XidFilter(since_ms=T0 + 10_000, until_ms=T0 + 20_000, pci_bus_ids=[GPU_A], codes=[13])
    )
    await conn.close()
    assert [e.seq for e in page.events] == [18, 12]
    assert all(e.pci_bus_id == GPU_A and e.xid == 13 for e in page.events)


async def test_action_and_kind_filters(filled: Path) -> None:
    conn = await open_reader(filled)
    assert len((await list_xids(conn, XidFilter(actions=["RESTART_APP"]))).events) == 30
    assert (await list_xids(conn, XidFilter(actions=["RESET_GPU"]))).events == ()
    assert (await list_xids(conn, XidFilter(kind="sxid"))).events == ()
    await conn.close()


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90LWEtY3Vyc29y", "MTox" + "A" * 3], ids=repr)
async def test_a_bad_cursor_is_a_clear_error(filled: Path, cursor: str) -> None:
    conn = await open_reader(filled)
    with pytest.raises(InvalidQueryError, match="next_cursor"):
        await list_xids(conn, XidFilter(), cursor=cursor)
    await conn.close()


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_limits_are_bounded(filled: Path, limit: int) -> None:
    conn = await open_reader(filled)
    with pytest.raises(InvalidQueryError, match="limit must be between 1 and 1000"):
        await list_xids(conn, XidFilter(), limit=limit)
    await conn.close()


async def test_summary_counts_bursts_exactly(db_path: Path) -> None:
    events = [event(n, ts_ms=T0 + n) for n in range(500)]
    await write_all(db_path, list(events), flood=FloodPolicy(burst=3, per_minute=1))
    conn = await open_reader(db_path)
    summary = await summarize_xids(conn, XidFilter(since_ms=T0))
    listing = await list_xids(conn, XidFilter(since_ms=T0))
    await conn.close()
    assert summary.total == 500
    (row,) = summary.rows
    assert (row.xid, row.count, row.rows) == (13, 500, 4)
    assert (row.first_ts_ms, row.last_ts_ms) == (T0, T0 + 499)
    assert sum(e.count for e in listing.events) == 500
    assert [e.burst for e in listing.events].count(True) == 1


async def test_a_burst_that_began_before_the_window_still_counts_in_it(db_path: Path) -> None:
    events = [event(n, ts_ms=T0 + n * 1000) for n in range(100)]
    await write_all(db_path, list(events), flood=FloodPolicy(burst=1, per_minute=0.01))
    conn = await open_reader(db_path)
    summary = await summarize_xids(conn, XidFilter(since_ms=T0 + 50_000))
    await conn.close()
    assert summary.total == 99  # the burst row holds events 1..99 and overlaps the window


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (XidFilter(since_ms=T0), "xid_events_by_time"),
        (XidFilter(pci_bus_ids=[GPU_A], since_ms=T0), "xid_events_by_gpu"),
        (XidFilter(codes=[79], since_ms=T0), "xid_events_by_code"),
        (XidFilter(actions=["RESET_GPU"], since_ms=T0), "xid_events_by_action"),
    ],
    ids=["time", "gpu", "code", "action"],
)
async def test_hot_queries_use_an_index(filled: Path, filters: XidFilter, index: str) -> None:
    where, args = filters.where()
    sql = f"EXPLAIN QUERY PLAN SELECT * FROM xid_events WHERE {where} ORDER BY ts_ms DESC LIMIT 5"
    with sqlite3.connect(filled) as conn:
        conn.execute("ANALYZE")
        plan = " ".join(str(row[-1]) for row in conn.execute(sql, args))
    assert index in plan, plan


@pytest.mark.parametrize(
    ("since_ms", "until_ms", "message"),
    [
        (T0 + 10_000, T0, r"^since \(2023-11-14T22:13:30\.000Z\) is after until \(2023-11-14T22"),
        (T0, T0, r"^since \(2023-11-14T22:13:20\.000Z\) is the same instant as until"),
    ],
    ids=["inverted", "empty"],
)
def test_a_window_that_holds_no_time_is_an_error_not_an_empty_answer(
    since_ms: int, until_ms: int, message: str
) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        XidFilter(since_ms=since_ms, until_ms=until_ms)
