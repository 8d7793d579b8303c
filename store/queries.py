"""Read queries over ``xid_events``: filtered listing with cursor pagination, and summaries.

Counts are exact: a burst row contributes its ``count``, not 1. Every query is
parameterized and bounded by ``limit``; the hot paths use the indexes from migration 1
(tests check the plans with ``EXPLAIN QUERY PLAN``).
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields

import aiosqlite

from store.errors import InvalidQueryError
from store.flood import MAX_BURST_SPAN_MS
from store.records import EventKind, PodRef, StoredXid, XidPage, XidSummary, XidSummaryRow
from store.windows import check_window

__all__ = [
    "MAX_PAGE",
    "XidFilter",
    "decode_cursor",
    "encode_cursor",
    "get_xid",
    "list_xids",
    "summarize_xids",
]

MAX_PAGE = 1000

# StoredXid fields are the table columns, in order; its ``pod`` is three columns.
_FIELDS = tuple(f.name for f in fields(StoredXid) if f.name != "pod")
_COLUMNS = ", ".join((*_FIELDS, "namespace", "pod", "container"))


@dataclass(frozen=True, slots=True)
class XidFilter:
    """Filters shared by listing and summary; None means no constraint.

    A row matches a window if the events it stands for overlap it (a burst row that began
    before ``since_ms`` but was still growing inside the window is included). A window
    whose ``since_ms`` is not before its ``until_ms`` is an InvalidQueryError that says so.
    """

    since_ms: int | None = None
    until_ms: int | None = None
    pci_bus_ids: Sequence[str] = ()
    codes: Sequence[int] = ()
    actions: Sequence[str] = ()
    kind: EventKind | None = None

    def __post_init__(self) -> None:
        check_window(self.since_ms, self.until_ms)

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if self.since_ms is not None:
            # Bursts span at most MAX_BURST_SPAN_MS, so the ts_ms index bounds the scan.
            clauses.append("ts_ms >= ? AND last_ts_ms >= ?")
            args += [self.since_ms - MAX_BURST_SPAN_MS, self.since_ms]
        if self.until_ms is not None:
            clauses.append("ts_ms < ?")
            args.append(self.until_ms)
        for column, values in (
            ("pci_bus_id", self.pci_bus_ids),
            ("xid", self.codes),
            ("action", self.actions),
        ):
            if values:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                args.extend(values)
        if self.kind is not None:
            clauses.append("kind = ?")
            args.append(self.kind)
        return (" AND ".join(clauses) or "1"), args


def encode_cursor(ts_ms: int, row_id: int) -> str:
    """An opaque cursor pointing just past the row (ts_ms, row_id) in newest-first order."""
    return base64.urlsafe_b64encode(f"{ts_ms}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """Inverse of :func:`encode_cursor`; raises InvalidQueryError on anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        ts_text, id_text = base64.urlsafe_b64decode(padded.encode("ascii")).decode().split(":")
        return int(ts_text), int(id_text)
    except (ValueError, UnicodeError, binascii.Error) as e:
        raise InvalidQueryError(
            "bad cursor: pass the next_cursor value from the previous page unchanged, "
            "or omit it to start from the newest event"
        ) from e


async def list_xids(
    conn: aiosqlite.Connection,
    filters: XidFilter,
    *,
    limit: int = 100,
    cursor: str | None = None,
) -> XidPage:
    """Events matching ``filters``, newest first, at most ``limit`` (1..MAX_PAGE)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidQueryError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    where, args = filters.where()
    if cursor is not None:
        ts_ms, row_id = decode_cursor(cursor)
        where += " AND (ts_ms, id) < (?, ?)"
        args += [ts_ms, row_id]
    sql = f"SELECT {_COLUMNS} FROM xid_events WHERE {where} ORDER BY ts_ms DESC, id DESC LIMIT ?"
    conn.row_factory = sqlite3.Row
    async with conn.execute(sql, [*args, limit + 1]) as cur:
        rows = [_stored(r) async for r in cur]
    page = tuple(rows[:limit])
    more = len(rows) > limit
    next_cursor = encode_cursor(page[-1].ts_ms, page[-1].id) if more and page else None
    return XidPage(page, next_cursor)


async def summarize_xids(conn: aiosqlite.Connection, filters: XidFilter) -> XidSummary:
    """Exact counts per (kind, code, GPU, action) with first and last seen, most first."""
    where, args = filters.where()
    sql = (
        "SELECT kind, xid, pci_bus_id, action, sum(count), count(*), min(ts_ms), "
        f"max(last_ts_ms) FROM xid_events WHERE {where} "
        "GROUP BY kind, xid, pci_bus_id, action ORDER BY sum(count) DESC, xid"
    )
    async with conn.execute(sql, args) as cur:
        rows = tuple(
            [
                XidSummaryRow(kind, int(xid), pci, action, int(n), int(nrows), int(t0), int(t1))
                async for kind, xid, pci, action, n, nrows, t0, t1 in cur
            ]
        )
    return XidSummary(filters.since_ms, filters.until_ms, sum(r.count for r in rows), rows)


async def get_xid(conn: aiosqlite.Connection, xid_id: int) -> StoredXid | None:
    """The stored event with this ``id`` (as listings show it), or None."""
    conn.row_factory = sqlite3.Row
    async with conn.execute(f"SELECT {_COLUMNS} FROM xid_events WHERE id = ?", (xid_id,)) as cur:
        row = await cur.fetchone()
    return None if row is None else _stored(row)


def _stored(row: sqlite3.Row) -> StoredXid:
    """Build a StoredXid from a row selected with ``_COLUMNS`` (same order as the fields)."""
    *columns, namespace, pod, container = tuple(row)
    values = dict(zip(_FIELDS, columns, strict=True))
    values["burst"] = bool(values["burst"])
    values["injected"] = bool(values["injected"])
    if namespace is not None and pod is not None:
        values["pod"] = PodRef(namespace, pod, container)
    return StoredXid(**values)
