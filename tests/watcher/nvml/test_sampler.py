"""The NVML sampler over simulated GPUs, through the real pynvml bindings."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import structlog

from store.records import GpuSample, GpuStateEvent, SampleBatch
from tests.waiting import wait_until_async
from watcher.nvml.device import NvmlDevice, NvmlUnavailableError
from watcher.nvml.sampler import NvmlSampler
from watcher.sim import SimulatedFleet, SimulatedNvml

T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        self.ms += 1000
        return self.ms


@pytest.fixture
def h100() -> Iterator[SimulatedFleet]:
    fleet = SimulatedFleet.build(2, "H100-80GB", seed=1)
    with SimulatedNvml(fleet):
        yield fleet


def collecting() -> tuple[list[SampleBatch | GpuStateEvent], NvmlSampler]:
    out: list[SampleBatch | GpuStateEvent] = []
    return out, NvmlSampler(out.append, interval_s=10.0, now_ms=Clock())


def samples(items: list[SampleBatch | GpuStateEvent]) -> list[GpuSample]:
    return [s for i in items if isinstance(i, SampleBatch) for s in i.samples]


async def test_discovery_reads_identity_and_limits_from_each_gpu(h100: SimulatedFleet) -> None:
    _, sampler = collecting()
    await sampler.start()
    first, second = sampler.gpus
    assert (first.index, second.index) == (0, 1)
    assert first.uuid == h100.gpus[0].uuid and first.uuid != second.uuid
    assert first.pci_bus_id == h100.gpus[0].pci_bus_id
    assert first.name == "NVIDIA H100 80GB HBM3"
    profile = h100.gpus[0].profile
    assert first.slowdown_temp_c == profile.slowdown_temp_c
    assert first.shutdown_temp_c == profile.shutdown_temp_c
    assert first.power_limit_max_w == pytest.approx(profile.power_max_w)
    assert first.memory_total_bytes == profile.memory_total_bytes
    assert first.driver_version == h100.driver_version
    assert first.cuda_version == "12.8"
    assert first.ecc_enabled is True and first.mig_enabled is False
    assert first.serial


async def test_a_tick_reads_every_metric_on_a_gpu_that_supports_them_all(
    h100: SimulatedFleet,
) -> None:
    out, sampler = collecting()
    await sampler.start()
    h100.gpus[0].set_load(90)
    h100.gpus[0].start_process(4242, 8 << 30, "trainer")
    await asyncio.to_thread(sampler.tick_now)
    batch = out[0]
    assert isinstance(batch, SampleBatch)
    assert {g.uuid for g in batch.gpus} == {g.uuid for g in h100.gpus}  # announced once
    sample = batch.samples[0]
    missing = [f for f in GpuSample.__dataclass_fields__ if getattr(sample, f) is None]
    assert missing == []
    assert sample.nvlink_active == h100.gpus[0].profile.nvlink_count
    assert sample.process_count == 1
    (proc,) = [p for p in batch.processes if p.uuid == sample.uuid]
    assert (proc.pid, proc.used_memory_bytes) == (4242, 8 << 30)
    await asyncio.to_thread(sampler.tick_now)
    assert isinstance(out[1], SampleBatch) and out[1].gpus == ()


async def test_not_supported_calls_are_remembered_per_gpu_and_not_asked_again() -> None:
    fleet = SimulatedFleet.build(1, "T4", seed=1)
    with SimulatedNvml(fleet):
        out, sampler = collecting()
        await sampler.start()
        await asyncio.to_thread(sampler.tick_now)
        (sample,) = samples(out)
        assert sample.remapped_rows_corrected is None and sample.remap_pending is None
        assert sample.nvlink_active is None
        assert sample.temperature_c is not None
        device = sampler.devices[0]
        assert "remapped_rows" in device.unsupported
        assert device.errors == {}
        # Were it asked again it would now answer; remembered, it is not asked.
        fleet.gpus[0].unsupported.discard("nvmlDeviceGetRemappedRows")
        await asyncio.to_thread(sampler.tick_now)
        assert samples(out)[-1].remapped_rows_corrected is None


async def test_other_errors_are_counted_every_time_but_logged_once(h100: SimulatedFleet) -> None:
    out, sampler = collecting()
    await sampler.start()
    h100.driver_loaded = False
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            await asyncio.to_thread(sampler.tick_now)
    failed = [e for e in logs if e["event"] == "nvml_call_failed"]
    per_call = {(e["gpu"], e["call"]) for e in failed}
    assert len(failed) == len(per_call) > 0  # one line per (GPU, call), not per tick
    assert sampler.devices[0].errors["temperature"] == 3
    assert sampler.stats.nvml_errors["0:temperature"] == 3
    h100.driver_loaded = True
    await asyncio.to_thread(sampler.tick_now)
    assert samples(out)[-1].temperature_c is not None


async def test_a_lost_gpu_is_marked_and_the_others_keep_being_sampled(
    h100: SimulatedFleet,
) -> None:
    out, sampler = collecting()
    await sampler.start()
    await asyncio.to_thread(sampler.tick_now)
    h100.gpus[1].inject_xid(79)
    with structlog.testing.capture_logs() as logs:
        await asyncio.to_thread(sampler.tick_now)
        await asyncio.to_thread(sampler.tick_now)
    lost = [i for i in out if isinstance(i, GpuStateEvent)]
    assert [(e.uuid, e.state) for e in lost] == [(h100.gpus[1].uuid, "lost")]
    assert [e["event"] for e in logs].count("gpu_lost") == 1
    batches = [b for b in out if isinstance(b, SampleBatch)]
    assert [len(b.samples) for b in batches] == [2, 1, 1]
    assert sampler.lost_uuids == {h100.gpus[1].uuid}
    assert sampler.stats.gpus_lost == 1


async def test_a_lost_gpu_that_answers_again_is_picked_up(h100: SimulatedFleet) -> None:
    out, sampler = collecting()
    await sampler.start()
    h100.gpus[0].fall_off_bus()
    await asyncio.to_thread(sampler.tick_now)
    h100.gpus[0].recover()
    await asyncio.to_thread(sampler.tick_now)
    states = [(i.state, i.uuid) for i in out if isinstance(i, GpuStateEvent)]
    assert states == [("lost", h100.gpus[0].uuid), ("recovered", h100.gpus[0].uuid)]
    last = out[-2]
    assert isinstance(last, SampleBatch) and len(last.samples) == 2
    assert [g.uuid for g in last.gpus] == [h100.gpus[0].uuid]  # re-announced
    assert sampler.lost_uuids == frozenset()


async def test_nvml_calls_run_off_the_event_loop_thread(
    h100: SimulatedFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[int] = set()
    original = NvmlDevice.sample

    def spy(self: NvmlDevice, ts_ms: int) -> object:
        threads.add(threading.get_ident())
        return original(self, ts_ms)

    monkeypatch.setattr(NvmlDevice, "sample", spy)
    out: list[object] = []
    sampler = NvmlSampler(out.append, interval_s=0.05)
    await sampler.start()
    task = asyncio.create_task(sampler.run())
    await wait_until_async(lambda: sampler.stats.ticks >= 2)
    sampler.stop()
    await task
    assert threads and threading.get_ident() not in threads


async def test_a_tick_that_overruns_skips_the_ticks_it_overlapped(h100: SimulatedFleet) -> None:
    out: list[object] = []
    sampler = NvmlSampler(out.append, interval_s=0.02)
    await sampler.start()
    h100.call_delay_s = 0.002  # dozens of calls per GPU: a tick takes several intervals
    task = asyncio.create_task(sampler.run())
    await wait_until_async(lambda: sampler.stats.ticks >= 3)
    sampler.stop()
    await task
    stats = sampler.stats
    assert stats.last_tick_s > 2 * sampler.interval_s
    assert stats.ticks_skipped >= 2 * (stats.ticks - 1)
    assert len(out) == stats.ticks  # one batch per tick that ran: nothing queued behind


async def test_no_driver_is_a_clear_error_naming_the_fallback() -> None:
    fleet = SimulatedFleet.build(1)
    fleet.driver_loaded = False
    with SimulatedNvml(fleet):
        _, sampler = collecting()
        with pytest.raises(NvmlUnavailableError, match="kernel log"):
            await sampler.start()
