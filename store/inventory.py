"""GPU inventory queries: which GPUs the store knows, how to name one, and its latest readings.

A GPU can be named the ways an SRE has at hand: its NVML index (``3``, ASCII digits), its
UUID (``GPU-8f…``, a unique prefix is enough) or its PCI bus id in any common spelling.
:func:`select_gpus` is the one resolver: it also knows GPUs seen only in kernel XID lines
(NVML never listed them), by PCI bus id; :func:`resolve_gpus` is the same for readers that
need the GPU's inventory row (samples, processes) and says so for an XID-only GPU.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args, get_type_hints

import aiosqlite

from store.errors import InvalidQueryError
from store.pci import normalize_pci
from store.records import GpuInfo, GpuSample, InventoryGpu
from store.samples import GPU_INFO_COLUMNS, sample_from_row
from store.telemetry import RAW_COLUMNS

__all__ = [
    "GpuSelection",
    "LatestSample",
    "latest_samples",
    "list_gpus",
    "resolve_gpus",
    "select_gpus",
    "stored_node_name",
]

# The gpus table has a column per GpuInfo field, named alike but for ``index`` (an SQL word).
_COLUMN = GPU_INFO_COLUMNS
_INFO_COLUMNS = ", ".join(_COLUMN.values())
# SQLite keeps booleans as 0/1.
_BOOLEANS = frozenset(n for n, t in get_type_hints(GpuInfo).items() if bool in get_args(t))
MAX_GPU_SELECTORS = 64
_MAX_LISTED = 32  # GPUs named in an error's "Known GPUs"
_MAX_XID_ONLY = 1024  # distinct PCI ids read from xid_events (a loose index scan)


@dataclass(frozen=True, slots=True)
class LatestSample:
    """A GPU and its newest stored sample (None if it was never sampled)."""

    gpu: InventoryGpu
    sample: GpuSample | None


async def list_gpus(conn: aiosqlite.Connection) -> list[InventoryGpu]:
    """Every GPU the store has seen, by index then UUID."""
    rows = await _select(conn, "1", [])
    return [gpu for _, gpu in rows]


@dataclass(frozen=True, slots=True)
class GpuSelection:
    """The GPUs some selectors name: inventory GPUs (with their row ids), by index then UUID,
    and PCI bus ids known only from XID lines (NVML never listed a GPU there)."""

    gpus: tuple[tuple[int, InventoryGpu], ...]
    xid_only: tuple[str, ...] = ()

    @property
    def pci_bus_ids(self) -> tuple[str, ...]:
        """Every selected PCI bus id in NVML's spelling, once each: filter XIDs by these."""
        return tuple(dict.fromkeys([*(g.info.pci_bus_id for _, g in self.gpus), *self.xid_only]))

    @property
    def uuids(self) -> tuple[str, ...]:
        """The UUIDs of the selected inventory GPUs (XID-only GPUs have none known)."""
        return tuple(g.info.uuid for _, g in self.gpus)


async def select_gpus(conn: aiosqlite.Connection, selectors: Sequence[str | int]) -> GpuSelection:
    """The GPUs ``selectors`` name; every GPU, XID-only ones included, when there are none.

    A selector is an index (ASCII digits only), a UUID or a unique UUID prefix (``GPU-`` and
    at least 4 more characters), or a PCI bus id in any spelling; a PCI id no inventory GPU
    has names the XID-only GPU there when some XID line carried it. An index or PCI id that
    several GPUs carried in the same slot (one replaced the other) selects them all. Raises
    InvalidQueryError naming the selector, why (matches no GPU, or several) and the GPUs
    that exist.
    """
    return await _selection(conn, selectors, one_each=False)


async def _selection(
    conn: aiosqlite.Connection, selectors: Sequence[str | int], *, one_each: bool
) -> GpuSelection:
    known = await _select(conn, "1", [])
    if not selectors:
        return GpuSelection(tuple(known), tuple(await _xid_only_pcis(conn)))
    if len(selectors) > MAX_GPU_SELECTORS:
        raise InvalidQueryError(f"at most {MAX_GPU_SELECTORS} GPUs per query")
    chosen: dict[int, InventoryGpu] = {}
    xid_only: dict[str, None] = {}
    for selector in selectors:
        matches = [(i, g) for i, g in known if _matches(g.info, selector)]
        if len(matches) == 1 or (matches and not one_each and _one_slot(selector, matches)):
            for gpu_id, gpu in matches:
                chosen.setdefault(gpu_id, gpu)
            continue
        pci = None if matches else _pci_of(selector)
        if pci is not None and await _in_xid_lines(conn, pci):
            xid_only[pci] = None
            continue
        why = "matches several GPUs" if matches else "matches no GPU"
        raise InvalidQueryError(f"GPU {selector!r} {why}; {await _naming_help(conn, known)}")
    gpus = sorted(chosen.items(), key=lambda item: (item[1].info.index, item[1].info.uuid))
    return GpuSelection(tuple(gpus), tuple(xid_only))


async def resolve_gpus(
    conn: aiosqlite.Connection, selectors: Sequence[str | int]
) -> list[tuple[int, InventoryGpu]]:
    """The (row id, GPU) pairs ``selectors`` name, as :func:`select_gpus` resolves them; all
    inventory GPUs when there are none.

    For readers of what only an inventory GPU has (samples, processes, limits): each
    selector names exactly one GPU, and a GPU known only from XID lines is an
    InvalidQueryError that says so.
    """
    if not selectors:
        return await _select(conn, "1", [])
    selection = await _selection(conn, selectors, one_each=True)
    if selection.xid_only:
        pci = selection.xid_only[0]
        raise InvalidQueryError(
            f"GPU {pci} is known only from kernel XID lines (NVML never listed it), so the "
            "store has no samples, processes or limits for it; its XID events and health "
            "are there to read"
        )
    return list(selection.gpus)


