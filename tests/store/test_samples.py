"""The telemetry write path: samples, inventory, processes, GPU state, rollups across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiosqlite
import pytest

from store.db import prepare_store
from store.flood import FloodPolicy
from store.inventory import latest_samples, list_gpus
from store.records import GpuInfo, GpuProcess, GpuSample, GpuStateEvent, SampleBatch
from store.samples import PROCESS_GAP_MS
from store.writer import StoreWriter
from tests.store.helpers import event, reading, rows, write_all
from tests.waiting import wait_until_async

T0 = 1_800_000_000_000  # on an hour boundary
MIB = 1 << 20
GPU0 = GpuInfo(
    uuid="GPU-0a1b2c3d-1111-4000-8000-000000000000",
    index=0,
    name="NVIDIA H100 80GB HBM3",
    pci_bus_id="00000000:3B:00.0",
    serial="1650123456789",
    driver_version="550.54.15",
    cuda_version="12.4",
    slowdown_temp_c=90,
    shutdown_temp_c=92,
    power_limit_default_w=700.0,
    power_limit_min_w=200.0,
    power_limit_max_w=700.0,
    memory_total_bytes=81559 * MIB,
    ecc_enabled=True,
    mig_enabled=False,
)
GPU1 = GpuInfo(
    uuid="GPU-9f8e7d6c-2222-4000-8000-000000000000",
    index=1,
    name="NVIDIA H100 80GB HBM3",
    pci_bus_id="00000000:86:00.0",
)


def tick(
    ts_ms: int,
    *samples: GpuSample,
    gpus: Sequence[GpuInfo] = (),
    processes: Sequence[GpuProcess] = (),
) -> SampleBatch:
    return SampleBatch(ts_ms, tuple(samples), tuple(processes), tuple(gpus))


def full_sample(ts_ms: int) -> GpuSample:
    return GpuSample(
        uuid=GPU0.uuid,
        ts_ms=ts_ms,
        temperature_c=61,
        power_w=312.457,
        power_limit_w=700.0,
        sm_clock_mhz=1980,
        memory_clock_mhz=2619,
        gpu_util_pct=97,
        memory_util_pct=43,
        memory_used_bytes=40_960 * MIB,
        memory_total_bytes=81_559 * MIB,
        ecc_corrected_volatile=3,
        ecc_uncorrected_volatile=0,
        ecc_corrected_aggregate=12,
        ecc_uncorrected_aggregate=1,
        remapped_rows_corrected=2,
        remapped_rows_uncorrected=0,
        remap_pending=False,
        remap_failure=True,
        clocks_event_reasons=0x44,
        pcie_replays=7,
        nvlink_active=18,
        nvlink_errors=5,
        process_count=2,
    )


async def test_every_sample_field_round_trips_through_latest_samples(db_path: Path) -> None:
    older = GpuSample(GPU0.uuid, T0, temperature_c=20)
    newest = full_sample(T0 + 10_000)
    unsupported = GpuSample(GPU1.uuid, T0 + 10_000)  # every reading NotSupported
    await write_all(
        db_path,
        [tick(T0, older, gpus=[GPU0, GPU1]), tick(T0 + 10_000, newest, unsupported)],
    )
    async with reading(db_path) as conn:
        latest = await latest_samples(conn)
    assert [(x.gpu.info, x.sample) for x in latest] == [(GPU0, newest), (GPU1, unsupported)]


async def test_power_is_kept_to_the_milliwatt_and_memory_to_the_mib(db_path: Path) -> None:
    s = GpuSample(
        GPU0.uuid,
        T0,
        power_w=312.4567,
        power_limit_w=699.9994,
        memory_used_bytes=40 * MIB + 300 * 1024,
        memory_total_bytes=80 * MIB + 700 * 1024,
    )
    await write_all(db_path, [tick(T0, s, gpus=[GPU0])])
    stored = rows(
        db_path, "SELECT power_mw, power_limit_mw, mem_used_mib, mem_total_mib FROM samples"
    )
    assert stored == [(312_457, 699_999, 40, 81)]
    async with reading(db_path) as conn:
        (latest,) = await latest_samples(conn)
    assert latest.sample is not None
    assert (latest.sample.power_w, latest.sample.power_limit_w) == (312.457, 699.999)
    assert latest.sample.memory_used_bytes == 40 * MIB
    assert latest.sample.memory_total_bytes == 81 * MIB


async def test_a_gpu_never_sampled_has_no_latest_sample(db_path: Path) -> None:
    await write_all(db_path, [tick(T0, gpus=[GPU0])])
    async with reading(db_path) as conn:
        (latest,) = await latest_samples(conn)
    assert latest.gpu.info == GPU0
    assert latest.sample is None


async def test_inventory_upsert_keeps_first_seen_and_advances_last_seen(db_path: Path) -> None:
    upgraded = GpuInfo(GPU0.uuid, 0, GPU0.name, GPU0.pci_bus_id, driver_version="560.35.03")
    await write_all(db_path, [tick(T0, gpus=[GPU0])])
    await write_all(
        db_path,
        [
            tick(T0 + 10_000, GpuSample(GPU0.uuid, T0 + 10_000), gpus=[upgraded]),
            tick(T0 + 20_000, GpuSample(GPU0.uuid, T0 + 20_000)),  # a sample alone moves it too
        ],
    )
    async with reading(db_path) as conn:
        (gpu,) = await list_gpus(conn)
    assert (gpu.first_seen_ms, gpu.last_seen_ms, gpu.lost_since_ms) == (T0, T0 + 20_000, None)
    assert gpu.info == upgraded
    assert rows(db_path, "SELECT count(*) FROM gpus") == [(1,)]


@pytest.mark.parametrize("batch_max", [1, 1000], ids=["commit-per-item", "one-commit"])
async def test_duplicate_and_out_of_order_samples_are_skipped_and_counted(
    db_path: Path, batch_max: int
) -> None:
    def at(ts_ms: int, temp: int) -> SampleBatch:
        return tick(ts_ms, GpuSample(GPU0.uuid, ts_ms, temperature_c=temp))

    writer = await write_all(
        db_path,
        [
            tick(T0, gpus=[GPU0]),
            at(T0 + 10_000, 50),
            at(T0 + 20_000, 60),
            at(T0 + 20_000, 99),  # the same tick again
            at(T0 + 15_000, 99),  # older than what is stored
            at(T0 + 30_000, 70),
        ],
        batch_max=batch_max,
    )
    assert writer.stats.samples_out_of_order == 2
    assert writer.stats.samples_stored == 3
    assert rows(db_path, "SELECT ts, temp_c FROM samples ORDER BY ts") == [
        (T0 + 10_000, 50),
        (T0 + 20_000, 60),
        (T0 + 30_000, 70),
    ]
    for table in ("rollup_1m", "rollup_1h"):
        assert rows(
            db_path, f"SELECT ts, temp_c_min, temp_c_max, temp_c_sum, temp_c_n FROM {table}"
        ) == [(T0, 50, 70, 180, 3)]


async def test_samples_of_a_gpu_never_announced_are_counted_not_stored(db_path: Path) -> None:
    stranger = GpuSample("GPU-ffffffff-0000-4000-8000-000000000000", T0, temperature_c=40)
    proc = GpuProcess(stranger.uuid, 4242, 1024 * MIB, "python3")
    writer = await write_all(
        db_path,
        [tick(T0, GpuSample(GPU0.uuid, T0), gpus=[GPU0]), tick(T0, stranger, processes=[proc])],
    )
    assert writer.stats.samples_unknown_gpu == 1
    assert writer.stats.samples_stored == 1
    assert rows(db_path, "SELECT count(*) FROM samples") == [(1,)]
    assert rows(db_path, "SELECT count(*) FROM rollup_1m") == [(1,)]
    assert rows(db_path, "SELECT count(*) FROM gpu_processes") == [(0,)]


async def test_a_process_seen_on_consecutive_ticks_is_one_row_with_its_peak_memory(
    db_path: Path,
) -> None:
    def seen(ts_ms: int, used_mib: int | None, name: str | None = "python3") -> SampleBatch:
        used = None if used_mib is None else used_mib * MIB
        return tick(ts_ms, processes=[GpuProcess(GPU0.uuid, 4242, used, name)])

    await write_all(
        db_path,
        [
            tick(T0, gpus=[GPU0]),
            seen(T0, 1024),
            seen(T0 + 10_000, 3072),
            seen(T0 + 20_000, None, name=None),  # NVML would not say this tick
            seen(T0 + 30_000, 2048),
        ],
    )
    assert rows(
        db_path, "SELECT pid, first_ts, last_ts, used_mib, max_used_mib, name FROM gpu_processes"
    ) == [(4242, T0, T0 + 30_000, 2048, 3072, "python3")]


async def test_a_process_back_after_the_gap_is_a_new_row(db_path: Path) -> None:
    def seen(ts_ms: int) -> SampleBatch:
        return tick(ts_ms, processes=[GpuProcess(GPU0.uuid, 4242, 512 * MIB, "train")])

    back_in_time = T0 + PROCESS_GAP_MS  # exactly the gap: still the same process
    reused = back_in_time + PROCESS_GAP_MS + 1  # one ms more: a new process with the same pid
    await write_all(db_path, [tick(T0, gpus=[GPU0]), seen(T0), seen(back_in_time), seen(reused)])
    assert rows(db_path, "SELECT pid, first_ts, last_ts FROM gpu_processes ORDER BY first_ts") == [
        (4242, T0, back_in_time),
        (4242, reused, reused),
    ]


async def test_a_process_seen_across_a_restart_stays_one_row(db_path: Path) -> None:
    def seen(ts_ms: int, used_mib: int) -> SampleBatch:
        return tick(ts_ms, processes=[GpuProcess(GPU0.uuid, 7, used_mib * MIB, "serve")])

    await write_all(db_path, [tick(T0, gpus=[GPU0]), seen(T0, 100), seen(T0 + 10_000, 300)])
    await write_all(db_path, [seen(T0 + 20_000, 200)])
    assert rows(db_path, "SELECT first_ts, last_ts, used_mib, max_used_mib FROM gpu_processes") == [
        (T0, T0 + 20_000, 200, 300)
    ]


async def test_lost_and_recovered_set_and_clear_lost_since_and_are_kept(db_path: Path) -> None:
    lost = GpuStateEvent(GPU0.uuid, T0 + 10_000, "lost", "GPU is lost (fallen off the bus)")
    await write_all(db_path, [tick(T0, gpus=[GPU0, GPU1]), lost])
    async with reading(db_path) as conn:
        gpus = await list_gpus(conn)
    assert [g.lost_since_ms for g in gpus] == [T0 + 10_000, None]

    recovered = GpuStateEvent(GPU0.uuid, T0 + 70_000, "recovered", "answering NVML again")
    writer = await write_all(db_path, [recovered])
    async with reading(db_path) as conn:
        gpus = await list_gpus(conn)
    assert [g.lost_since_ms for g in gpus] == [None, None]
    assert writer.stats.gpu_state_events == 1
    assert rows(
        db_path,
        "SELECT e.ts_ms, g.uuid, e.state, e.detail FROM gpu_events e JOIN gpus g ON g.id = e.gpu "
        "ORDER BY e.id",
    ) == [
        (T0 + 10_000, GPU0.uuid, "lost", "GPU is lost (fallen off the bus)"),
        (T0 + 70_000, GPU0.uuid, "recovered", "answering NVML again"),
    ]


async def test_a_state_event_for_an_unknown_gpu_is_not_stored(db_path: Path) -> None:
    await write_all(db_path, [GpuStateEvent("GPU-nobody", T0, "lost")])
    assert rows(db_path, "SELECT count(*) FROM gpu_events") == [(0,)]


def telemetry(n: int) -> list[SampleBatch]:
    """``n`` ticks 7 s apart for two GPUs, crossing minute and hour boundaries, with gaps."""
    ticks = [tick(T0 - 50 * 60_000, gpus=[GPU0, GPU1])]
    for i in range(n):
        ts = T0 - 50 * 60_000 + i * 7_000
        ticks.append(
            tick(
                ts,
                GpuSample(
                    GPU0.uuid,
                    ts,
                    temperature_c=40 + (i * 7) % 31,
                    power_w=None if i % 5 == 0 else 200 + (i * 13) % 97 + 0.125,
                    clocks_event_reasons=(0x4 if i % 3 == 0 else 0) | (0x40 if i % 7 == 0 else 0),
                ),
                GpuSample(GPU1.uuid, ts, temperature_c=None if i % 4 else 30 + i % 11),
            )
        )
    return ticks


def stored_telemetry(path: Path) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: rows(path, f"SELECT * FROM {table} ORDER BY gpu, ts")
        for table in ("samples", "rollup_1m", "rollup_1h")
    }


@pytest.mark.parametrize("announce_again", [False, True], ids=["known-ids", "re-announced"])
async def test_a_restart_continues_rollups_exactly(tmp_path: Path, announce_again: bool) -> None:
    ticks = telemetry(1200)  # about 2 h 20 min
    once, twice = tmp_path / "once.db", tmp_path / "twice.db"
    await write_all(once, ticks, batch_max=40)

    half = len(ticks) // 2
    await write_all(twice, ticks[:half], batch_max=40)
    rest = ticks[half - 3 :]  # the restarted sampler repeats three ticks already stored
    if announce_again:
        rest = [tick(rest[0].ts_ms, gpus=[GPU0, GPU1]), *rest]
    second = await write_all(twice, rest, batch_max=40)

    assert second.stats.samples_out_of_order == 3 * 2
    expected = stored_telemetry(once)
    assert len(expected["rollup_1h"]) == 2 * 3  # two GPUs, three hours
    assert stored_telemetry(twice) == expected


async def disk_full(conn: aiosqlite.Connection) -> None:
    """Let the file grow no more (run through ``StoreWriter.exclusive``)."""
    async with conn.execute("PRAGMA page_count") as cur:
        (pages,) = await cur.fetchone() or (0,)
    await conn.execute(f"PRAGMA max_page_count = {pages}")


async def space_returns(conn: aiosqlite.Connection) -> None:
    await conn.execute("PRAGMA max_page_count = 1073741823")


async def test_a_failed_commit_sheds_samples_but_keeps_every_xid(db_path: Path) -> None:
    prepare_store(db_path)
    writer = StoreWriter(db_path, flood=FloodPolicy(per_minute=0), max_backoff_s=0.02)
    await writer.open()
    try:
        task = asyncio.create_task(writer.run())
        writer.put(tick(T0, GpuSample(GPU0.uuid, T0), gpus=[GPU0]))
        await wait_until_async(lambda: writer.stats.samples_stored == 1)
        await writer.exclusive(disk_full)
        for n in range(300):
            ts = T0 + (n + 1) * 1000
            writer.put(event(n))
            writer.put(tick(ts, GpuSample(GPU0.uuid, ts, temperature_c=50)))
        await wait_until_async(lambda: writer.stats.commit_retries >= 2)
        assert writer.stats.events_stored == 0
        assert writer.stats.samples_shed == 300

        await writer.exclusive(space_returns)
        await wait_until_async(lambda: writer.stats.events_stored == 300)
        for n in range(300, 310):  # the daemon keeps going
            writer.put(event(n))
        await writer.close()
        await asyncio.wait_for(task, 10)
    finally:
        await writer.aclose_connection()
    assert rows(db_path, "SELECT count(*), count(DISTINCT seq) FROM xid_events") == [(310, 310)]
    assert writer.stats.events_stored == 310
    assert writer.stats.samples_shed == 300
    assert rows(db_path, "SELECT count(*) FROM samples") == [(1,)]
    assert rows(db_path, "SELECT temp_c_n FROM rollup_1h") == [(0,)]  # shed ones not rolled up


@pytest.mark.parametrize(
    "restarted", [False, True], ids=["after-a-commit", "first-commit-after-a-restart"]
)
async def test_gpus_known_before_a_failed_commit_stay_known_after_it(
    db_path: Path, restarted: bool
) -> None:
    if restarted:
        await write_all(db_path, [tick(T0, GpuSample(GPU0.uuid, T0), gpus=[GPU0])])
    prepare_store(db_path)
    writer = StoreWriter(db_path, flood=FloodPolicy(per_minute=0), max_backoff_s=0.02)
    await writer.open()
    try:
        task = asyncio.create_task(writer.run())
        if not restarted:
            writer.put(tick(T0, GpuSample(GPU0.uuid, T0), gpus=[GPU0]))
            await wait_until_async(lambda: writer.stats.samples_stored == 1)
        await writer.exclusive(disk_full)
        for n in range(300):  # the XID insert fails, before any telemetry is written
            writer.put(event(n))
        await wait_until_async(lambda: writer.stats.commit_retries >= 1)
        await writer.exclusive(space_returns)
        for n in range(1, 11):  # the sampler announced GPU 0 long ago and does not again
            writer.put(tick(T0 + n * 1000, GpuSample(GPU0.uuid, T0 + n * 1000)))
        await writer.close()
        await asyncio.wait_for(task, 10)
    finally:
        await writer.aclose_connection()
    assert writer.stats.samples_unknown_gpu == 0
    assert rows(db_path, "SELECT count(*) FROM samples") == [(11,)]


@pytest.mark.parametrize(
    "with_xids", [True, False], ids=["xid-insert-fails", "sample-insert-fails"]
)
async def test_gpus_announced_in_a_failed_commit_are_still_known_afterwards(
    db_path: Path, with_xids: bool
) -> None:
    prepare_store(db_path)
    writer = StoreWriter(db_path, flood=FloodPolicy(per_minute=0), max_backoff_s=0.02)
    await writer.open()
    try:
        await writer.exclusive(disk_full)
        task = asyncio.create_task(writer.run())
        # The sampler announces GPUs once, with its first tick; here the disk is full then.
        writer.put(tick(T0, GpuSample(GPU0.uuid, T0), gpus=[GPU0]))
        for n in range(1, 300):
            writer.put(event(n) if with_xids else tick(T0 + n, GpuSample(GPU0.uuid, T0 + n)))
        await wait_until_async(lambda: writer.stats.commit_retries >= 1)
        await writer.exclusive(space_returns)
        writer.put(tick(T0 + 10_000, GpuSample(GPU0.uuid, T0 + 10_000, temperature_c=55)))
        await writer.close()
        await asyncio.wait_for(task, 10)
    finally:
        await writer.aclose_connection()
    async with reading(db_path) as conn:
        latest = await latest_samples(conn)
    orphans = rows(db_path, "SELECT count(*) FROM samples WHERE gpu NOT IN (SELECT id FROM gpus)")
    assert (orphans, writer.stats.samples_unknown_gpu) == ([(0,)], 0)
    assert [(x.gpu.info.uuid, x.sample and x.sample.temperature_c) for x in latest] == [
        (GPU0.uuid, 55)
    ]
