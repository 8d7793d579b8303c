"""NVML XID events: delivered from a waiting thread, merged with the kernel's line or kept."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from store.records import Checkpoint, SourceCursor, XidEvent
from tests.waiting import wait_until_async
from watcher.kernel.catalog import UNKNOWN_ACTION, default_catalog
from watcher.nvml.device import NvmlDevice, init_nvml
from watcher.nvml.events import NvmlXid, NvmlXidSource
from watcher.pipeline import NVML_HOLD_MS, XidPipeline
from watcher.records import LogRecord
from watcher.sim import SimulatedFleet, SimulatedNvml

PCI = "00000000:3B:00.0"
UUID = "GPU-3b"


@pytest.fixture
def fleet() -> Iterator[SimulatedFleet]:
    fleet = SimulatedFleet.build(2, seed=3)
    with SimulatedNvml(fleet):
        init_nvml()
        yield fleet


def devices(fleet: SimulatedFleet) -> list[NvmlDevice]:
    out = []
    for gpu in fleet.gpus:
        device = NvmlDevice.by_index(gpu.index)
        device.discover(driver_version=None, cuda_version=None)
        out.append(device)
    return out


async def receive(
    fleet: SimulatedFleet, inject: list[tuple[int, int, int | None]]
) -> list[NvmlXid]:
    got: list[NvmlXid] = []
    source = NvmlXidSource(devices(fleet), got.append, wait_ms=20)
    task = asyncio.create_task(source.run())
    async with asyncio.timeout(5):
        await source.started.wait()  # registered: an XID from now on is delivered
    for gpu, code, nvml_code in inject:
        fleet.gpus[gpu].inject_xid(code, nvml_code=nvml_code)
    await wait_until_async(lambda: len(got) >= len(inject), 5)
    source.stop()
    await task
    return got


async def test_an_injected_xid_arrives_with_its_gpu_and_code(fleet: SimulatedFleet) -> None:
    (event,) = await receive(fleet, [(1, 48, None)])
    assert (event.code, event.pci_bus_id, event.gpu_uuid) == (
        48,
        fleet.gpus[1].pci_bus_id,
        fleet.gpus[1].uuid,
    )
    assert event.code_known


async def test_an_unknown_code_from_the_driver_is_kept_as_unknown(fleet: SimulatedFleet) -> None:
    (event,) = await receive(fleet, [(0, 13, 999)])
    assert event.code == 999 and not event.code_known


async def test_stopping_the_source_ends_its_thread_promptly(fleet: SimulatedFleet) -> None:
    source = NvmlXidSource(devices(fleet), lambda e: None, wait_ms=20)
    task = asyncio.create_task(source.run())
    async with asyncio.timeout(5):
        await source.started.wait()  # its thread is waiting in NVML
    source.stop()
    async with asyncio.timeout(2):
        await task


async def test_an_xid_raised_just_before_stop_is_still_delivered(fleet: SimulatedFleet) -> None:
    got: list[NvmlXid] = []
    source = NvmlXidSource(devices(fleet), got.append, wait_ms=20)
    task = asyncio.create_task(source.run())
    async with asyncio.timeout(5):
        await source.started.wait()
    fleet.gpus[0].inject_xid(31)
    source.stop()  # at once: the XID is queued in NVML, maybe not yet taken by the thread
    async with asyncio.timeout(5):
        await task
    assert [e.code for e in got] == [31]


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def pipeline(*, hold: bool = True) -> tuple[list[XidEvent | Checkpoint], XidPipeline, Clock]:
    out: list[XidEvent | Checkpoint] = []
    clock = Clock()
    p = XidPipeline(out.append, default_catalog(), node="n", now_ms=clock, hold_nvml=hold)
    p.gpu_uuids = {PCI: UUID}
    return out, p, clock


def kernel_line(code: int, ts_ms: int) -> LogRecord:
    text = f"NVRM: Xid (PCI:0000:3b:00): {code}, pid=7, name=python3, test"
    return LogRecord(text, "kmsg", ts_ms, ts_ms=ts_ms, cursor=SourceCursor("kmsg:b", ts_ms))


def events(out: list[XidEvent | Checkpoint]) -> list[XidEvent]:
    return [e for e in out if isinstance(e, XidEvent)]


def test_nvml_after_the_kernel_line_is_merged_into_it() -> None:
    out, p, clock = pipeline()
    p.handle(kernel_line(48, clock.ms))
    p.handle_nvml(NvmlXid(PCI, UUID, 48, clock.ms + 40))
    clock.ms += NVML_HOLD_MS + 1
    p.flush()
    (event,) = events(out)
    assert (event.source, event.gpu_uuid) == ("kmsg", UUID)
    assert p.stats.nvml_merged == 1 and p.stats.nvml_only == 0


def test_nvml_before_the_kernel_line_waits_for_it_and_is_merged() -> None:
    out, p, clock = pipeline()
    p.handle_nvml(NvmlXid(PCI, UUID, 48, clock.ms))
    p.flush()
    assert events(out) == []  # held
    p.handle(kernel_line(48, clock.ms + 300))
    clock.ms += NVML_HOLD_MS + 1
    p.flush()
    assert [e.source for e in events(out)] == ["kmsg"]
    assert p.stats.nvml_merged == 1


def test_nvml_alone_is_stored_after_the_hold_as_its_own_witness() -> None:
    out, p, clock = pipeline()
    p.handle_nvml(NvmlXid(PCI, UUID, 79, clock.ms))
    clock.ms += NVML_HOLD_MS + 1
    p.flush()
    (event,) = events(out)
    assert (event.source, event.xid, event.action, event.gpu_uuid) == (
        "nvml",
        79,
        "RESTART_BM",
        UUID,
    )
    assert "no kernel log line" in event.message


def test_a_different_code_on_the_same_gpu_is_not_merged() -> None:
    out, p, clock = pipeline()
    p.handle(kernel_line(13, clock.ms))
    p.handle_nvml(NvmlXid(PCI, UUID, 48, clock.ms))
    p.flush(final=True)
    assert sorted((e.source, e.xid) for e in events(out)) == [("kmsg", 13), ("nvml", 48)]


def test_an_unknown_nvml_code_merges_with_any_kernel_xid_on_that_gpu() -> None:
    out, p, clock = pipeline()
    p.handle(kernel_line(31, clock.ms))
    p.handle_nvml(NvmlXid(PCI, UUID, 999, clock.ms + 5))
    p.flush(final=True)
    assert [(e.source, e.xid) for e in events(out)] == [("kmsg", 31)]


def test_an_unknown_nvml_code_alone_is_stored_as_unknown_never_as_a_real_code() -> None:
    out, p, _ = pipeline(hold=False)
    p.handle_nvml(NvmlXid(PCI, UUID, 999, 5))
    p.handle_nvml(NvmlXid(PCI, UUID, 0, 6))
    stored = events(out)
    assert [(e.xid, e.action) for e in stored] == [(999, UNKNOWN_ACTION), (0, UNKNOWN_ACTION)]
    assert all("without its code" in e.message for e in stored)


def test_without_a_kernel_log_nvml_xids_are_stored_at_once() -> None:
    out, p, _ = pipeline(hold=False)
    p.handle_nvml(NvmlXid(PCI, UUID, 48, 5))
    assert [e.source for e in events(out)] == ["nvml"]


def test_kernel_xids_carry_the_gpu_uuid_from_nvml_discovery() -> None:
    out, p, clock = pipeline()
    p.handle(kernel_line(13, clock.ms))
    assert events(out)[0].gpu_uuid == UUID
