"""Correlating one XID with its context: telemetry before/after, neighbours, processes, a cause."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from store.correlation import Correlation, correlate_xid
from store.errors import InvalidQueryError
from store.processes import processes_at
from store.records import GpuInfo, GpuProcess, GpuSample, GpuStateEvent, SampleBatch, XidEvent
from store.telemetry import HW_THERMAL, SW_THERMAL
from store.writer import Item
from tests.store.helpers import event, reading, rows, write_all

TE = 1_800_000_000_000  # the event under study, on an hour boundary
NOW = TE + 3_600_000
STEP = 10_000
MIB = 1 << 20
A, B, C = "00000000:3B:00.0", "00000000:86:00.0", "00000000:AF:00.0"
GPU_A = GpuInfo(
    "GPU-aaaa0000-h100", 0, "NVIDIA H100", A, slowdown_temp_c=89, shutdown_temp_c=92,
    power_limit_default_w=700.0,
)  # fmt: skip
GPU_B = GpuInfo("GPU-bbbb0000-h100", 1, "NVIDIA H100", B, slowdown_temp_c=89)
TRAINER = GpuProcess(GPU_A.uuid, 4242, 40_960 * MIB, "python3")


def xid_at(n: int, code: int, action: str, ts_ms: int, gpu: str = A, msg: str = "") -> XidEvent:
    return replace(event(n, xid=code, gpu=gpu, ts_ms=ts_ms), action=action, message=msg or "m")


def steady(i: int) -> GpuSample:
    """A healthy, busy GPU: warm, unthrottled, counters flat."""
    return GpuSample(
        GPU_A.uuid, TE - 900_000 + i * STEP, temperature_c=62, power_w=450.0, sm_clock_mhz=1980,
        gpu_util_pct=98, memory_used_bytes=40_960 * MIB, clocks_event_reasons=0, pcie_replays=3,
        ecc_uncorrected_volatile=0,
    )  # fmt: skip


def runaway(i: int) -> GpuSample:
    """15 min of heat: 62 °C for the first half minute, 94 °C in the last, throttled at the end."""
    temp = 62 + round(32 * max(0.0, min(1.0, (i - 2) / 85)))
    throttled = i >= 54  # 36 of 90 samples: 40 %
    return replace(
        steady(i),
        temperature_c=temp,
        sm_clock_mhz=1980 - (600 if throttled else 0),
        clocks_event_reasons=(SW_THERMAL | HW_THERMAL) if throttled else 0,
    )


async def store(
    path: Path,
    samples: Sequence[GpuSample],
    xids: Sequence[Item],
    *,
    processes_until_ms: int = TE - 5000,
) -> None:
    batches: list[Item] = [SampleBatch(TE - 3_600_000, gpus=(GPU_A, GPU_B))]
    batches += [
        SampleBatch(s.ts_ms, (s,), processes=(TRAINER,) if s.ts_ms <= processes_until_ms else ())
        for s in samples
    ]
    await write_all(path, [*batches, *xids])


def xid_id(path: Path, seq: int) -> int:
    ((row_id,),) = rows(path, "SELECT id FROM xid_events WHERE seq = ?", (seq,))
    return int(row_id)


async def correlate(path: Path, seq: int) -> Correlation:
    async with reading(path) as conn:
        return await correlate_xid(conn, xid_id(path, seq), now_ms=NOW)


async def test_heat_and_thermal_throttling_before_an_xid_79_read_as_thermal(
    db_path: Path,
) -> None:
    fell = xid_at(1, 79, "RESTART_BM", TE)
    lost = GpuStateEvent(GPU_A.uuid, TE + 2000, "lost")
    await store(db_path, [runaway(i) for i in range(90)], [fell, lost])
    c = await correlate(db_path, 1)
    assert (c.judgement.cause, c.judgement.action, c.judgement.confidence) == (
        "thermal",
        "reboot_node",
        "high",
    )
    assert c.judgement.evidence[0].startswith("XID 79: the GPU fell off the bus")
    temperature = c.judgement.evidence[1]
    assert "temperature rose from 62 °C to 94 °C in the 15 min before" in temperature
    assert "peaking at 94 °C, above its slowdown temperature 89 °C" in temperature
    assert "clocks were thermally throttled 40% of the time before" in c.judgement.evidence
    assert "the SM clock fell from 1980 MHz to 1380 MHz" in c.judgement.evidence
    assert "NVML reported the GPU lost 2 s after the event" in c.judgement.evidence
    assert "no samples after the event: the GPU stopped answering NVML" in c.judgement.evidence
    metrics = {m.metric: m for m in c.metrics}
    before = metrics["temperature"].before
    assert before is not None
    assert (before.min, before.max, before.first, before.last) == (62, 94, 62, 94)
    assert before.slope_per_hour is not None and 120 < before.slope_per_hour < 150
    assert metrics["temperature"].after is not None
    assert metrics["temperature"].after.samples == 0
    assert [(p.pid, p.name, p.used_mib) for p in c.processes] == [(4242, "python3", 40_960)]
    assert [e.state for e in c.gpu_events] == ["lost"]


async def test_pcie_replays_rising_before_an_xid_79_read_as_bus_or_link(db_path: Path) -> None:
    samples = [replace(steady(i), pcie_replays=3 + i // 3) for i in range(90)]
    await store(db_path, samples, [xid_at(1, 79, "RESTART_BM", TE)])
    c = await correlate(db_path, 1)
    assert (c.judgement.cause, c.judgement.confidence) == ("bus_or_link", "high")
    assert (
        "the PCIe replay counter rose by 29 in the 15 min before (from 3 to 32)"
        in c.judgement.evidence
    )


async def test_an_xid_79_with_no_precursor_suspects_the_gpu_and_says_what_was_checked(
    db_path: Path,
) -> None:
    """Before: ``unknown``, although the evidence itself said "suspect the slot, riser or GPU"."""
    await store(db_path, [steady(i) for i in range(90)], [xid_at(1, 79, "RESTART_BM", TE)])
    c = await correlate(db_path, 1)
    assert (c.judgement.cause, c.judgement.action) == ("gpu_hardware", "reboot_node")
    assert c.judgement.confidence == "medium"
    assert (
        "no thermal, power or PCIe/NVLink precursor in the 15 min before"
        in (c.judgement.evidence[0])
    )
    assert "temperature peaked at 62 °C" in c.judgement.evidence[0]
    assert "suspect the GPU itself, its PCIe slot or riser" in c.judgement.evidence[0]


async def test_the_same_code_on_several_gpus_reads_as_the_application(db_path: Path) -> None:
    xids = [
        xid_at(1, 13, "RESTART_APP", TE),
        xid_at(2, 13, "RESTART_APP", TE + 1500, gpu=B),
        xid_at(3, 13, "RESTART_APP", TE - 60_000, gpu=C),
    ]
    await store(db_path, [steady(i) for i in range(90)], xids)
    c = await correlate(db_path, 1)
    assert (c.judgement.cause, c.judgement.confidence) == ("application", "high")
    assert c.judgement.evidence[0].startswith(
        f"the same workload (python3) also failed on 2 other GPU(s) ({B}, {C})"
    )
    assert "the XID names process python3 (pid 1)" in c.judgement.evidence
    assert [(p.pid, p.name, p.used_mib) for p in c.processes] == [(4242, "python3", 40_960)]
    assert [(n.event.pci_bus_id, n.offset_s, n.same_gpu) for n in c.nearby_xids] == [
        (C, -60.0, False),
        (B, 1.5, False),
    ]


async def test_one_workload_faulting_again_and_again_on_one_gpu_is_the_application(
    db_path: Path,
) -> None:
    """Before: "repeats on one GPU point at the GPU", for one job crash-looping."""
    xids = [xid_at(n, 31, "RESTART_APP", TE - (3 - n) * 120_000) for n in range(1, 4)]
    await store(db_path, [steady(i) for i in range(90)], xids)
    first = await correlate(db_path, 1)
    c = await correlate(db_path, 3)
    assert (c.judgement.cause, c.judgement.action) == ("application", "restart_application")
    assert "the same workload (python3) failed 3 times on this GPU" in c.judgement.evidence[0]
    assert first.judgement.cause == "application"  # the same context, seen from the first


async def test_faults_of_workloads_the_log_does_not_name_repeating_on_one_gpu_test_the_gpu(
    db_path: Path,
) -> None:
    xids = [
        replace(xid_at(n, 31, "RESTART_APP", TE - (3 - n) * 120_000), pid=None, process=None)
        for n in range(1, 4)
    ]
    await store(db_path, [steady(i) for i in range(90)], xids)
    c = await correlate(db_path, 3)
    assert (c.judgement.cause, c.judgement.action) == ("gpu_hardware", "run_diagnostics")
    assert c.judgement.confidence == "low"


async def test_an_xid_48_with_ecc_errors_and_a_63_reads_as_gpu_memory(db_path: Path) -> None:
    samples = [steady(i) for i in range(90)]
    samples += [replace(steady(90 + i), ecc_uncorrected_volatile=2) for i in range(20)]
    xids = [xid_at(1, 48, "WORKFLOW_XID_48", TE + 1000), xid_at(2, 63, "IGNORE", TE + 3000)]
    await store(db_path, samples, xids)
    c = await correlate(db_path, 1)
    assert (c.judgement.cause, c.judgement.confidence) == ("gpu_memory", "high")
    assert c.judgement.action == "reset_gpu"
    assert "uncorrectable ECC errors went from 0 to 2 around it" in c.judgement.evidence
    assert "XID 63 (id 2) 2 s after on this GPU" in c.judgement.evidence


async def test_an_xid_45_right_after_another_xid_follows_it(db_path: Path) -> None:
    xids = [xid_at(1, 79, "RESTART_BM", TE), xid_at(2, 45, "WORKFLOW_XID_45", TE + 1500)]
    await store(db_path, [steady(i) for i in range(90)], xids)
    c = await correlate(db_path, 2)
    assert (c.judgement.cause, c.judgement.confidence) == ("follows_other_xid", "high")
    assert c.judgement.evidence[0] == (
        f"XID 45 came 1.5 s after XID 79 (id {xid_id(db_path, 1)}) on this GPU: it follows "
        "that one, so judge XID 79"
    )


async def test_an_xid_on_a_gpu_nvml_never_listed_rests_on_the_xids(db_path: Path) -> None:
    await write_all(db_path, [xid_at(1, 79, "RESTART_BM", TE, gpu=C)])
    c = await correlate(db_path, 1)
    assert (c.gpu, c.metrics, c.processes) == (None, (), ())
    assert (c.judgement.cause, c.judgement.action) == ("gpu_hardware", "reboot_node")
    assert c.judgement.evidence[-1].startswith("NVML never listed this GPU")


async def test_an_unknown_id_says_where_ids_come_from(db_path: Path) -> None:
    await write_all(db_path, [xid_at(1, 13, "RESTART_APP", TE)])
    async with reading(db_path) as conn:
        with pytest.raises(InvalidQueryError, match=r"no XID event with id 999: .*list_xid_events"):
            await correlate_xid(conn, 999, now_ms=NOW)
        with pytest.raises(InvalidQueryError, match="at most 24 h"):
            await correlate_xid(conn, 1, before_ms=25 * 3_600_000, now_ms=NOW)


async def test_processes_now_are_those_seen_in_the_last_few_sample_intervals(
    db_path: Path,
) -> None:
    gone = GpuProcess(GPU_A.uuid, 7, 1024 * MIB, "old-job")
    first = [SampleBatch(TE - 3_600_000, gpus=(GPU_A,))]
    early = [SampleBatch(TE + i * STEP, (steady(90 + i),), (gone,)) for i in range(3)]
    late = [SampleBatch(TE + 600_000 + i * STEP, (steady(150 + i),), (TRAINER,)) for i in range(3)]
    await write_all(db_path, [*first, *early, *late])
    async with reading(db_path) as conn:
        now = await processes_at(conn, 0, None)
        then = await processes_at(conn, A, TE + STEP)
        never = await processes_at(conn, "0", TE - 3_000_000)
    assert [(p.pid, p.first_ts_ms, p.last_ts_ms) for p in now] == [
        (4242, TE + 600_000, TE + 620_000)
    ]
    assert [p.name for p in then] == ["old-job"]
    assert never == []
