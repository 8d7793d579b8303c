"""An XID summary for a window next to the window before it: totals, and what is new.

"What changed?" is the first question on call: a code never seen on this node, a GPU that
started reporting, a count that grew. The previous window has the same length and ends
where this one starts. Counts follow :func:`store.queries.summarize_xids` (exact, bursts
included; a burst straddling the boundary counts in both windows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiosqlite

from store.errors import InvalidQueryError
from store.queries import XidFilter, summarize_xids
from store.records import EventKind, XidSummary, XidSummaryRow

__all__ = [
    "MAX_SUMMARY_WINDOW_MS",
    "ActionTotal",
    "CodeTotal",
    "GpuTotal",
    "PairChange",
    "XidWindowSummary",
    "compare_windows",
    "summarize_with_changes",
]

MAX_SUMMARY_WINDOW_MS = 400 * 86_400_000

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CodeTotal:
    """Events of one code in the window and the one before; ``gpus`` reported it now."""

    kind: EventKind
    xid: int
    count: int
    previous_count: int
    gpus: int


@dataclass(frozen=True, slots=True)
class GpuTotal:
    """Events on one GPU (None: lines that named no GPU); ``codes`` seen on it now."""

    pci_bus_id: str | None
    count: int
    previous_count: int
    codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ActionTotal:
    """Events whose catalog action is ``action``, now and before."""

    action: str
    count: int
    previous_count: int


@dataclass(frozen=True, slots=True)
class PairChange:
    """A (code, GPU) whose count is new (``previous_count`` 0) or grew since the last window."""

    kind: EventKind
    xid: int
    pci_bus_id: str | None
    count: int
    previous_count: int
    first_ts_ms: int
    last_ts_ms: int


@dataclass(frozen=True, slots=True)
class XidWindowSummary:
    """Counts for ``[since_ms, until_ms)`` compared with ``[previous_since_ms, since_ms)``.

    Totals are most first. ``new_*`` list what appears now and not at all before;
    ``grown`` lists (code, GPU) pairs seen in both windows whose count went up.
    """

    since_ms: int
    until_ms: int
    previous_since_ms: int
    total: int
    previous_total: int
    rows: tuple[XidSummaryRow, ...]
    by_code: tuple[CodeTotal, ...]
    by_gpu: tuple[GpuTotal, ...]
    by_action: tuple[ActionTotal, ...]
    new_codes: tuple[CodeTotal, ...]
    new_gpus: tuple[GpuTotal, ...]
    new_pairs: tuple[PairChange, ...]
    grown: tuple[PairChange, ...]


async def summarize_with_changes(
    conn: aiosqlite.Connection,
    *,
    since_ms: int,
    until_ms: int,
    pci_bus_ids: Sequence[str] = (),
    codes: Sequence[int] = (),
    actions: Sequence[str] = (),
    kind: EventKind | None = None,
) -> XidWindowSummary:
    """Summarize ``[since_ms, until_ms)`` and compare it with the window of equal length before."""
    length = until_ms - since_ms
    if length <= 0:
        raise InvalidQueryError("the window is empty: 'since' must be before 'until'")
    if length > MAX_SUMMARY_WINDOW_MS:
        raise InvalidQueryError(
            f"the window is {length / 86_400_000:.0f} days; at most "
            f"{MAX_SUMMARY_WINDOW_MS // 86_400_000} days can be compared"
        )

    def window(start: int, end: int) -> XidFilter:
        return XidFilter(start, end, pci_bus_ids, codes, actions, kind)

    current = await summarize_xids(conn, window(since_ms, until_ms))
    previous = await summarize_xids(conn, window(since_ms - length, since_ms))
    return compare_windows(current, previous, since_ms=since_ms, until_ms=until_ms)


def compare_windows(
    current: XidSummary, previous: XidSummary, *, since_ms: int, until_ms: int
) -> XidWindowSummary:
    """The comparison itself, pure: ``previous`` is the window just before ``current``."""
    now_codes = _by_code(current.rows)
    before_codes = _by_code(previous.rows)
    now_gpus, before_gpus = _by_gpu(current.rows), _by_gpu(previous.rows)
    now_actions, before_actions = _by_action(current.rows), _by_action(previous.rows)
    by_code = tuple(
        CodeTotal(k, x, n, before_codes.get((k, x), (0, set()))[0], len(gpus))
        for (k, x), (n, gpus) in _most_first(now_codes)
    )
    by_gpu = tuple(
        GpuTotal(pci, n, before_gpus.get(pci, (0, set()))[0], tuple(sorted(found)))
        for pci, (n, found) in _most_first(now_gpus)
    )
    by_action = tuple(
        ActionTotal(a, n, before_actions.get(a, 0))
        for a, n in sorted(now_actions.items(), key=lambda i: (-i[1], i[0]))
    )
    before_pairs = _by_pair(previous.rows)
    pairs = [
        PairChange(k, x, pci, n, before_pairs.get((k, x, pci), (0, 0, 0))[0], t0, t1)
        for (k, x, pci), (n, t0, t1) in _by_pair(current.rows).items()
    ]
    pairs.sort(key=lambda p: (-(p.count - p.previous_count), p.xid, p.pci_bus_id or ""))
    return XidWindowSummary(
        since_ms=since_ms,
        until_ms=until_ms,
        previous_since_ms=since_ms - (until_ms - since_ms),
        total=current.total,
        previous_total=previous.total,
        rows=current.rows,
        by_code=by_code,
        by_gpu=by_gpu,
        by_action=by_action,
        new_codes=tuple(c for c in by_code if (c.kind, c.xid) not in before_codes),
        new_gpus=tuple(g for g in by_gpu if g.pci_bus_id not in before_gpus),
        new_pairs=tuple(p for p in pairs if p.previous_count == 0),
        grown=tuple(p for p in pairs if 0 < p.previous_count < p.count),
    )


def _by_code(rows: Sequence[XidSummaryRow]) -> dict[tuple[EventKind, int], tuple[int, set[str]]]:
    out: dict[tuple[EventKind, int], tuple[int, set[str]]] = {}
    for r in rows:
        n, gpus = out.get((r.kind, r.xid), (0, set()))
        out[(r.kind, r.xid)] = (n + r.count, gpus | ({r.pci_bus_id} if r.pci_bus_id else set()))
    return out


def _by_gpu(rows: Sequence[XidSummaryRow]) -> dict[str | None, tuple[int, set[int]]]:
    out: dict[str | None, tuple[int, set[int]]] = {}
    for r in rows:
        n, found = out.get(r.pci_bus_id, (0, set()))
        out[r.pci_bus_id] = (n + r.count, found | {r.xid})
    return out


def _by_action(rows: Sequence[XidSummaryRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.action] = out.get(r.action, 0) + r.count
    return out


def _by_pair(
    rows: Sequence[XidSummaryRow],
) -> dict[tuple[EventKind, int, str | None], tuple[int, int, int]]:
    """(kind, code, GPU) -> (count, first, last); the action column is folded in."""
    out: dict[tuple[EventKind, int, str | None], tuple[int, int, int]] = {}
    for r in rows:
        key = (r.kind, r.xid, r.pci_bus_id)
        n, t0, t1 = out.get(key, (0, r.first_ts_ms, r.last_ts_ms))
        out[key] = (n + r.count, min(t0, r.first_ts_ms), max(t1, r.last_ts_ms))
    return out


def _most_first(totals: dict[K, tuple[int, V]]) -> list[tuple[K, tuple[int, V]]]:
    return sorted(totals.items(), key=lambda item: (-item[1][0], str(item[0])))
