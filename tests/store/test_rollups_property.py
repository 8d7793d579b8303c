"""Property: the 1 m and 1 h rollups answer any window exactly as the raw samples would."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from store.db import open_reader, prepare_store
from store.flood import FloodPolicy
from store.records import Bucket, GpuInfo, GpuSample, SampleBatch
from store.retention import RetentionPolicy
from store.series import metric_series, plan_window
from store.telemetry import get_metric, raw_row
from store.writer import StoreWriter

T0 = 1_800_000_000_000  # on an hour boundary
MIN, HOUR = 60_000, 3_600_000
SPAN = 4 * HOUR
NOW = T0 + SPAN
GPUS = (
    GpuInfo("GPU-0a1b2c3d-1111-4000-8000-000000000000", 0, "H100", "00000000:3B:00.0"),
    GpuInfo("GPU-9f8e7d6c-2222-4000-8000-000000000000", 1, "H100", "00000000:86:00.0"),
)
# A plain gauge, a scaled one (stored in mW, answered in W) and two throttle flags.
METRICS = ("temperature", "power", "throttle_power", "throttle_thermal")
Row = tuple[
    int, int, float | None, float | None, float | None
]  # a bucket as (ts, count, min, avg, max)


def _near(k: int, unit: int, d: int) -> int:
    return k * unit + d


# Times anywhere in the span, or on (or a millisecond either side of) a minute or an hour.
offsets = st.one_of(
    st.integers(-MIN, SPAN + MIN),
    st.builds(_near, st.integers(-1, SPAN // MIN + 1), st.just(MIN), st.sampled_from([-1, 0, 1])),
    st.builds(_near, st.integers(-1, SPAN // HOUR + 1), st.just(HOUR), st.sampled_from([-1, 0, 1])),
)
lengths = st.one_of(
    st.integers(1, SPAN + HOUR),
    st.builds(
        lambda n, d: n + d,
        st.sampled_from([MIN, 10 * MIN, HOUR, 3 * HOUR, SPAN]),
        st.sampled_from([0, 1, 2]),
    ),
)


@dataclass(frozen=True)
class Scenario:
    ticks: tuple[SampleBatch, ...]
    resent: tuple[int, ...]  # after tick i, the earlier tick resent[i] is put again (if >= 0)
    batch_max: int
    since_ms: int
    until_ms: int
    buckets: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    gpus = GPUS[: draw(st.integers(1, 2))]
    by_ts: dict[int, list[GpuSample]] = {}
    for info in gpus:
        for offset in draw(st.lists(offsets, unique=True, max_size=40)):
            sample = GpuSample(
                info.uuid,
                T0 + offset,
                temperature_c=draw(st.none() | st.integers(-10, 110)),
                power_w=draw(st.none() | st.floats(0, 1500, allow_nan=False)),
                clocks_event_reasons=draw(st.none() | st.integers(0, 0x1FF)),
            )
            by_ts.setdefault(sample.ts_ms, []).append(sample)
    announce = SampleBatch(T0 - 2 * HOUR, gpus=gpus)
    ticks = (announce, *(SampleBatch(ts, tuple(by_ts[ts])) for ts in sorted(by_ts)))
    resent = tuple(draw(st.integers(-3 * len(ticks), i)) for i in range(len(ticks)))
    # The window starts anywhere, or at (or just before) one of the samples.
    starts = offsets.map(lambda d: T0 + d)
    if by_ts:
        starts |= st.builds(
            lambda ts, back: ts - back, st.sampled_from(sorted(by_ts)), st.sampled_from([0, 1, MIN])
        )
    since = draw(starts)
    return Scenario(
        ticks=ticks,
        resent=resent,
        batch_max=draw(st.integers(1, 30)),
        since_ms=since,
        until_ms=since + draw(lengths),
        buckets=draw(st.integers(1, 60)),
    )


def expected(
    samples: list[GpuSample], metric: str, since_ms: int, until_ms: int, step_ms: int, n: int
) -> list[Row]:
    """(ts, count, min, avg, max) per bucket, straight from the samples."""
    m = get_metric(metric)
    out: list[Row] = []
    for i in range(n):
        start = since_ms + i * step_ms
        end = min(start + step_ms, until_ms)
        values = [
            v
            for s in samples
            if start <= s.ts_ms < end and (v := m.stored_value(raw_row(s))) is not None
        ]
        if values:
            mean = sum(values) / len(values)
            out.append(
                (start, len(values), min(values) * m.scale, mean * m.scale, max(values) * m.scale)
            )
        else:
            out.append((start, 0, None, None, None))
    return out


def flat(buckets: tuple[Bucket, ...]) -> list[Row]:
    return [(b.ts_ms, b.count, b.min, b.avg, b.max) for b in buckets]


async def check(path: Path, scenario: Scenario) -> None:
    prepare_store(path)
    writer = StoreWriter(path, flood=FloodPolicy(per_minute=0), batch_max=scenario.batch_max)
    await writer.open()
    try:
        task = asyncio.create_task(writer.run())
        resent = 0
        for i, tick in enumerate(scenario.ticks):
            writer.put(tick)
            if scenario.resent[i] >= 0:  # the same tick again: skipped, never counted twice
                again = scenario.ticks[scenario.resent[i]]
                writer.put(again)
                resent += len(again.samples)
        await writer.close()
        await task
    finally:
        await writer.aclose_connection()
    samples = {
        g.uuid: [s for t in scenario.ticks for s in t.samples if s.uuid == g.uuid] for g in GPUS
    }
    assert writer.stats.samples_out_of_order == resent
    assert writer.stats.samples_stored == sum(len(v) for v in samples.values())

    conn = await open_reader(path)
    try:
        for metric in METRICS:
            for tier in ("1m", "1h"):
                plan = plan_window(
                    scenario.since_ms,
                    scenario.until_ms,
                    scenario.buckets,
                    now_ms=NOW,
                    retention=RetentionPolicy(),
                    tier=tier,
                )
                rolled = await metric_series(
                    conn,
                    metric,
                    since_ms=scenario.since_ms,
                    until_ms=scenario.until_ms,
                    buckets=scenario.buckets,
                    now_ms=NOW,
                    tier=tier,
                )
                raw = await metric_series(
                    conn,
                    metric,
                    since_ms=plan.since_ms,
                    until_ms=plan.until_ms,
                    buckets=plan.buckets,
                    now_ms=NOW,
                    tier="raw",
                )
                for r, s in zip(rolled, raw, strict=True):
                    assert (r.tier, r.step_ms, r.since_ms, r.until_ms) == (
                        tier,
                        plan.step_ms,
                        plan.since_ms,
                        plan.until_ms,
                    )
                    want = expected(
                        samples[r.uuid], metric, r.since_ms, r.until_ms, r.step_ms, plan.buckets
                    )
                    for got, exp in zip(flat(r.buckets), want, strict=True):
                        assert got == pytest.approx(exp), (metric, tier)
                    want_raw = expected(
                        samples[s.uuid], metric, s.since_ms, s.until_ms, s.step_ms, len(s.buckets)
                    )
                    for got, exp in zip(flat(s.buckets), want_raw, strict=True):
                        assert got == pytest.approx(exp), (metric, "raw")
                    if s.step_ms == r.step_ms:  # the same buckets: the same answer, exactly
                        assert s.buckets == r.buckets
    finally:
        await conn.close()


def _edges() -> Scenario:
    """Samples a millisecond either side of minute and hour boundaries, in and out of the window."""
    times = (T0 - 1, T0, T0 + MIN - 1, T0 + MIN, T0 + HOUR - 1, T0 + HOUR, T0 + 2 * HOUR - 1)
    ticks = [SampleBatch(T0 - 2 * HOUR, gpus=GPUS[:1])]
    for i, ts in enumerate(times):
        sample = GpuSample(GPUS[0].uuid, ts, 40 + i, 100.5 + i, clocks_event_reasons=4 * (i % 2))
        ticks.append(SampleBatch(ts, (sample,)))
    resent = (-1, 0, -1, 2, -1, -1, -1, 6)
    return Scenario(tuple(ticks), resent, 2, T0, T0 + 2 * HOUR - 1, 120)


@settings(max_examples=50, deadline=None)
@given(scenarios())
@example(_edges())
def test_rollup_tiers_agree_with_the_raw_samples_for_any_window(scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(check(Path(tmp) / "xidwatch.db", scenario))
