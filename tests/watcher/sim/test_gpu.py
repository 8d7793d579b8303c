"""Simulated GPU physics and fault injection: load, cooling and power cap; XID side effects;
kernel lines in the driver's shape; determinism."""

from __future__ import annotations

import time

import pynvml
import pytest

from watcher.kernel.parser import parse_xid
from watcher.sim import PROFILES, SimulatedFleet

GIB = 1024**3
POWER_CAP = pynvml.nvmlClocksEventReasonSwPowerCap
HW_SLOWDOWN = pynvml.nvmlClocksEventReasonHwSlowdown
SW_THERMAL = pynvml.nvmlClocksEventReasonSwThermalSlowdown
IDLE = pynvml.nvmlClocksEventReasonGpuIdle


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def build(clock: FakeClock, profile: str = "H100-80GB", count: int = 2) -> SimulatedFleet:
    return SimulatedFleet.build(count, profile, clock=clock)


def test_fleets_with_the_same_seed_and_clock_read_the_same(clock: FakeClock) -> None:
    a, b = build(clock), build(clock)
    for fleet in (a, b):
        fleet.gpus[0].set_load(70)
    readings = []
    for _ in range(20):
        clock.now += 7.3
        readings.append((a.gpus[0].reading(), b.gpus[0].reading()))

    assert all(x == y for x, y in readings)
    assert [g.uuid for g in a.gpus] == [g.uuid for g in b.gpus]
    assert a.gpus[0].uuid != a.gpus[1].uuid
    other = SimulatedFleet.build(2, seed=1, clock=clock)
    assert other.gpus[0].uuid != a.gpus[0].uuid


def test_readings_depend_on_the_clock_not_on_how_often_they_are_taken(clock: FakeClock) -> None:
    often, rarely = build(clock), build(clock)
    often.gpus[0].set_load(85)
    rarely.gpus[0].set_load(85)
    for _ in range(120):
        clock.now += 0.5
        often.gpus[0].reading()

    assert often.gpus[0].reading() == rarely.gpus[0].reading()


def test_identity_is_in_nvml_formats(clock: FakeClock) -> None:
    gpu = build(clock, count=4).gpus[2]

    assert gpu.pci_bus_id == "00000000:86:00.0"
    assert gpu.uuid.startswith("GPU-")
    assert [len(part) for part in gpu.uuid[4:].split("-")] == [8, 4, 4, 4, 12]
    assert len(gpu.serial) == 13
    assert gpu.serial.isdigit()


@pytest.mark.parametrize("count", [1, 4, 8, 16, 64])
def test_pci_bus_ids_are_distinct_and_in_index_order(clock: FakeClock, count: int) -> None:
    ids = [g.pci_bus_id for g in build(clock, count=count).gpus]

    assert len(set(ids)) == count
    assert ids == sorted(ids)
    assert all(len(i) == 16 and i.endswith(":00.0") for i in ids)


def test_load_heats_the_gpu_and_raises_power_and_clocks(clock: FakeClock) -> None:
    gpu = build(clock).gpus[0]
    idle = gpu.reading()

    gpu.set_load(80)
    clock.now += 300
    busy = gpu.reading()

    assert idle.clocks_event_reasons == IDLE
    assert idle.sm_clock_mhz == gpu.profile.idle_sm_clock_mhz
    assert busy.temperature_c > idle.temperature_c + 20
    assert busy.power_mw > 5 * idle.power_mw
    assert busy.sm_clock_mhz == gpu.profile.max_sm_clock_mhz
    assert busy.clocks_event_reasons == 0
    assert (busy.utilization_gpu_pct, busy.utilization_memory_pct) == (80, 48)


def test_temperature_approaches_its_target_with_a_time_constant_of_about_a_minute(
    clock: FakeClock,
) -> None:
    settled_gpu, rising_gpu = build(clock).gpus
    start = rising_gpu.reading().temperature_c
    settled_gpu.set_load(80)
    rising_gpu.set_load(80)

    clock.now += 60
    after_one_minute = rising_gpu.reading().temperature_c
    clock.now += 3600
    settled = settled_gpu.reading().temperature_c

    assert abs((after_one_minute - start) / (settled - start) - 0.63) < 0.1


