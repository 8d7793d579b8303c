"""GPU inventory queries: which GPUs the store knows, how to name one, and its latest readings.

A GPU can be named the ways an SRE has at hand: its NVML index (``3``), its UUID
(``GPU-8f…``, a unique prefix is enough) or its PCI bus id in any common spelling.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from store.errors import InvalidQueryError
from store.metrics import RAW_COLUMNS
from store.pci import normalize_pci
from store.records import GpuInfo, GpuSample, InventoryGpu
from store.samples import sample_from_row

__all__ = ["LatestSample", "latest_samples", "list_gpus", "resolve_gpus"]

_INFO_COLUMNS = (
    "uuid, idx, name, pci_bus_id, serial, driver_version, cuda_version, slowdown_temp_c, "
    "shutdown_temp_c, power_limit_default_w, power_limit_min_w, power_limit_max_w, "
    "memory_total_bytes, ecc_enabled, mig_enabled"
)
MAX_GPU_SELECTORS = 64


@dataclass(frozen=True, slots=True)
class LatestSample:
    """A GPU and its newest stored sample (None if it was never sampled)."""

    gpu: InventoryGpu
    sample: GpuSample | None


async def list_gpus(conn: aiosqlite.Connection) -> list[InventoryGpu]:
    """Every GPU the store has seen, by index then UUID."""
    rows = await _select(conn, "1", [])
    return [gpu for _, gpu in rows]


async def resolve_gpus(
    conn: aiosqlite.Connection, selectors: Sequence[str | int]
) -> list[tuple[int, InventoryGpu]]:
    """The (row id, GPU) pairs ``selectors`` name; all GPUs when there are none.

    Raises InvalidQueryError naming the selector that matched nothing and the GPUs that exist.
    """
    known = await _select(conn, "1", [])
    if not selectors:
        return known
    if len(selectors) > MAX_GPU_SELECTORS:
        raise InvalidQueryError(f"at most {MAX_GPU_SELECTORS} GPUs per query")
    chosen: dict[int, InventoryGpu] = {}
    for selector in selectors:
        matches = [(i, g) for i, g in known if _matches(g.info, selector)]
        if len(matches) != 1:
            listing = ", ".join(f"{g.info.index} ({g.info.pci_bus_id})" for _, g in known)
            why = "matches several GPUs" if matches else "matches no GPU"
            raise InvalidQueryError(
                f"GPU {selector!r} {why}; give an index, UUID or PCI bus id. "
                f"Known GPUs: {listing or 'none (nothing sampled yet)'}"
            )
        chosen.setdefault(*matches[0])
    return sorted(chosen.items(), key=lambda item: (item[1].info.index, item[1].info.uuid))


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
    if text.isdigit():
        return info.index == int(text)
    if text.upper().startswith("GPU-"):
        return len(text) >= 8 and info.uuid.lower().startswith(text.lower())
    try:
        return normalize_pci(text) == info.pci_bus_id
    except ValueError:
        return False


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
    info = GpuInfo(
        uuid=r["uuid"],
        index=r["idx"],
        name=r["name"],
        pci_bus_id=r["pci_bus_id"],
        serial=r["serial"],
        driver_version=r["driver_version"],
        cuda_version=r["cuda_version"],
        slowdown_temp_c=r["slowdown_temp_c"],
        shutdown_temp_c=r["shutdown_temp_c"],
        power_limit_default_w=r["power_limit_default_w"],
        power_limit_min_w=r["power_limit_min_w"],
        power_limit_max_w=r["power_limit_max_w"],
        memory_total_bytes=r["memory_total_bytes"],
        ecc_enabled=None if r["ecc_enabled"] is None else bool(r["ecc_enabled"]),
        mig_enabled=None if r["mig_enabled"] is None else bool(r["mig_enabled"]),
    )
    return InventoryGpu(info, r["first_seen_ms"], r["last_seen_ms"], r["lost_since_ms"])
