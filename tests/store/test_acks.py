"""Operator acknowledgements: written beside a running writer, read back per GPU and window."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from store.acks import MAX_REASON_CHARS, Ack, list_acks, record_ack
from store.errors import InvalidQueryError, StoreError
from store.flood import FloodPolicy
from store.records import GpuInfo, SampleBatch
from store.schema import MIGRATIONS
from store.writer import StoreWriter
from tests.store.helpers import event, reading, rows, write_all

T0 = 1_800_000_000_000
GPU0 = GpuInfo(uuid="GPU-0a1b2c3d-1111", index=0, name="NVIDIA H100", pci_bus_id="00000000:3B:00.0")
GPU1 = GpuInfo(uuid="GPU-9f8e7d6c-2222", index=1, name="NVIDIA H100", pci_bus_id="00000000:86:00.0")


async def inventory(path: Path) -> None:
    await write_all(path, [SampleBatch(T0, gpus=(GPU0, GPU1))])


async def test_an_ack_is_stored_and_read_back_by_gpu_in_any_spelling(db_path: Path) -> None:
    await inventory(db_path)
    ack = await record_ack(db_path, "1", reason=" replaced the riser ", who="alice", now_ms=T0 + 5)
    await record_ack(db_path, GPU0.uuid, reason="dcgmi diag passed", who="bob", now_ms=T0 + 9)
    assert ack == Ack(ack.id, T0 + 5, GPU1.uuid, GPU1.pci_bus_id, "alice", "replaced the riser")
    async with reading(db_path) as conn:
        everything = await list_acks(conn)
        gpu1 = await list_acks(conn, pci_bus_id="86:00")
        recent = await list_acks(conn, since_ms=T0 + 6)
    assert [a.who for a in everything] == ["alice", "bob"]
    assert gpu1 == [ack]
    assert [a.who for a in recent] == ["bob"]


async def test_a_gpu_seen_only_in_xid_lines_is_ackable_by_its_pci_id(db_path: Path) -> None:
    await write_all(db_path, [SampleBatch(T0, gpus=(GPU0,)), event(1, gpu="00000000:AF:00.0")])
    ack = await record_ack(db_path, "0000:af:00", reason="fell off the bus", who="ops", now_ms=T0)
    assert (ack.pci_bus_id, ack.gpu_uuid) == ("00000000:AF:00.0", None)


@pytest.mark.parametrize(
    ("selector", "says"),
    [("7", r"Known GPUs: 0 .*, 1 "), ("0000:ee:00", "No XID was recorded for PCI bus id")],
)
async def test_an_unknown_gpu_is_refused_saying_what_exists(
    db_path: Path, selector: str, says: str
) -> None:
    await inventory(db_path)
    with pytest.raises(InvalidQueryError, match=says):
        await record_ack(db_path, selector, reason="x", who="ops", now_ms=T0)


@pytest.mark.parametrize(
    ("reason", "who", "says"),
    [
        ("", "ops", "needs a reason"),
        ("   ", "ops", "needs a reason"),
        ("x" * (MAX_REASON_CHARS + 1), "ops", "keep it to 500"),
        ("ok", "", "'who' must be"),
    ],
    ids=["empty", "blank", "long", "nobody"],
)
async def test_a_reason_and_a_name_are_required_and_bounded(
    db_path: Path, reason: str, who: str, says: str
) -> None:
    await inventory(db_path)
    with pytest.raises(InvalidQueryError, match=says):
        await record_ack(db_path, "0", reason=reason, who=who, now_ms=T0)
    assert rows(db_path, "SELECT count(*) FROM acks") == [(0,)]


async def test_an_ack_is_written_while_the_daemon_writer_is_committing(db_path: Path) -> None:
    await inventory(db_path)
    writer = StoreWriter(db_path, flood=FloodPolicy(per_minute=0))
    await writer.open()
    try:
        task = asyncio.create_task(writer.run())
        for n in range(200):
            writer.put(event(n))
        ack = await record_ack(db_path, "0", reason="seen", who="ops", now_ms=T0)
        await writer.close()
        await task
    finally:
        await writer.aclose_connection()
    assert rows(db_path, "SELECT count(*) FROM xid_events") == [(200,)]
    assert rows(db_path, "SELECT id, who FROM acks") == [(ack.id, "ops")]


async def test_a_store_from_before_acks_reads_as_none_and_refuses_new_ones(
    db_path: Path,
) -> None:
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        for version, script in enumerate(MIGRATIONS[:2], start=1):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
    async with reading(db_path) as conn:
        assert await list_acks(conn) == []
    with pytest.raises(StoreError, match="restart the daemon"):
        await record_ack(db_path, "0000:3b:00", reason="x", who="ops", now_ms=T0)


async def test_there_is_no_store_to_ack_in_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no xidwatch store"):
        await record_ack(tmp_path / "none.db", "0", reason="x", who="ops", now_ms=T0)


async def test_per_gpu_ack_lookups_use_the_index(db_path: Path) -> None:
    await inventory(db_path)
    sql = "EXPLAIN QUERY PLAN SELECT * FROM acks WHERE pci_bus_id = ? AND ts_ms >= ?"
    plan = " ".join(str(r[-1]) for r in rows(db_path, sql, ("00000000:3B:00.0", T0)))
    assert "acks_by_gpu" in plan