def test_failed_cooling_reaches_slowdown_and_throttles_the_clocks(clock: FakeClock) -> None:
    gpu = build(clock).gpus[1]
    p = gpu.profile
    gpu.set_load(90)
    clock.now += 120
    gpu.set_cooling(0.3)
    seen = []
    for _ in range(60):
        clock.now += 2
        seen.append(gpu.reading())

    hot = [r for r in seen if r.temperature_c >= p.slowdown_temp_c]
    assert hot
    assert all(r.clocks_event_reasons & (HW_SLOWDOWN | SW_THERMAL) for r in hot)
    assert all(r.sm_clock_mhz <= p.max_sm_clock_mhz // 2 for r in hot)
    assert max(r.temperature_c for r in seen) > p.shutdown_temp_c
    assert min(r.power_mw for r in hot) < max(r.power_mw for r in seen) * 0.7


def test_restored_cooling_brings_the_gpu_back_below_slowdown(clock: FakeClock) -> None:
    gpu = build(clock).gpus[0]
    gpu.set_load(90)
    gpu.set_cooling(0.3)
    clock.now += 300
    assert gpu.reading().clocks_event_reasons & HW_SLOWDOWN

    gpu.set_cooling(1.0)
    clock.now += 600

    cool = gpu.reading()
    assert cool.temperature_c < gpu.profile.max_operating_temp_c
    assert cool.clocks_event_reasons == 0


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_full_load_hits_the_power_cap_and_trims_the_clocks(clock: FakeClock, profile: str) -> None:
    gpu = build(clock, profile).gpus[0]
    gpu.set_load(100)
    clock.now += 30

    r = gpu.reading()

    assert r.clocks_event_reasons & POWER_CAP
    assert r.power_mw <= r.power_limit_mw == gpu.profile.power_default_w * 1000
    assert r.power_mw > 0.95 * r.power_limit_mw
    assert r.sm_clock_mhz < gpu.profile.max_sm_clock_mhz


def test_time_scale_runs_the_physics_faster_than_the_clock(clock: FakeClock) -> None:
    fast = SimulatedFleet.build(1, clock=clock, time_scale=10.0)
    slow = SimulatedFleet.build(1, clock=clock)
    fast.gpus[0].set_load(90)
    slow.gpus[0].set_load(90)

    clock.now += 12

    assert fast.gpus[0].reading().temperature_c > slow.gpus[0].reading().temperature_c + 10


def test_a_day_long_gap_settles_quickly_and_counters_keep_growing(clock: FakeClock) -> None:
    fleet = SimulatedFleet.build(8, clock=clock)
    for gpu in fleet.gpus:
        gpu.set_load(60)
    before = [g.reading() for g in fleet.gpus]
    started = time.monotonic()

    clock.now += 86_400
    after = [g.reading() for g in fleet.gpus]

    assert time.monotonic() - started < 1.0
    pairs = list(zip(after, before, strict=True))
    assert sum(a.ecc_corrected_aggregate - b.ecc_corrected_aggregate for a, b in pairs) > 0
    assert all(a.pcie_replays >= b.pcie_replays for a, b in pairs)


def test_memory_used_is_load_memory_plus_process_memory(clock: FakeClock) -> None:
    gpu = build(clock).gpus[0]
    gpu.set_load(50, 4 * GIB)
    gpu.start_process(100, 10 * GIB, "a")
    gpu.start_process(101, 6 * GIB, "b")
    assert gpu.reading().memory_used_bytes == 20 * GIB

    gpu.stop_process(100)
    gpu.set_load(50)

    assert gpu.reading().memory_used_bytes == 10 * GIB
    assert [p.pid for p in gpu.reading().processes] == [101]


def test_xid_48_counts_one_uncorrected_ecc_error(clock: FakeClock) -> None:
    gpu = build(clock).gpus[0]
    before = gpu.reading()

    gpu.inject_xid(48)

    after = gpu.reading()
    assert after.ecc_uncorrected_volatile == before.ecc_uncorrected_volatile + 1
    assert after.ecc_uncorrected_aggregate == before.ecc_uncorrected_aggregate + 1


def test_xid_63_and_64_mark_a_remap_pending_and_then_failed(clock: FakeClock) -> None:
    gpu = build(clock).gpus[0]

    gpu.inject_xid(63)
    pending = gpu.reading()
    gpu.inject_xid(64)
    failed = gpu.reading()

    assert (pending.remapped_rows_uncorrected, pending.remap_pending) == (1, True)
    assert pending.remap_failure is False
    assert failed.remap_failure is True


def test_xid_92_makes_corrected_ecc_jump_and_keep_climbing(clock: FakeClock) -> None:
    gpu = build(clock).gpus[0]
    before = gpu.reading().ecc_corrected_volatile

    gpu.inject_xid(92)
    jumped = gpu.reading().ecc_corrected_volatile
    clock.now += 60
    later = gpu.reading().ecc_corrected_volatile

    assert jumped >= before + 40
    assert later >= jumped + 10


def test_a_reset_clears_volatile_ecc_applies_the_pending_remap_and_keeps_aggregates(
    clock: FakeClock,
) -> None:
    gpu = build(clock).gpus[0]
    gpu.start_process(7, GIB)
    for code in (92, 48, 63, 79):
        gpu.inject_xid(code)
    assert gpu.lost

    gpu.recover()

    r = gpu.reading()
    assert gpu.lost is False
    assert (r.ecc_corrected_volatile, r.ecc_uncorrected_volatile) == (0, 0)
    assert r.ecc_corrected_aggregate >= 40
    assert r.ecc_uncorrected_aggregate == 1
    assert (r.remapped_rows_uncorrected, r.remap_pending) == (1, False)
    assert (r.processes, r.utilization_gpu_pct) == ((), 0)


@pytest.mark.parametrize("code", [13, 31, 43])
def test_an_application_xid_kills_the_named_process_only(clock: FakeClock, code: int) -> None:
    gpu = build(clock).gpus[0]
    gpu.set_load(80)
    gpu.start_process(1, GIB, "victim")
    gpu.start_process(2, GIB, "bystander")

    gpu.inject_xid(code, pid=1)

    r = gpu.reading()
    assert [p.pid for p in r.processes] == [2]
    assert r.utilization_gpu_pct == 80


def test_a_gpu_whose_last_process_crashed_goes_idle(clock: FakeClock) -> None:
    gpu = build(clock).gpus[0]
    gpu.set_load(80, 2 * GIB)
    gpu.start_process(1, GIB, "only")

    gpu.inject_xid(13, pid=1)

    r = gpu.reading()
    assert (r.processes, r.utilization_gpu_pct, r.memory_used_bytes) == ((), 0, 0)


@pytest.mark.parametrize("code", [8, 45, 74, 94, 119, 154])
def test_other_xids_have_no_side_effect(clock: FakeClock, code: int) -> None:
    gpu = build(clock).gpus[0]
    gpu.start_process(1, GIB)
    before = gpu.reading()

    gpu.inject_xid(code, pid=1)

    assert gpu.reading() == before
    assert not gpu.lost


def test_the_kernel_line_has_the_drivers_exact_shape(clock: FakeClock) -> None:
    gpu = build(clock, count=4).gpus[1]
    gpu.start_process(1234, GIB, "python3")

    assert gpu.inject_xid(79, pid=1234) == (
        "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus."
    )
    assert gpu.inject_xid(63, message="Row Remapper: New row marked for remapping.") == (
        "NVRM: Xid (PCI:0000:3b:00): 63, Row Remapper: New row marked for remapping."
    )
    assert gpu.inject_xid(43, pid=99, process="worker", message="Ch 00000018") == (
        "NVRM: Xid (PCI:0000:3b:00): 43, pid=99, name=worker, Ch 00000018"
    )
    assert gpu.inject_xid(13, pid=4321).startswith(
        "NVRM: Xid (PCI:0000:3b:00): 13, pid=4321, name=<unknown>, "
    )


@pytest.mark.parametrize("code", [8, 13, 31, 43, 45, 48, 62, 63, 64, 74, 79, 92, 109, 140, 162])
def test_xidwatchs_parser_reads_back_each_line_to_the_gpus_nvml_bus_id(
    clock: FakeClock, code: int
) -> None:
    gpu = build(clock, count=8).gpus[7]
    gpu.start_process(555, GIB, "trainer")

    parsed = parse_xid(gpu.inject_xid(code, pid=555))

    assert parsed is not None
    assert (parsed.xid, parsed.pci_bus_id, parsed.pid) == (code, gpu.pci_bus_id, 555)
    assert parsed.process == "trainer"
    assert parsed.message


def test_invalid_settings_are_rejected(clock: FakeClock) -> None:
    gpu = build(clock).gpus[0]
    with pytest.raises(ValueError, match="utilization"):
        gpu.set_load(101)
    with pytest.raises(ValueError, match="cooling"):
        gpu.set_cooling(0)
    with pytest.raises(ValueError, match="XID"):
        gpu.inject_xid(0)
    with pytest.raises(ValueError, match="unknown GPU profile"):
        SimulatedFleet.build(2, "V100")
    with pytest.raises(ValueError, match="3 profiles given for 2 GPUs"):
        SimulatedFleet.build(2, ["T4", "T4", "T4"])
    with pytest.raises(ValueError, match=r"1\.\.64"):
        SimulatedFleet.build(0)
