"""Operator acknowledgements: "I have dealt with this GPU's errors up to now".

An ack is the third way a GPU's fatal state clears (besides a reboot and a GPU reset):
health reports the XIDs before it as cleared, naming who acknowledged them and why. Acks
are written by whoever runs the command (the CLI, an MCP client), not by the daemon, so
:func:`record_ack` opens its own short write connection; WAL and ``busy_timeout`` let it
take turns with the daemon's writer.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from store.db import open_for_writing
from store.errors import InvalidQueryError, StoreError
from store.inventory import resolve_gpus
from store.pci import normalize_pci

__all__ = [
    "ACKS_SCHEMA_VERSION",
    "MAX_REASON_CHARS",
    "MAX_WHO_CHARS",
    "Ack",
    "list_acks",
    "record_ack",
]

ACKS_SCHEMA_VERSION = 3
MAX_REASON_CHARS = 500
MAX_WHO_CHARS = 100
MAX_ACKS = 10_000

_COLUMNS = "id, ts_ms, gpu_uuid, pci_bus_id, who, reason"


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledgement of a GPU (by PCI bus id, which XIDs carry) at ``ts_ms``."""

    id: int
    ts_ms: int
    gpu_uuid: str | None
    pci_bus_id: str
    who: str
    reason: str


async def record_ack(path: Path, selector: str, *, reason: str, who: str, now_ms: int) -> Ack:
    """Acknowledge the GPU ``selector`` names (index, UUID or PCI bus id) as of ``now_ms``.

    A GPU that NVML never listed (seen only in kernel XID lines, e.g. one that fell off the
    bus before the daemon started) is ackable by the PCI bus id its XIDs carry.
    """
    reason, who = reason.strip(), who.strip()
    if not reason:
        raise InvalidQueryError("an acknowledgement needs a reason: say what was done or decided")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidQueryError(
            f"the reason is {len(reason)} characters; keep it to {MAX_REASON_CHARS} "
            "(link to a ticket for the details)"
        )
    if not who or len(who) > MAX_WHO_CHARS:
        raise InvalidQueryError(f"'who' must be a name of 1 to {MAX_WHO_CHARS} characters")
    if not path.exists():
        raise StoreError(f"no xidwatch store at {path}: is --db the daemon's store?")
    conn = await open_for_writing(path)
    try:
        version = await _user_version(conn)
        if version < ACKS_SCHEMA_VERSION:
            raise StoreError(
                f"the store at {path} is at schema version {version}, before acknowledgements "
                f"({ACKS_SCHEMA_VERSION}): restart the daemon (xidwatch run) to migrate it"
            )
        uuid, pci = await _resolve(conn, selector)
        async with conn.execute(
            "INSERT INTO acks (ts_ms, gpu_uuid, pci_bus_id, who, reason) VALUES (?, ?, ?, ?, ?)",
            (now_ms, uuid, pci, who, reason),
        ) as cur:
            row_id = cur.lastrowid
    finally:
        await conn.close()
    assert row_id is not None
    return Ack(row_id, now_ms, uuid, pci, who, reason)


async def list_acks(
    conn: aiosqlite.Connection,
    *,
    pci_bus_id: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[Ack]:
    """Acknowledgements, oldest first, optionally for one GPU and a window.

    A store from before migration 3 has no ``acks`` table (a reader cannot migrate it):
    that reads as no acknowledgements, not as an error.
    """
    clauses: list[str] = []
    args: list[object] = []
    if pci_bus_id is not None:
        try:
            args.append(normalize_pci(pci_bus_id))
        except ValueError as e:
            raise InvalidQueryError(f"{e}; give a PCI bus id like 0000:3b:00.0") from e
        clauses.append("pci_bus_id = ?")
    if since_ms is not None:
        clauses.append("ts_ms >= ?")
        args.append(since_ms)
    if until_ms is not None:
        clauses.append("ts_ms < ?")
        args.append(until_ms)
    where = " AND ".join(clauses) or "1"
    sql = f"SELECT {_COLUMNS} FROM acks WHERE {where} ORDER BY ts_ms, id LIMIT ?"
    try:
        async with conn.execute(sql, [*args, MAX_ACKS]) as cur:
            return [Ack(*tuple(row)) async for row in cur]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


async def _resolve(conn: aiosqlite.Connection, selector: str) -> tuple[str | None, str]:
    """(uuid, PCI bus id) of the GPU ``selector`` names, inventory first, then XID lines."""
    try:
        ((_, gpu),) = await resolve_gpus(conn, [selector])
        return gpu.info.uuid, gpu.info.pci_bus_id
    except InvalidQueryError as not_in_inventory:
        try:
            pci = normalize_pci(str(selector))
        except ValueError:
            raise not_in_inventory from None
        sql = (
            "SELECT gpu_uuid FROM xid_events WHERE pci_bus_id = ? AND kind = 'xid' "
            "ORDER BY ts_ms DESC LIMIT 1"
        )
        async with conn.execute(sql, (pci,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise InvalidQueryError(
                f"{not_in_inventory} No XID was recorded for PCI bus id {pci} either."
            ) from None
        return row[0], pci


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row is not None else 0
