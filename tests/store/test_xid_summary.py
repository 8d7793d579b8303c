"""The XID summary of a window beside the window before it: totals and what is new or growing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from store.errors import InvalidQueryError
from store.records import XidEvent
from store.xid_summary import (
    ActionTotal,
    CodeTotal,
    GpuTotal,
    PairChange,
    XidWindowSummary,
    summarize_with_changes,
)
from tests.store.helpers import event, reading, write_all

HOUR = 3_600_000
T0 = 1_800_000_000_000  # start of the current window
A, B = "00000000:3B:00.0", "00000000:86:00.0"
_ACTIONS = {13: "RESTART_APP", 31: "RESTART_APP", 79: "RESTART_BM", 48: "WORKFLOW_XID_48"}


def xid(n: int, code: int, gpu: str, ts_ms: int) -> XidEvent:
    return replace(event(n, xid=code, gpu=gpu, ts_ms=ts_ms), action=_ACTIONS[code])


@pytest.fixture
async def filled(db_path: Path) -> Path:
    before = [xid(n, 13, A, T0 - HOUR + n * 1000) for n in range(1, 3)]  # 13 on A x2
    before += [xid(3, 31, B, T0 - 1)]  # 31 on B x1, the last millisecond before
    now = [xid(n, 13, A, T0 + n * 1000) for n in range(10, 15)]  # 13 on A x5: grew
    now += [xid(20, 79, B, T0 + 30_000), xid(21, 13, B, T0 + 40_000)]  # new code, new pair
    now += [xid(22, 31, B, T0)]  # the first millisecond: this window, not the one before
    await write_all(db_path, [*before, *now])
    return db_path


async def summary(
    path: Path, *, pci_bus_ids: tuple[str, ...] = (), codes: tuple[int, ...] = ()
) -> XidWindowSummary:
    async with reading(path) as conn:
        return await summarize_with_changes(
            conn, since_ms=T0, until_ms=T0 + HOUR, pci_bus_ids=pci_bus_ids, codes=codes
        )


async def test_totals_by_code_gpu_and_action_with_the_previous_window_beside(
    filled: Path,
) -> None:
    s = await summary(filled)
    assert (s.total, s.previous_total, s.previous_since_ms) == (8, 3, T0 - HOUR)
    assert s.by_code == (
        CodeTotal("xid", 13, 6, 2, gpus=2),
        CodeTotal("xid", 31, 1, 1, gpus=1),
        CodeTotal("xid", 79, 1, 0, gpus=1),
    )
    assert s.by_gpu == (GpuTotal(A, 5, 2, (13,)), GpuTotal(B, 3, 1, (13, 31, 79)))
    assert s.by_action == (ActionTotal("RESTART_APP", 7, 3), ActionTotal("RESTART_BM", 1, 0))
    (row,) = [r for r in s.rows if r.xid == 13 and r.pci_bus_id == A]
    assert (row.count, row.first_ts_ms, row.last_ts_ms) == (5, T0 + 10_000, T0 + 14_000)


async def test_what_appears_now_and_what_grew_is_listed(filled: Path) -> None:
    s = await summary(filled)
    assert [c.xid for c in s.new_codes] == [79]
    assert s.new_gpus == ()  # B reported before (XID 31)
    assert s.new_pairs == (
        PairChange("xid", 13, B, 1, 0, T0 + 40_000, T0 + 40_000),
        PairChange("xid", 79, B, 1, 0, T0 + 30_000, T0 + 30_000),
    )
    assert s.grown == (PairChange("xid", 13, A, 5, 2, T0 + 10_000, T0 + 14_000),)


async def test_a_gpu_new_to_this_window_is_listed(db_path: Path) -> None:
    await write_all(db_path, [xid(1, 13, A, T0 - 10), xid(2, 48, B, T0 + 10)])
    s = await summary(db_path)
    assert [g.pci_bus_id for g in s.new_gpus] == [B]
    assert [c.xid for c in s.new_codes] == [48]


async def test_counts_that_did_not_grow_are_not_news(db_path: Path) -> None:
    same = [xid(1, 13, A, T0 - 100), xid(2, 13, A, T0 + 100)]
    fewer = [xid(3, 31, B, T0 - 300), xid(4, 31, B, T0 - 200), xid(5, 31, B, T0 + 200)]
    await write_all(db_path, [*same, *fewer])
    s = await summary(db_path)
    assert (s.new_codes, s.new_gpus, s.new_pairs, s.grown) == ((), (), (), ())
    assert [(c.xid, c.count, c.previous_count) for c in s.by_code] == [(13, 1, 1), (31, 1, 2)]


async def test_filters_apply_to_both_windows(filled: Path) -> None:
    s = await summary(filled, pci_bus_ids=(A,))
    assert (s.total, s.previous_total) == (5, 2)
    assert [r.pci_bus_id for r in s.rows] == [A]
    only_79 = await summary(filled, codes=(79,))
    assert (only_79.total, only_79.previous_total, len(only_79.new_codes)) == (1, 0, 1)


@pytest.mark.parametrize(
    ("since_ms", "until_ms", "says"),
    [(T0, T0, "the window is empty"), (T0, T0 + 401 * 24 * HOUR, "at most 400 days")],
)
async def test_an_empty_or_huge_window_is_refused(
    filled: Path, since_ms: int, until_ms: int, says: str
) -> None:
    async with reading(filled) as conn:
        with pytest.raises(InvalidQueryError, match=says):
            await summarize_with_changes(conn, since_ms=since_ms, until_ms=until_ms)
