"""get_metric_history and get_metric_trend through a real MCP client: honest trends, small answers.

A store written through the real writer with an hour of samples every 2 s on four GPUs, each
showing one thing the trend tool used to get wrong; the clock is fixed, so nothing waits.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from store.records import GpuInfo, GpuSample, SampleBatch
from store.telemetry import get_metric
from tests.mcp_server.helpers import served
from tests.mcp_server.test_tools import call
from tests.store.helpers import write_all
from xidwatch.charts import trend_json
from xidwatch.telemetry import _trend_data

T0 = 1_800_000_000_000  # on an hour boundary
HOUR = 3_600_000
NOW = T0 + HOUR
TICK = 2_000
ECC_AT = T0 + 40 * 60_000


def gpu(index: int) -> GpuInfo:
    return GpuInfo(
        uuid=f"GPU-7e57{index}000-0000-4000-8000-000000000000",
        index=index,
        name="NVIDIA H100 80GB HBM3",
        pci_bus_id=f"00000000:{0x18 + 0x20 * index:02X}:00.0",
        slowdown_temp_c=92,
        shutdown_temp_c=97,
        power_limit_default_w=700.0,
    )


GPUS = tuple(gpu(i) for i in range(4))


def temperatures(ts: int) -> tuple[int, int, int, int]:
    """GPU 0 heats to 96 in the last 20 s; 1 rises 20 °C/h; 2 warms up then holds; 3 steady."""
    minutes = (ts - T0) / 60_000
    last = max(0.0, (ts - (NOW - 20_000)) / 18_000)  # the last tick is at NOW - 2 s
    hot = round(60 + 36 * min(1.0, last))
    warm = round(40 + 4 * minutes) if minutes < 10 else 80 + round(minutes) % 2
    return hot, round(50 + 20 * minutes / 60), warm, 55


def tick(ts: int) -> SampleBatch:
    samples = tuple(
        GpuSample(
            g.uuid,
            ts,
            temperature_c=temp,
            power_w=250.5 + (ts // TICK) % 3 / 10,
            ecc_uncorrected_volatile=(2 if ts >= ECC_AT else 0) if g.index == 3 else 0,
        )
        for g, temp in zip(GPUS, temperatures(ts), strict=True)
    )
    return SampleBatch(ts, samples, gpus=GPUS if ts == T0 else ())


@pytest.fixture(scope="module")
def hour_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hour") / "xidwatch.db"
    asyncio.run(write_all(path, [tick(ts) for ts in range(T0, NOW, TICK)]))
    return path


async def trends(db: Path, **args: Any) -> dict[int, dict[str, Any]]:
    async with served(db, now_ms=lambda: NOW) as client:
        out = await call(client, "get_metric_trend", **args)
    return {t["gpu"]: t for t in out["trends"]}


# -- get_metric_trend --------------------------------------------------------------------------


async def test_a_gpu_already_past_its_slowdown_is_crossed_not_moving_away(hour_db: Path) -> None:
    hot = (await trends(hour_db, metric="temperature", gpu="0", since="1h"))[0]
    assert (hot["status"], hot["crossed"]) == ("crossed", True)
    assert hot["threshold"] == 92 and hot["threshold_source"].startswith("slowdown_temp")
    # 60 + 36 * (t - (NOW - 20 s)) / 18 s reaches 92 at NOW - 4 s.
    assert hot["crossed_at"] == "2027-01-15T08:59:56.000Z"
    assert hot["hours_to_threshold"] is None and hot["confidence"] == "none"
    assert "moves away" not in hot["reason"]
    assert "shutdown temperature is 97 °C" in hot["reason"]


async def test_current_is_the_latest_reading_not_the_last_buckets_average(hour_db: Path) -> None:
    hot = (await trends(hour_db, metric="temperature", gpu="0", since="1h"))[0]
    assert hot["current"] == 96 and hot["current_from"] == "sample"
    assert hot["current_ts"] == "2027-01-15T08:59:58.000Z"
    async with served(hour_db, now_ms=lambda: NOW) as client:
        out = await call(
            client, "get_metric_history", gpu="0", metrics=["temperature"], since="1h", buckets=60
        )
    last_bucket = out["series"][0]["buckets"][-1]
    assert last_bucket["avg"] < 75 < hot["current"]  # what `current` used to be


async def test_a_steady_rise_gets_a_slope_per_hour_and_a_time_to_the_threshold(
    hour_db: Path,
) -> None:
    rising = (await trends(hour_db, metric="temperature", gpu="1", since="1h"))[1]
    assert rising["status"] == "approaching" and rising["crossed"] is False
    assert rising["slope_per_hour"] == pytest.approx(20, rel=0.05)
    assert rising["slope_per_day"] is None
    assert rising["r_squared"] > 0.95 and rising["points"] == 60
    assert rising["hours_to_threshold"] == pytest.approx((92 - 70) / 20, rel=0.1)
    assert rising["confidence"] in ("high", "medium")


@pytest.mark.parametrize("since", ["12s", "1m", "9m"])
async def test_seconds_or_minutes_of_data_give_no_slope_and_no_projection(
    hour_db: Path, since: str
) -> None:
    rising = (await trends(hour_db, metric="temperature", gpu="1", since=since))[1]
    assert (rising["slope_per_hour"], rising["r_squared"]) == (None, None)
    assert rising["slope_reason"] and "needed" in rising["slope_reason"]
    assert rising["status"] == "no_projection" and rising["hours_to_threshold"] is None
    assert rising["reason"].startswith("no projection: ")
    assert rising["current"] == 70  # the facts are still there


async def test_a_warm_up_early_in_the_window_gives_no_projection(hour_db: Path) -> None:
    warm = (await trends(hour_db, metric="temperature", gpu="2", since="1h"))[2]
    assert warm["slope_per_hour"] is not None and warm["slope_per_hour"] > 0
    assert warm["status"] == "no_projection" and warm["hours_to_threshold"] is None
    assert "the load changed in the window" in warm["reason"]


async def test_uncorrectable_ecc_errors_are_judged_against_a_default_of_one(
    hour_db: Path,
) -> None:
    ecc = await trends(hour_db, metric="ecc_uncorrected_volatile", since="1h")
    assert ecc[3]["threshold"] == 1 and ecc[3]["threshold_source"].startswith("default")
    assert ecc[3]["crossed"] is True and ecc[3]["current"] == 2
    assert ecc[3]["crossed_at"] == "2027-01-15T08:40:00.000Z"
    assert {g: t["crossed"] for g, t in ecc.items() if g != 3} == {0: False, 1: False, 2: False}
    remapped = await trends(hour_db, metric="remapped_rows_uncorrected", gpu="3", since="1h")
    assert remapped[3]["threshold"] == 8


async def test_a_floor_given_with_direction_below(hour_db: Path) -> None:
    out = await trends(
        hour_db, metric="temperature", gpu="3", since="1h", threshold=56, direction="below"
    )
    assert out[3]["crossed"] is True and "at or below the threshold 56" in out[3]["reason"]


async def test_the_thermal_runaway_gpu_is_crossed_at_its_latest_sample(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        out = await call(client, "get_metric_trend", metric="temperature", since="1h")
        snapshot = await call(client, "get_gpu_snapshot", gpu="2")
    hot = next(t for t in out["trends"] if t["gpu"] == 2)
    assert hot["crossed"] is True and hot["threshold"] == 89
    assert hot["current"] == snapshot["gpus"][0]["sample"]["temperature_c"]
    assert "shutdown temperature is 92 °C, reached too" in hot["reason"]
    assert all(t["slope_per_hour"] is None for t in out["trends"])  # seconds of data


# -- get_metric_history ------------------------------------------------------------------------


async def test_two_minutes_of_history_are_never_finer_than_the_samples(hour_db: Path) -> None:
    async with served(hour_db, now_ms=lambda: NOW) as client:
        result = await client.call_tool(
            "get_metric_history",
            {"gpu": "0", "metrics": ["temperature", "power"], "since": "2m", "buckets": 1000},
        )
    assert not result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert len(text) < 12_000  # 99 KB for one metric before
    for series in json.loads(text)["series"]:
        assert series["step_ms"] >= TICK
        assert len(series["buckets"]) <= 60 and series["empty_buckets"] <= 1
        assert sum(b["count"] for b in series["buckets"]) == 60
        assert all(set(b) == {"ts", "min", "avg", "max", "count"} for b in series["buckets"])


async def test_history_values_are_rounded_and_empty_buckets_left_out(hour_db: Path) -> None:
    async with served(hour_db, now_ms=lambda: NOW + HOUR) as client:
        result = await client.call_tool(
            "get_metric_history",
            {"gpu": "3", "metrics": ["power"], "since": "2h", "buckets": 120},
        )
    text = result.content[0].text  # type: ignore[union-attr]
    assert not re.search(r"\d\.\d{5,}", text), text  # no 250.53333333333333 nor 250.50000000000003
    (series,) = json.loads(text)["series"]
    assert series["empty_buckets"] == 60  # the hour after the samples stopped
    assert len(series["buckets"]) == 60
    assert series["buckets"][0]["avg"] == pytest.approx(250.6, abs=0.01)


# -- the CLI's trend --json is the same answer -------------------------------------------------


# A threshold with more digits than an answer keeps: the CLI once printed it unrounded.
@pytest.mark.parametrize(("metric", "threshold"), [("temperature", None), ("power", 250.61234)])
async def test_trend_json_is_the_mcp_history_and_trend_answer_for_the_same_window(
    hour_db: Path, metric: str, threshold: float | None
) -> None:
    m = get_metric(metric)
    # The CLI's own read path with the clock fixed (`trend` passes the wall clock here).
    series, xids, reports = await _trend_data(
        hour_db, m, [], NOW - HOUR, NOW, 60, None, NOW, threshold
    )
    cli = json.loads(json.dumps(trend_json(series, xids, m, reports)))
    async with served(hour_db, now_ms=lambda: NOW) as client:
        given = {} if threshold is None else {"threshold": threshold}
        trend = await call(client, "get_metric_trend", metric=metric, since="1h", **given)
        history = [
            await call(
                client,
                "get_metric_history",
                gpu=str(out["gpu"]),
                metrics=[metric],
                since="1h",
                buckets=60,
            )
            for out in cli
        ]
    assert len(cli) == len(trend["trends"]) == len(GPUS)
    for out, answer, stats in zip(cli, history, trend["trends"], strict=True):
        (mcp_series,) = answer["series"]
        # The CLI lists empty buckets too (count 0); MCP leaves them out and counts them.
        listed = {**out, "buckets": [b for b in out["buckets"] if b["count"]]}
        assert {k: v for k, v in listed.items() if k not in ("stats", "xids")} == mcp_series
        identity = {"gpu", "pci_bus_id", "metric", "unit"}
        assert out["stats"] == {k: v for k, v in stats.items() if k not in identity}
