"""Synthetic XIDs: stored only with accept_injected, marked injected wherever they are read."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from store.db import open_reader
from store.flood import FloodPolicy
from store.queries import XidFilter, list_xids
from store.records import Checkpoint, SourceCursor, XidEvent
from tests.store.helpers import event, write_all
from tests.waiting import wait_until_async
from watcher.config import DaemonConfig
from watcher.daemon import Daemon, HostFacts
from watcher.kernel.catalog import default_catalog
from watcher.kernel.injection import injected_id, injected_xid_line
from watcher.pipeline import XidPipeline
from watcher.records import LogRecord
from watcher.sim.kmsgdev import MemoryKmsgDevice
from xidwatch.render import event_json, xid_table

USER = 1  # the syslog facility the kernel gives every record user space writes
TAG = "0123456789abcdef0123456789abcdef"
INJECTED = injected_xid_line(13, "0000:3b:00", TAG)
FORGED = "NVRM: Xid (PCI:0000:3b:00): 79, pid=7, name=evil, looks real"


def _record(text: str, pos: int, *, facility: int = USER) -> LogRecord:
    return LogRecord(
        text, "kmsg", received_ms=1_000, ts_ms=1_000, facility=facility,
        cursor=SourceCursor("kmsg:b", pos),
    )  # fmt: skip


def _handle(pipeline_args: dict[str, bool], *records: LogRecord) -> list[XidEvent | Checkpoint]:
    out: list[XidEvent | Checkpoint] = []
    pipeline = XidPipeline(out.append, default_catalog(), **pipeline_args)
    for r in records:
        pipeline.handle(r)
    pipeline.flush()
    return out


def test_the_injected_line_parses_as_the_xid_it_names_and_carries_its_id() -> None:
    (event,) = _handle({"accept_injected": True}, _record(INJECTED, 1))
    assert isinstance(event, XidEvent)
    assert (event.xid, event.pci_bus_id, event.process, event.pid) == (
        13,
        "00000000:3B:00.0",
        "xidwatch-inject",
        None,
    )
    assert event.injected and injected_id(event.raw) == TAG


def test_an_injected_line_is_only_a_checkpoint_without_accept_injected() -> None:
    out = _handle({}, _record(INJECTED, 1))
    assert out == [Checkpoint(SourceCursor("kmsg:b", 1))]


def test_accept_injected_does_not_let_other_user_space_records_through() -> None:
    out = _handle({"accept_injected": True}, _record(FORGED, 1), _record(INJECTED, 2))
    assert [type(o) for o in out] == [XidEvent]
    assert isinstance(out[0], XidEvent) and out[0].injected


def test_a_kernel_xid_is_never_marked_injected() -> None:
    (event,) = _handle({"accept_injected": True}, _record(FORGED, 1, facility=0))
    assert isinstance(event, XidEvent) and not event.injected


def test_an_injected_line_in_a_tailed_file_also_needs_accept_injected() -> None:
    # A syslog file has no facility: the tag alone decides.
    assert _handle({}, _record(INJECTED, 1, facility=0)) == [Checkpoint(SourceCursor("kmsg:b", 1))]


async def _daemon_run(db_path: Path, **config: bool) -> Daemon:
    """Run a daemon over a ring holding a forged and an injected user record, then stop it."""
    device = MemoryKmsgDevice()
    device.write(FORGED, facility=USER)
    device.write(INJECTED, facility=USER)
    device.write("xidwatch-inject: end of synthetic XID", facility=USER)
    daemon = Daemon(
        DaemonConfig(db_path=db_path, nvml=False, checkpoint_interval_s=0.02, **config),  # type: ignore[arg-type]
        host=HostFacts(boot_id="b", boot_wall_ms=lambda: 0, open_kmsg=device.reopen),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await daemon.ready.wait()
        await wait_until_async(lambda: (daemon.writer.watermark("kmsg:b") or -1) >= 2)
    finally:
        stop.set()
        await task
        device.dispose()
    return daemon


@pytest.mark.parametrize(
    ("config", "stored"),
    [
        ({}, []),
        ({"accept_injected": True}, [(13, 1)]),
        ({"kmsg_any_facility": True}, [(79, 0)]),  # tests only: every user record, no tag
        ({"kmsg_any_facility": True, "accept_injected": True}, [(79, 0), (13, 1)]),
    ],
)
async def test_the_daemon_stores_user_space_xids_only_as_configured(
    db_path: Path, config: dict[str, bool], stored: list[tuple[int, int]]
) -> None:
    await _daemon_run(db_path, **config)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT xid, injected FROM xid_events ORDER BY seq").fetchall()
    assert rows == stored


async def test_injected_rows_read_back_marked_in_json_and_the_table(db_path: Path) -> None:
    await _daemon_run(db_path, accept_injected=True)
    conn = await open_reader(db_path)
    try:
        (event,) = (await list_xids(conn, XidFilter(), limit=10)).events
    finally:
        await conn.close()
    assert event.injected
    assert event_json(event, default_catalog())["injected"] is True
    row = xid_table([event], default_catalog()).splitlines()[1]
    assert row.endswith("[injected] Graphics engine exception")


async def test_an_injected_xid_keeps_its_own_row_during_a_flood(db_path: Path) -> None:
    flood = FloodPolicy(burst=2, per_minute=1)
    events = [event(n, ts_ms=1_700_000_000_000 + n) for n in range(10)]
    injected = event(100, ts_ms=1_700_000_000_005, key=None)
    events.insert(5, replace(injected, injected=True))
    await write_all(db_path, events, flood=flood)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT burst, injected, count FROM xid_events ORDER BY id").fetchall()
    # Two real events pass, the injected one is stored apart, the other eight fold.
    assert rows == [(0, 0, 1), (0, 0, 1), (0, 1, 1), (1, 0, 8)]