async def stored_node_name(conn: aiosqlite.Connection) -> str | None:
    """The node name the newest XID events were recorded with (the daemon's), or None.

    Reads at most the newest 1000 events (by the time index), so a store whose events carry
    no node name answers quickly.
    """
    sql = (
        "SELECT node FROM (SELECT node, ts_ms FROM xid_events ORDER BY ts_ms DESC LIMIT 1000) "
        "WHERE node != '' ORDER BY ts_ms DESC LIMIT 1"
    )
    async with conn.execute(sql) as cur:
        row = await cur.fetchone()
    return None if row is None else str(row[0])


async def latest_samples(
    conn: aiosqlite.Connection, selectors: Sequence[str | int] = ()
) -> list[LatestSample]:
    """The newest sample of each selected GPU (all by default); one primary-key probe each."""
    out: list[LatestSample] = []
    columns = ", ".join(c for c, _ in RAW_COLUMNS)
    for gpu_id, gpu in await resolve_gpus(conn, selectors):
        sql = f"SELECT ts, {columns} FROM samples WHERE gpu = ? ORDER BY ts DESC LIMIT 1"
        async with conn.execute(sql, (gpu_id,)) as cur:
            row = await cur.fetchone()
        sample = sample_from_row(gpu.info.uuid, tuple(row)) if row is not None else None
        out.append(LatestSample(gpu, sample))
    return out


def _matches(info: GpuInfo, selector: str | int) -> bool:
    text = str(selector).strip()
    if _is_index(text):
        return info.index == int(text)
    if text.upper().startswith("GPU-"):
        return len(text) >= 8 and info.uuid.lower().startswith(text.lower())
    return _pci_of(text) == info.pci_bus_id


def _is_index(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts other scripts' digits (U+0661)."""
    return text.isascii() and text.isdigit()


def _one_slot(selector: str | int, matches: Sequence[tuple[int, InventoryGpu]]) -> bool:
    """An index or PCI id that GPUs replacing one another in one slot all carried."""
    if str(selector).strip().upper().startswith("GPU-"):
        return False  # a UUID prefix matching two GPUs is ambiguous, never a slot
    return len({g.info.pci_bus_id for _, g in matches}) == 1


def _pci_of(selector: str | int) -> str | None:
    text = str(selector).strip()
    if _is_index(text) or text.upper().startswith("GPU-"):
        return None
    try:
        return normalize_pci(text)
    except ValueError:
        return None


async def _in_xid_lines(conn: aiosqlite.Connection, pci: str) -> bool:
    sql = "SELECT 1 FROM xid_events WHERE pci_bus_id = ? LIMIT 1"  # xid_events_by_gpu
    async with conn.execute(sql, (pci,)) as cur:
        return await cur.fetchone() is not None


async def _xid_only_pcis(conn: aiosqlite.Connection) -> list[str]:
    """PCI bus ids in XID lines that no inventory GPU has, sorted.

    ``SELECT DISTINCT pci_bus_id FROM xid_events`` as a loose index scan: one index probe
    per distinct id, not a walk over every event.
    """
    sql = (
        "WITH RECURSIVE seen(pci) AS ("
        " SELECT min(pci_bus_id) FROM xid_events"
        " UNION ALL"
        " SELECT (SELECT min(pci_bus_id) FROM xid_events WHERE pci_bus_id > seen.pci)"
        f" FROM seen WHERE seen.pci IS NOT NULL LIMIT {_MAX_XID_ONLY})"
        " SELECT pci FROM seen WHERE pci IS NOT NULL"
        " AND pci NOT IN (SELECT pci_bus_id FROM gpus) ORDER BY pci"
    )
    async with conn.execute(sql) as cur:
        return [str(pci) async for (pci,) in cur]


async def _naming_help(
    conn: aiosqlite.Connection, known: Sequence[tuple[int, InventoryGpu]]
) -> str:
    """How to name a GPU, and the GPUs there are to name: the second half of every error."""
    listing = [
        f"{g.info.index} ({g.info.pci_bus_id}{', lost' if g.lost_since_ms is not None else ''})"
        for _, g in known
    ]
    listing += [f"{pci} (seen only in XID lines)" for pci in await _xid_only_pcis(conn)]
    more = len(listing) - _MAX_LISTED
    shown = ", ".join(listing[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")
    return (
        "name a GPU by index (0), UUID or unique prefix (GPU-8f3a…), or PCI bus id "
        f"(0000:3b:00.0). Known GPUs: {shown or 'none (nothing sampled yet)'}"
    )


async def _select(
    conn: aiosqlite.Connection, where: str, args: list[object]
) -> list[tuple[int, InventoryGpu]]:
    sql = (
        f"SELECT id, {_INFO_COLUMNS}, first_seen_ms, last_seen_ms, lost_since_ms "
        f"FROM gpus WHERE {where} ORDER BY idx, uuid"
    )
    conn.row_factory = sqlite3.Row
    async with conn.execute(sql, args) as cur:
        rows = list(await cur.fetchall())
    return [(int(r["id"]), _inventory(r)) for r in rows]


def _inventory(r: sqlite3.Row) -> InventoryGpu:
    values = {name: r[column] for name, column in _COLUMN.items()}
    for name in _BOOLEANS:
        values[name] = None if values[name] is None else bool(values[name])
    info = GpuInfo(**values)
    return InventoryGpu(info, r["first_seen_ms"], r["last_seen_ms"], r["lost_since_ms"])
