"""``xidwatch trend`` output: sparkline scaling, gaps, merging, XID markers, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from mcp_server.answers import answer_data
from mcp_server.series_models import SeriesModel, TrendModel
from store.records import Bucket, Series, StoredXid
from store.telemetry import METRICS, get_metric
from store.trend import Reading, Threshold, TrendReport, assess_trend
from xidwatch.charts import (
    CSV_FIELDS,
    GAP,
    LEVELS,
    MARKER,
    list_metrics_text,
    merge_buckets,
    render_answers,
    render_trend,
    sparkline,
    trend_csv,
    trend_json,
)

T0 = int(datetime(2026, 11, 24, 10, tzinfo=UTC).timestamp() * 1000)
STEP = 300_000  # 5 minutes
DAY = 86_400_000
GPU_A, GPU_B = "00000000:3B:00.0", "00000000:86:00.0"
TEMPERATURE = get_metric("temperature")


def series(
    values: Sequence[float | None],
    *,
    index: int = 2,
    pci: str = GPU_A,
    step_ms: int = STEP,
    since_ms: int = T0,
    until_ms: int | None = None,
) -> Series:
    """One bucket per value (min avg-1, max avg+1, 10 samples); None is a bucket without data."""
    buckets = tuple(
        Bucket(T0 + i * step_ms, None, None, None, 0)
        if v is None
        else Bucket(T0 + i * step_ms, v - 1, v, v + 1, 10)
        for i, v in enumerate(values)
    )
    return Series(
        uuid=f"GPU-{index}",
        index=index,
        pci_bus_id=pci,
        metric="temperature",
        unit="°C",
        tier="1m",
        step_ms=step_ms,
        since_ms=since_ms,
        until_ms=until_ms if until_ms is not None else T0 + len(values) * step_ms,
        buckets=buckets,
    )


def xid(
    ts_ms: int, code: int, pci: str | None = GPU_A, *, count: int = 1, uuid: str | None = None
) -> StoredXid:
    return StoredXid(
        id=ts_ms % 1_000_000,
        ts_ms=ts_ms,
        last_ts_ms=ts_ms,
        received_ms=ts_ms,
        count=count,
        burst=count > 1,
        node="node-1",
        kind="xid",
        xid=code,
        pci_bus_id=pci,
        gpu_uuid=uuid,
        mig_gi=None,
        mig_ci=None,
        pid=None,
        process=None,
        message="",
        raw="",
        source="kmsg",
        action="RESET_GPU",
        boot_id=None,
        seq=None,
    )


def chart_lines(text: str) -> list[str]:
    """The lines of a one-GPU rendering with the two-space indent removed."""
    return [line.removeprefix("  ") for line in text.splitlines()]


def test_sparkline_uses_every_level_from_lowest_to_highest() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == LEVELS
    assert sparkline([10.0, 80.0]) == "▁█"


def test_sparkline_of_a_flat_series_sits_at_the_lowest_level() -> None:
    assert sparkline([63.0, 63.0, 63.0]) == LEVELS[0] * 3


def test_sparkline_draws_gaps_for_buckets_without_data() -> None:
    assert sparkline([1.0, None, 2.0]) == f"▁{GAP}█"
    assert sparkline([None, None]) == GAP * 2


def test_sparkline_scales_between_the_given_bounds() -> None:
    assert sparkline([50.0, 50.0], lo=0.0, hi=100.0) == "▅▅"
    assert sparkline([-5.0, 200.0], lo=0.0, hi=100.0) == "▁█"


def test_merging_keeps_true_extremes_and_weights_the_average_by_count() -> None:
    buckets = [
        Bucket(T0, 40.0, 41.0, 42.0, 10),
        Bucket(T0 + STEP, 40.0, 50.0, 99.0, 30),
        Bucket(T0 + 2 * STEP, None, None, None, 0),
        Bucket(T0 + 3 * STEP, 30.0, 31.0, 33.0, 10),
    ]
    first, second = merge_buckets(buckets, 2)
    assert first == Bucket(T0, 40.0, (41 * 10 + 50 * 30) / 40, 99.0, 40)
    assert second == Bucket(T0 + 2 * STEP, 30.0, 31.0, 33.0, 10)


def test_merging_a_group_without_data_leaves_a_gap() -> None:
    buckets = [Bucket(T0 + i * STEP, None, None, None, 0) for i in range(4)]
    buckets.append(Bucket(T0 + 4 * STEP, 1.0, 1.0, 1.0, 1))
    merged = merge_buckets(buckets, 2)
    assert [b.avg for b in merged] == [None, 1.0]


def test_merging_fewer_buckets_than_columns_changes_nothing() -> None:
    s = series([1.0, 2.0, 3.0])
    assert merge_buckets(s.buckets, 10) == list(s.buckets)
    with pytest.raises(ValueError, match="at least 1"):
        merge_buckets(s.buckets, 0)


def test_sparkline_keeps_true_max_when_merging_buckets() -> None:
    values: list[float | None] = [50.0] * 300
    values[137] = 97.0
    text = render_trend([series(values)], [], metric=TEMPERATURE, width=42)
    spark = chart_lines(text)[1]
    assert len(spark) == 40
    assert "max 98 °C" in text and "min 49" in text
    assert spark.count("▁") == 39 and spark[137 * 40 // 300] != "▁"


def test_header_names_gpu_metric_tier_step_and_window() -> None:
    text = render_trend([series([60.0] * 288)], [], metric=TEMPERATURE, width=120)
    assert text.splitlines()[0] == (
        "GPU 2  00000000:3B:00.0  temperature (°C)  "
        "tier 1m, step 5m, 2026-11-24T10:00Z .. 2026-11-25T10:00Z"
    )


def test_stats_line_reports_range_slope_and_change_over_the_window() -> None:
    text = render_trend([series([40 + 2 * i for i in range(24)])], [], metric=TEMPERATURE)
    assert text.splitlines()[-1] == (
        "  min 39 avg 63 max 87 °C · slope +24 °C/h (r² 1.00) · change +46 over 2h"
    )


def test_a_week_of_hourly_buckets_reads_in_days_and_seconds_show_when_not_zero() -> None:
    week = series([60.0 + i % 5 for i in range(7 * 24)], step_ms=3_600_000)
    assert "step 1h, 2026-11-24T10:00Z .. 2026-12-01T10:00Z" in render_trend(
        [week], [], metric=TEMPERATURE
    )
    assert render_trend([week], [], metric=TEMPERATURE).endswith(" over 7d")
    odd = series([60.0, 61.0], step_ms=90_000, since_ms=T0 - 30_000, until_ms=T0 + 180_500)
    text = render_trend([odd], [], metric=TEMPERATURE)
    assert "step 1m30s, 2026-11-24T09:59:30Z .. 2026-11-24T10:03:00.500Z" in text


def test_stats_numbers_are_rounded_for_reading() -> None:
    s = series([312.4567, 312.4567 + 1 / 3])
    text = render_trend([s], [], metric=get_metric("power"), width=80)
    stats = text.splitlines()[-1]
    assert "min 311 avg 313 max 314 W" in stats
    assert "change +0.333 over 10m" in stats


def test_one_point_has_no_slope_line() -> None:
    text = render_trend([series([None, 63.0])], [], metric=TEMPERATURE, width=80)
    assert text.splitlines()[-1] == (
        "  min 62 avg 63 max 64 °C · slope n/a (1 bucket with data, 5 needed)"
    )


def test_no_data_at_all_says_so_with_the_tier_and_window() -> None:
    text = render_trend(
        [series([None] * 288), series([None] * 288, index=3, pci=GPU_B)],
        [],
        metric=TEMPERATURE,
    )
    assert text == (
        "no temperature data for GPU 2, 3 in tier 1m, 2026-11-24T10:00Z .. 2026-11-25T10:00Z"
    )
    assert render_trend([], [], metric=TEMPERATURE).startswith("no temperature data")


def test_a_gpu_without_data_beside_one_with_data_says_so_under_its_header() -> None:
    text = render_trend(
        [series([60.0, 61.0]), series([None, None], index=3, pci=GPU_B)],
        [],
        metric=TEMPERATURE,
        width=80,
    )
    block_b = text.split("\n\n")[1].splitlines()
    assert block_b[0].startswith("GPU 3  00000000:86:00.0")
    assert block_b[1] == "  no data in this window"


def test_buckets_the_query_left_out_are_drawn_as_gaps() -> None:
    s = series([60.0, 61.0, 62.0, 63.0], since_ms=T0 - 2 * STEP)
    sparse = replace(s, buckets=(s.buckets[0], s.buckets[3]))
    spark = chart_lines(render_trend([sparse], [], metric=TEMPERATURE, width=80))[1]
    assert [c == GAP for c in spark] == [True, True, False, True, True, False]


def test_buckets_off_a_common_grid_are_drawn_as_given() -> None:
    s = series([60.0, 61.0, 62.0], step_ms=1_000)
    jittered = replace(
        s, buckets=tuple(replace(b, ts_ms=b.ts_ms + 7 * i) for i, b in enumerate(s.buckets))
    )
    lines = chart_lines(render_trend([jittered], [xid(T0 + 1_500, 79)], metric=TEMPERATURE))
    assert len(lines[1]) == 3 and GAP not in lines[1]
    assert lines[2].index(MARKER) == 1


def test_xid_marker_sits_in_the_column_of_its_bucket_with_its_codes_listed() -> None:
    s = series([60.0 + i for i in range(24)])
    xids = [
        xid(T0 + 3 * STEP + 60_000, 13),
        xid(T0 + 3 * STEP + 120_000, 13, count=2),
        xid(T0 + 14 * STEP, 79),
    ]
    lines = chart_lines(render_trend([s], xids, metric=TEMPERATURE, width=80))
    marker_row = lines[2]
    assert [i for i, c in enumerate(marker_row) if c == MARKER] == [3, 14]
    assert lines[3] == f"{MARKER} 13\N{MULTIPLICATION SIGN}3 @10:16, 79 @11:10"


def test_xid_markers_follow_their_bucket_when_buckets_are_merged() -> None:
    s = series([60.0] * 288)
    lines = chart_lines(render_trend([s], [xid(T0 + 200 * STEP, 31)], metric=TEMPERATURE, width=50))
    assert lines[2].index(MARKER) == 200 * 48 // 288


def test_xid_markers_appear_only_under_their_own_gpu() -> None:
    a = series([60.0] * 12)
    b = series([70.0] * 12, index=3, pci=GPU_B)
    text = render_trend([a, b], [xid(T0 + STEP, 79, GPU_B)], metric=TEMPERATURE, width=80)
    block_a, block_b = text.split("\n\n")
    assert MARKER not in block_a
    assert f"{MARKER} 79 @10:05" in block_b


def test_xids_match_by_uuid_or_a_differently_written_bus_id() -> None:
    s = series([60.0] * 12)
    xids = [
        xid(T0 + STEP, 13, "0000:3b:00.0"),
        xid(T0 + 2 * STEP, 31, None, uuid="GPU-2"),
        xid(T0 + 3 * STEP, 43, "0000:3c:00.0"),
    ]
    text = render_trend([s], xids, metric=TEMPERATURE, width=80)
    assert f"{MARKER} 13 @10:05, 31 @10:10" in text
    assert "43" not in text.splitlines()[3]


def test_sxids_are_labelled_as_such() -> None:
    event = replace(xid(T0 + STEP, 20034), kind="sxid")
    text = render_trend([series([60.0] * 12)], [event], metric=TEMPERATURE, width=80)
    assert f"{MARKER} SXid 20034 @10:05" in text


def test_xids_outside_the_window_are_not_marked() -> None:
    s = series([60.0] * 12)
    xids = [xid(T0 - STEP, 13), xid(T0 + 12 * STEP, 79)]
    assert MARKER not in render_trend([s], xids, metric=TEMPERATURE, width=80)


def test_xid_times_carry_the_date_over_a_window_longer_than_a_day() -> None:
    s = series([60.0] * 7 * 24, step_ms=3_600_000)
    text = render_trend([s], [xid(T0 + DAY + 14 * 60_000, 79)], metric=TEMPERATURE, width=80)
    assert f"{MARKER} 79 @11-25 10:14" in text


def test_too_many_xid_labels_end_with_how_many_more() -> None:
    s = series([60.0] * 40)
    xids = [xid(T0 + i * STEP, 100 + i) for i in range(40)]
    labels = chart_lines(render_trend([s], xids, metric=TEMPERATURE, width=60))[3]
    assert len(labels) <= 58
    assert labels.startswith(f"{MARKER} 100 @10:00, 101 @10:05")
    shown = labels.count("@")
    assert labels.endswith(f", +{40 - shown} more")


def test_color_adds_ansi_codes_only_when_asked() -> None:
    s = series([60.0, None, 62.0])
    plain = render_trend([s], [xid(T0, 79)], metric=TEMPERATURE, width=80)
    colored = render_trend([s], [xid(T0, 79)], metric=TEMPERATURE, width=80, color=True)
    assert "\x1b[" not in plain
    assert "\x1b[1m" in colored and "\x1b[31m" in colored
    assert f"\x1b[2m{GAP}\x1b[0m" in colored


def test_json_has_one_object_per_gpu_with_buckets_stats_and_its_own_xids() -> None:
    a = series([40 + 2 * i for i in range(12)])
    b = series([None, 70.0], index=3, pci=GPU_B)
    out = trend_json([a, b], [xid(T0 + STEP, 79, GPU_B, count=4)], TEMPERATURE)
    json.dumps(out)  # serialisable as is
    first, second = out
    assert set(first) == {
        "gpu",
        "uuid",
        "pci_bus_id",
        "metric",
        "unit",
        "tier",
        "step_ms",
        "since",
        "until",
        "empty_buckets",
        "buckets",
        "stats",
        "xids",
    }
    assert (first["gpu"], first["unit"], first["tier"], first["step_ms"]) == (2, "°C", "1m", STEP)
    assert first["since"] == "2026-11-24T10:00:00.000Z"
    assert first["xids"] == []
    buckets = first["buckets"]
    assert isinstance(buckets, list) and len(buckets) == 12
    assert buckets[1] == {
        "ts": "2026-11-24T10:05:00.000Z",
        "min": 41.0,
        "avg": 42.0,
        "max": 43.0,
        "count": 10,
    }
    stats = first["stats"]
    assert isinstance(stats, dict)
    assert stats["slope_per_hour"] == pytest.approx(24.0)
    assert (stats["min"], stats["max"], stats["change"]) == (39.0, 63.0, 22.0)
    assert second["xids"] == [
        {"ts": "2026-11-24T10:05:00.000Z", "ts_ms": T0 + STEP, "kind": "xid", "xid": 79, "count": 4}
    ]
    second_stats = second["stats"]
    assert isinstance(second_stats, dict) and second_stats["slope_per_hour"] is None


def test_csv_round_trips_through_dictreader() -> None:
    a = series([60.125, None, 1 / 3])
    b = series([70.0], index=3, pci=GPU_B)
    rows = list(csv.DictReader(io.StringIO(trend_csv([a, b]))))
    assert len(rows) == 4
    assert tuple(rows[0]) == CSV_FIELDS
    assert rows[0]["gpu"] == "2" and rows[3]["gpu"] == "3"
    assert rows[0]["pci_bus_id"] == GPU_A and rows[0]["unit"] == "°C"
    assert rows[0]["ts"] == "2026-11-24T10:00:00.000Z" and int(rows[0]["ts_ms"]) == T0
    assert float(rows[2]["avg"]) == 1 / 3
    assert (rows[1]["min"], rows[1]["avg"], rows[1]["max"], rows[1]["count"]) == ("", "", "", "0")


def test_csv_of_nothing_is_just_the_header() -> None:
    assert trend_csv([]) == ",".join(CSV_FIELDS) + "\n"


def test_metric_list_is_an_aligned_table_of_every_metric() -> None:
    lines = list_metrics_text().splitlines()
    assert lines[0].split() == ["METRIC", "UNIT", "KIND", "DESCRIPTION"]
    assert len(lines) == len(METRICS) + 1
    unit_column = lines[0].index("UNIT")
    for line, metric in zip(lines[1:], METRICS, strict=True):
        assert line.startswith(metric.name + " ")
        assert line[unit_column:].startswith(metric.unit)
        assert line.endswith(metric.description)


# -- the latest reading against a threshold, as the MCP trend tool gives it -------------------

SLOWDOWN = Threshold(92.0, "slowdown_temp of GPU 2", beyond=("shutdown temperature", 97.0))


def test_the_now_line_says_crossed_since_when_and_names_the_shutdown_temperature() -> None:
    s = series([70.0 + i for i in range(27)])  # the bucket at 11:45 is the first to reach 92
    report = assess_trend(s, current=Reading(T0 + 27 * STEP - 1000, 96.0), threshold=SLOWDOWN)
    lines = render_trend([s], [], metric=TEMPERATURE, width=80, reports={s.uuid: report})
    now, stats = lines.splitlines()[-2:]
    assert now == (
        "  now 96 °C at 12:14:59Z · crossed 92 °C (slowdown_temp of GPU 2) at 11:45:00Z; "
        "shutdown temperature 97 °C"
    )
    assert stats.startswith("  min 69 avg 83 max 97 °C · slope +12 °C/h (r² 1.00)")


def test_the_now_line_gives_the_projection_and_its_confidence() -> None:
    s = series([40.0 + 2 * i for i in range(24)])
    report = assess_trend(
        s, current=Reading(T0 + 24 * STEP - 1, 87.0), threshold=Threshold(111.0, "given")
    )
    text = render_trend([s], [], metric=TEMPERATURE, width=80, reports={s.uuid: report})
    assert text.splitlines()[-2] == (
        "  now 87 °C at 11:59:59Z · reaches 111 °C (given) in 1 h, confidence high"
    )


def test_the_now_line_says_why_there_is_no_projection() -> None:
    s = series([80.0, 81.0, 82.0])
    report = assess_trend(s, threshold=SLOWDOWN)
    text = render_trend([s], [], metric=TEMPERATURE, width=80, reports={s.uuid: report})
    assert text.splitlines()[-2] == (
        "  now 83 °C at 10:10:00Z (bucket max) · 92 °C (slowdown_temp of GPU 2): "
        "no projection: 3 buckets with data, 5 needed"
    )
    assert text.splitlines()[-1].endswith(
        "slope n/a (3 buckets with data, 5 needed) · change +2 over 15m"
    )


def test_json_stats_are_the_mcp_trend_model_and_buckets_are_rounded() -> None:
    s = series([60.0 + 1 / 3 + i for i in range(12)])  # bucket maxes reach 70 from 10:45
    latest = Reading(T0 + 12 * STEP - 1, 72.0)
    report = assess_trend(s, current=latest, threshold=Threshold(70.0, "given"))
    (out,) = trend_json([s], [], TEMPERATURE, {s.uuid: report})
    stats = out["stats"]
    assert isinstance(stats, dict)
    model = answer_data(TrendModel.from_report(s, report))
    identity = {"gpu", "pci_bus_id", "metric", "unit"}
    assert stats == {k: v for k, v in model.items() if k not in identity}
    assert (stats["status"], stats["crossed"], stats["current"]) == ("crossed", True, 72.0)
    assert stats["crossed_at"] == "2026-11-24T10:45:00.000Z"
    assert stats["current_ts"] == "2026-11-24T10:59:59.999Z"
    buckets = out["buckets"]
    assert isinstance(buckets, list)
    assert buckets[0] == {
        "ts": "2026-11-24T10:00:00.000Z",
        "min": 59.33,
        "avg": 60.33,
        "max": 61.33,
        "count": 10,
    }
    series_model = answer_data(SeriesModel.from_series(s, keep_empty=True))
    assert {k: v for k, v in out.items() if k not in ("stats", "xids")} == series_model


def test_json_keeps_empty_buckets_with_null_values() -> None:
    (out,) = trend_json([series([None, 70.0, None])], [], TEMPERATURE)
    assert out["empty_buckets"] == 2
    assert out["buckets"] == [
        {"ts": "2026-11-24T10:00:00.000Z", "min": None, "avg": None, "max": None, "count": 0},
        {"ts": "2026-11-24T10:05:00.000Z", "min": 69.0, "avg": 70.0, "max": 71.0, "count": 10},
        {"ts": "2026-11-24T10:10:00.000Z", "min": None, "avg": None, "max": None, "count": 0},
    ]


# -- the same chart from a node's answers (kubectl xidwatch trend) ----------------------------


def answers(s: Series, report: TrendReport) -> tuple[dict[str, object], dict[str, object]]:
    """What get_metric_history (empty buckets left out) and get_metric_trend answer, as JSON."""
    history = json.loads(json.dumps(answer_data(SeriesModel.from_series(s))))
    trend = json.loads(json.dumps(answer_data(TrendModel.from_report(s, report))))
    return history, trend


@pytest.mark.parametrize(
    ("values", "current", "threshold"),
    [
        ([70.0 + i for i in range(27)], Reading(T0 + 27 * STEP - 1000, 96.0), SLOWDOWN),
        ([40.0 + 2 * i for i in range(24)], Reading(T0 + 24 * STEP - 1, 87.0), None),
        ([61.0, None, None, 63.5, 64.0, None, 66.0, 67.5, 68.0], None, SLOWDOWN),
        ([9.0, 8.0, 7.0, 6.5, 6.0, 5.0], None, Threshold(4.0, "given", above=False)),
    ],
)
def test_a_nodes_answers_draw_the_chart_the_node_cli_draws(
    values: list[float | None], current: Reading | None, threshold: Threshold | None
) -> None:
    s = series(values)
    report = assess_trend(s, current=current, threshold=threshold)
    xids = [xid(T0 + 3 * STEP + 1000, 79), xid(T0 + 5 * STEP, 48, count=2)]
    local = render_trend([s], xids, metric=TEMPERATURE, width=60, reports={s.uuid: report})
    remote = render_answers([answers(s, report)], xids, metric=TEMPERATURE, width=60)
    assert remote == local


def test_the_trend_answer_keeps_the_further_limit_and_the_direction() -> None:
    s = series([70.0 + i for i in range(27)])
    report = assess_trend(s, current=Reading(T0 + 27 * STEP - 1000, 96.0), threshold=SLOWDOWN)
    _, trend = answers(s, report)
    assert trend["further_limit"] == {"name": "shutdown temperature", "value": 97.0}
    assert trend["threshold_direction"] == "above"
