"""Kubernetes attribution in the store: pods on XIDs and processes, pod spans per GPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from store.processes import pods_at, processes_at
from store.queries import XidFilter, list_xids
from store.records import GpuPod, GpuProcess, GpuSample, PodRef, SampleBatch
from store.samples import PROCESS_GAP_MS
from tests.store.helpers import event, reading, rows, write_all
from tests.store.test_samples import GPU0, GPU1, T0, tick

TRAIN = PodRef("ml", "train-7f9c", "trainer", uid="6c1a0b6e-4b7e-4a8e-9d61-2f3f0d7e9a10")
SERVE = PodRef("inference", "serve-0", "server", uid="0d4a9c55-1e0f-4f5a-8a7d-3b2c1d0e9f88")


def sampled(
    ts_ms: int, *, pods: tuple[GpuPod, ...] = (), procs: tuple[GpuProcess, ...] = ()
) -> SampleBatch:
    samples = (GpuSample(GPU0.uuid, ts_ms, temperature_c=60),)
    return SampleBatch(ts_ms, samples, procs, pods=pods)


async def test_an_xid_keeps_its_pod_and_a_burst_takes_the_last_events_pod(db_path: Path) -> None:
    await write_all(db_path, [dataclasses.replace(event(1), pod=TRAIN), event(2)])
    async with reading(db_path) as conn:
        page = await list_xids(conn, XidFilter(), limit=10)
    by_pid = {e.pid: e.pod for e in page.events}
    assert by_pid == {1: PodRef("ml", "train-7f9c", "trainer"), 2: None}


async def test_process_rows_carry_their_pod_and_make_a_process_pod_span(db_path: Path) -> None:
    proc = GpuProcess(GPU0.uuid, 4242, 1 << 30, "python3", pod=TRAIN)
    await write_all(
        db_path,
        [tick(T0, gpus=[GPU0]), sampled(T0, procs=(proc,)), sampled(T0 + 10_000, procs=(proc,))],
    )
    assert rows(db_path, "SELECT pid, namespace, pod, container FROM gpu_processes") == [
        (4242, "ml", "train-7f9c", "trainer")
    ]
    assert rows(db_path, "SELECT namespace, pod, first_ts, last_ts, uid, source FROM gpu_pods") == [
        ("ml", "train-7f9c", T0, T0 + 10_000, TRAIN.uid, "process")
    ]
    async with reading(db_path) as conn:
        (span,) = await processes_at(conn, 0, T0 + 10_000)
    assert span.pod == PodRef("ml", "train-7f9c", "trainer")


async def test_which_pod_had_a_gpu_at_a_moment_without_any_process(db_path: Path) -> None:
    held = (GpuPod(GPU0.uuid, SERVE, "annotation"), GpuPod(GPU1.uuid, TRAIN, "whole-node"))
    ticks = [sampled(T0 + n * 10_000, pods=held) for n in range(6)]
    await write_all(db_path, [tick(T0, gpus=[GPU0, GPU1]), *ticks])
    async with reading(db_path) as conn:
        (on0,) = await pods_at(conn, 0, T0 + 25_000)
        (on1,) = await pods_at(conn, GPU1.uuid, T0 + 50_000)
        (now0,) = await pods_at(conn, GPU0.uuid, None)
        before = await pods_at(conn, 0, T0 - 3_600_000)
    assert (on0.pod.namespace, on0.pod.pod, on0.source) == ("inference", "serve-0", "annotation")
    assert (on0.first_ts_ms, on0.last_ts_ms) == (T0, T0 + 50_000)
    assert (on1.pod.pod, on1.source, on1.index) == ("train-7f9c", "whole-node", 1)
    assert before == []
    assert now0 == on0


async def test_the_first_source_named_in_a_tick_wins_and_a_pod_back_after_the_gap_is_new(
    db_path: Path,
) -> None:
    both = (GpuPod(GPU0.uuid, TRAIN, "annotation"),)
    proc = (GpuProcess(GPU0.uuid, 9, None, "x", pod=TRAIN),)
    back = T0 + 2 * PROCESS_GAP_MS
    await write_all(
        db_path,
        [tick(T0, gpus=[GPU0]), sampled(T0, pods=both, procs=proc), sampled(back, procs=proc)],
    )
    assert rows(db_path, "SELECT first_ts, last_ts, source FROM gpu_pods ORDER BY first_ts") == [
        (T0, T0, "annotation"),
        (back, back, "process"),
    ]


async def test_a_pod_span_continues_across_a_restart(db_path: Path) -> None:
    held = (GpuPod(GPU0.uuid, SERVE, "annotation"),)
    await write_all(db_path, [tick(T0, gpus=[GPU0]), sampled(T0, pods=held)])
    await write_all(db_path, [sampled(T0 + 10_000, pods=held)])
    assert rows(db_path, "SELECT first_ts, last_ts FROM gpu_pods") == [(T0, T0 + 10_000)]
