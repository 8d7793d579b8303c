"""Trend fit over a Series: exact slopes, count weighting, stats, and time to a threshold."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.records import Bucket, GpuInfo, Series
from store.telemetry import get_metric
from store.trend import (
    Reading,
    Threshold,
    TrendFit,
    assess_trend,
    eta_to_threshold,
    fit_trend,
    pick_threshold,
    round_sig,
    time_to_threshold,
)

T0 = 1_795_600_000_000
STEP = 300_000  # 5 minutes


def series(
    values: Sequence[float | None],
    *,
    counts: Sequence[int] | None = None,
    step_ms: int = STEP,
    t0: int = T0,
    until_ms: int | None = None,
) -> Series:
    """A temperature series, one bucket per value; None is a bucket without data."""
    counts = counts if counts is not None else [10] * len(values)
    buckets = tuple(
        Bucket(t0 + i * step_ms, None, None, None, 0)
        if v is None
        else Bucket(t0 + i * step_ms, v - 1, v, v + 1, c)
        for i, (v, c) in enumerate(zip(values, counts, strict=True))
    )
    return Series(
        uuid="GPU-0",
        index=0,
        pci_bus_id="00000000:3B:00.0",
        metric="temperature",
        unit="°C",
        tier="1m",
        step_ms=step_ms,
        since_ms=t0,
        until_ms=until_ms if until_ms is not None else t0 + len(values) * step_ms,
        buckets=buckets,
    )


def fit_with(slope: float | None, r_squared: float | None, points: int, hours: float) -> TrendFit:
    span_ms = int(hours * 3_600_000)
    return TrendFit(slope, 0.0, r_squared, points, 0.0, 0.0, 0.0, T0, T0 + span_ms)


def no_nan(fit: TrendFit) -> bool:
    numbers = (fit.slope_per_hour, fit.change, fit.r_squared, fit.min, fit.avg, fit.max)
    return all(v is None or math.isfinite(v) for v in numbers)


def test_slope_is_exact_on_a_linear_series() -> None:
    fit = fit_trend(series([40 + 2 * i for i in range(24)]))
    assert fit.slope_per_hour == pytest.approx(24.0)  # 2 per 5 minutes
    assert fit.r_squared == pytest.approx(1.0)
    assert fit.change == 46
    assert fit.points == 24
    assert fit.samples == 240
    assert (fit.first_ts_ms, fit.last_ts_ms) == (T0, T0 + 23 * STEP)
    assert fit.last == 86


def test_falling_series_has_a_negative_slope() -> None:
    fit = fit_trend(series([100 - 0.5 * i for i in range(12)]))
    assert fit.slope_per_hour == pytest.approx(-6.0)
    assert fit.change == pytest.approx(-5.5)


def test_min_and_max_are_the_true_extremes_and_avg_is_weighted_by_count() -> None:
    s = series([50.0, 70.0], counts=[30, 10])
    fit = fit_trend(s)
    assert (fit.min, fit.max) == (49.0, 71.0)
    assert fit.avg == pytest.approx((50 * 30 + 70 * 10) / 40)


def test_empty_series_fits_nothing_and_has_no_nan() -> None:
    fit = fit_trend(series([]))
    assert fit == TrendFit(None, None, None, 0, None, None, None, None, None)
    assert fit.span_hours == 0.0


def test_series_of_only_gaps_fits_nothing() -> None:
    fit = fit_trend(series([None, None, None]))
    assert fit.points == 0
    assert fit.slope_per_hour is None and fit.avg is None


def test_one_point_has_stats_but_no_slope() -> None:
    fit = fit_trend(series([None, 63.0, None]))
    assert fit.points == 1
    assert fit.slope_per_hour is None and fit.r_squared is None
    assert fit.change == 0.0
    assert (fit.min, fit.avg, fit.max) == (62.0, 63.0, 64.0)
    assert no_nan(fit)


def test_buckets_without_data_are_skipped_not_read_as_zero() -> None:
    fit = fit_trend(series([40.0, None, None, 46.0, 48.0]))
    assert fit.points == 3
    assert fit.slope_per_hour == pytest.approx(24.0)
    assert fit.min == 39.0


def test_constant_series_is_fitted_exactly_with_zero_slope() -> None:
    fit = fit_trend(series([0.1] * 10, counts=[3] * 10))
    assert fit.slope_per_hour == 0.0
    assert fit.r_squared == 1.0
    assert fit.change == 0.0


def test_noisy_series_recovers_the_slope_and_reports_a_weaker_fit() -> None:
    rng = random.Random(7)
    fit = fit_trend(series([60 + 0.1 * i + rng.gauss(0, 1.0) for i in range(288)]))
    assert fit.slope_per_hour == pytest.approx(1.2, rel=0.05)
    assert fit.r_squared is not None and 0.5 < fit.r_squared < 0.99


def test_a_bucket_counts_as_much_as_that_many_one_sample_buckets_at_its_time() -> None:
    heavy = fit_trend(series([50.0, 53.0, 58.0], counts=[3, 1, 2]))
    spread = series([50.0, 53.0, 58.0], counts=[1, 1, 1])
    first, second, third = spread.buckets
    repeated = replace(spread, buckets=(first, first, first, second, third, third))
    assert heavy.slope_per_hour == pytest.approx(fit_trend(repeated).slope_per_hour)
    assert heavy.r_squared == pytest.approx(fit_trend(repeated).r_squared)


def test_a_partial_last_bucket_barely_moves_a_well_sampled_line() -> None:
    steady = [50.0] * 12
    fit = fit_trend(series([*steady, 80.0], counts=[300] * 12 + [1]))
    unweighted = fit_trend(series([*steady, 80.0], counts=[1] * 13))
    assert fit.slope_per_hour is not None and unweighted.slope_per_hour is not None
    assert abs(fit.slope_per_hour) < unweighted.slope_per_hour / 50


def test_a_bucket_cut_by_the_window_sits_at_the_middle_of_its_part_inside() -> None:
    # Second bucket [5m, 10m) but the window ends at 6m: its samples lie in [5m, 6m).
    fit = fit_trend(series([40.0, 43.0], until_ms=T0 + 6 * 60_000))
    minutes_apart = 5.5 - 2.5
    assert fit.slope_per_hour == pytest.approx(3.0 / minutes_apart * 60)


def test_eta_to_an_upper_threshold_on_a_clean_rise_is_high_confidence() -> None:
    fit = fit_trend(series([40 + 2 * i for i in range(24)]))  # +24/h over ~1.9 h
    eta = eta_to_threshold(fit, current=86.0, threshold=110.0)
    assert eta.hours == pytest.approx(1.0)
    assert eta.confidence == "high"
    assert "reaches 110" in eta.reason
    assert time_to_threshold(fit, 86.0, 110.0) == eta.hours


def test_eta_to_a_lower_threshold_on_a_fall_is_positive() -> None:
    fit = fit_with(-10.0, 0.95, 24, hours=4.0)
    eta = eta_to_threshold(fit, current=50.0, threshold=20.0)
    assert eta.hours == pytest.approx(3.0)
    assert eta.confidence == "high"


def test_eta_is_none_when_the_trend_moves_away() -> None:
    fit = fit_with(2.0, 0.99, 24, hours=4.0)
    eta = eta_to_threshold(fit, current=90.0, threshold=85.0)
    assert (eta.hours, eta.confidence) == (None, "none")
    assert "away" in eta.reason and "above" in eta.reason


def test_eta_is_none_on_a_flat_trend() -> None:
    eta = eta_to_threshold(fit_trend(series([70.0] * 12)), current=70.0, threshold=85.0)
    assert (eta.hours, eta.confidence) == (None, "none")
    assert "flat" in eta.reason


def test_eta_is_none_without_a_fit() -> None:
    eta = eta_to_threshold(fit_trend(series([70.0])), current=70.0, threshold=85.0)
    assert (eta.hours, eta.confidence) == (None, "none")
    assert "at least 2" in eta.reason
    assert time_to_threshold(fit_trend(series([])), 70.0, 85.0) is None


def test_eta_is_zero_when_already_at_the_threshold() -> None:
    eta = eta_to_threshold(fit_trend(series([])), current=85.0, threshold=85.0)
    assert eta.hours == 0.0


def test_eta_refuses_non_finite_inputs() -> None:
    fit = fit_with(1.0, 1.0, 24, hours=4.0)
    assert eta_to_threshold(fit, math.nan, 85.0).confidence == "none"
    assert eta_to_threshold(fit, 50.0, math.inf).hours is None


@pytest.mark.parametrize(
    ("points", "r_squared", "hours_seen", "confidence"),
    [
        (24, 0.95, 10.0, "high"),
        (8, 0.95, 10.0, "medium"),  # few points
        (24, 0.6, 10.0, "medium"),  # noisy
        (24, 0.95, 2.0, "medium"),  # 5 h ahead of 2 h seen
        (24, 0.95, 0.5, "low"),  # 5 h ahead of half an hour seen
        (3, 0.99, 10.0, "low"),
        (24, 0.2, 10.0, "low"),
    ],
)
def test_eta_confidence_weighs_points_fit_and_reach(
    points: int, r_squared: float, hours_seen: float, confidence: str
) -> None:
    fit = fit_with(2.0, r_squared, points, hours=hours_seen)
    eta = eta_to_threshold(fit, current=75.0, threshold=85.0)
    assert eta.hours == pytest.approx(5.0)
    assert eta.confidence == confidence
    if confidence != "high":
        assert "(" in eta.reason  # names what is weak


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
maybe_values = st.lists(st.one_of(st.none(), finite), min_size=0, max_size=40)


@given(
    values=st.lists(finite, min_size=2, max_size=40),
    counts=st.lists(st.integers(min_value=1, max_value=600), min_size=40, max_size=40),
    offset=finite,
)
def test_adding_a_constant_to_every_value_keeps_the_slope(
    values: list[float], counts: list[int], offset: float
) -> None:
    c = counts[: len(values)]
    base = fit_trend(series(values, counts=c))
    shifted = fit_trend(series([v + offset for v in values], counts=c))
    assert base.slope_per_hour is not None and shifted.slope_per_hour is not None
    magnitude = max(abs(v) for v in values) + abs(offset) + 1
    tolerance = 1e-9 * magnitude * 12 * len(values)  # per-hour slope over 5-minute buckets
    assert shifted.slope_per_hour == pytest.approx(base.slope_per_hour, abs=tolerance)


@given(
    values=st.lists(finite, min_size=2, max_size=40),
    factor=st.sampled_from([1, 2, 12, 60, 3600]),
)
def test_scaling_time_scales_the_slope_and_keeps_r_squared(
    values: list[float], factor: int
) -> None:
    base = fit_trend(series(values, step_ms=1_000))
    stretched = fit_trend(series(values, step_ms=1_000 * factor))
    assert base.slope_per_hour is not None and stretched.slope_per_hour is not None
    magnitude = max(abs(v) for v in values) + 1
    assert stretched.slope_per_hour * factor == pytest.approx(
        base.slope_per_hour, abs=1e-6 * magnitude * 3600
    )
    assert base.r_squared is not None and stretched.r_squared is not None
    assert stretched.r_squared == pytest.approx(base.r_squared, abs=1e-9)
    assert stretched.change == base.change


@given(values=maybe_values)
def test_fit_never_returns_nan_whatever_the_gaps(values: list[float | None]) -> None:
    fit = fit_trend(series(values))
    assert no_nan(fit)
    assert fit.points == sum(v is not None for v in values)
    assert (fit.slope_per_hour is None) == (fit.points < 2)
    if fit.r_squared is not None:
        assert 0.0 <= fit.r_squared <= 1.0


# -- assess_trend: the latest reading, crossing, and projections only where earned ---------

MIN = 60_000
H100 = GpuInfo(
    uuid="GPU-0", index=0, name="H100", pci_bus_id="00000000:3B:00.0",
    slowdown_temp_c=92, shutdown_temp_c=97, power_limit_default_w=700.0,
)  # fmt: skip
SLOWDOWN = Threshold(92.0, "slowdown_temp of GPU 0", beyond=("shutdown temperature", 97.0))


def test_a_reading_past_the_threshold_is_crossed_with_when_not_a_projection() -> None:
    # 70 rising 1 per 5 min: the bucket maxes (avg + 1) reach 92 from the bucket averaging 91.
    s = series([70.0 + i for i in range(27)])
    report = assess_trend(s, current=Reading(T0 + 27 * STEP - 1000, 96.0), threshold=SLOWDOWN)
    assert (report.status, report.crossed) == ("crossed", True)
    assert report.crossed_at_ms == T0 + 21 * STEP
    assert report.hours_to_threshold is None and report.confidence == "none"
    assert "moves away" not in report.reason
    assert "96 °C is at or above the threshold 92 °C" in report.reason
    assert "the shutdown temperature is 97 °C, 1 °C away" in report.reason


def test_the_crossing_is_when_the_latest_run_past_the_threshold_began() -> None:
    s = series([95.0, 95.0, 80.0, 80.0, None, 93.0, 94.0])
    report = assess_trend(s, threshold=SLOWDOWN)
    assert report.crossed and report.crossed_at_ms == T0 + 5 * STEP  # not the early spell
    given = assess_trend(s, threshold=SLOWDOWN, crossed_at_ms=T0 + 5 * STEP + 42_000)
    assert given.crossed_at_ms == T0 + 5 * STEP + 42_000


def test_a_floor_is_crossed_from_above() -> None:
    links = replace(series([18.0] * 12), unit="links")
    floor = Threshold(17.0, "given", above=False)
    assert not assess_trend(links, current=Reading(T0, 18.0), threshold=floor).crossed
    low = assess_trend(links, current=Reading(T0, 16.0), threshold=floor)
    assert low.crossed and "16 links is at or below the threshold 17 links" in low.reason


def test_current_is_the_latest_reading_or_else_the_last_buckets_extreme() -> None:
    s = series([60.0, 70.0, 72.3])  # the last bucket: min 71.3, avg 72.3, max 73.3
    latest = Reading(T0 + 3 * STEP - 500, 96.0)
    assert assess_trend(s, current=latest).current == latest
    assert assess_trend(s).current == Reading(T0 + 2 * STEP, 73.3, "bucket max")
    floor = Threshold(50.0, "given", above=False)
    assert assess_trend(s, threshold=floor).current == Reading(T0 + 2 * STEP, 71.3, "bucket min")


def test_fewer_than_five_points_give_no_slope_no_r_squared_and_no_projection() -> None:
    report = assess_trend(series([70.0, 75.0, 80.0, 85.0]), threshold=SLOWDOWN)
    assert report.fit.slope_per_hour is not None  # the raw fit is still there for analytics
    assert (report.slope, report.r_squared) == (None, None)
    assert report.slope_reason == "4 buckets with data, 5 needed"
    assert report.status == "no_projection" and report.hours_to_threshold is None
    assert report.reason == "no projection: 4 buckets with data, 5 needed"


def test_seconds_of_data_give_no_slope_per_hour() -> None:
    # 12 one-second buckets rising 0.0643 °C/s: the old answer was +23,155 °C/h, r² 1.00.
    s = series([60.0 + 0.0643 * i for i in range(12)], step_ms=1_000)
    report = assess_trend(s, threshold=SLOWDOWN)
    assert report.fit.slope_per_hour == pytest.approx(231.5, rel=0.01)
    assert (report.slope, report.r_squared) == (None, None)
    assert report.slope_reason == "0.2 min of data, 10 needed"
    assert report.status == "no_projection"


def test_a_steady_rise_is_projected_with_its_slope_per_hour() -> None:
    report = assess_trend(series([40.0 + 2 * i for i in range(24)]), threshold=SLOWDOWN)
    assert report.slope_per == "hour" and report.slope == pytest.approx(24.0)
    assert report.r_squared == pytest.approx(1.0)
    assert report.status == "approaching" and report.crossed is False
    # from the last bucket's max, 87, at +24/h
    assert report.hours_to_threshold == pytest.approx(5 / 24)
    assert report.confidence == "high"


def test_windows_over_three_days_give_their_slope_per_day() -> None:
    week = series([50.0 + 0.1 * i for i in range(7 * 24)], step_ms=3_600_000)
    report = assess_trend(week)
    assert report.slope_per == "day" and report.slope == pytest.approx(2.4)
    three_days = series([50.0 + 0.1 * i for i in range(3 * 24)], step_ms=3_600_000)
    assert assess_trend(three_days).slope_per == "hour"


@pytest.mark.parametrize(
    "values",
    [
        [40.0, 55.0, 66.0, 74.0, 79.0, 81.0, 82.0, 82.5, 82.6, 82.8, 83.0, 83.0],  # warm-up
        [40.0, 40.5, 41.0, 80.0, 80.2, 80.1, 80.3, 80.2, 80.4, 80.5, 80.4, 80.6],  # step
        [60.0, 64.0, 68.0, 72.0, 76.0, 80.0, 80.0, 79.0, 78.0, 77.0, 76.0, 75.0],  # turned
    ],
    ids=["warm-up", "step", "turned"],
)
def test_a_load_change_in_the_window_gives_no_projection(values: list[float]) -> None:
    report = assess_trend(series(values), threshold=Threshold(120.0, "given"))
    assert report.slope is not None  # the slope over the window is still a fact
    assert report.status == "no_projection" and report.hours_to_threshold is None
    assert "the load changed in the window" in report.reason
    assert report.reason.startswith("no projection: ")


def test_an_accelerating_rise_is_projected_with_low_confidence() -> None:
    report = assess_trend(
        series([50.0 + 1.25**i for i in range(24)]), threshold=Threshold(400.0, "given")
    )
    assert report.status == "approaching" and report.hours_to_threshold is not None
    assert report.confidence == "low" and "accelerating" in report.reason


def test_moving_away_below_the_threshold_is_not_approaching() -> None:
    report = assess_trend(series([80.0 - i for i in range(12)]), threshold=SLOWDOWN)
    assert (report.status, report.crossed) == ("not_approaching", False)
    assert "below 92 and falling" in report.reason


def test_no_threshold_and_no_data_say_so() -> None:
    assert assess_trend(series([60.0] * 6)).status == "no_threshold"
    empty = assess_trend(series([None, None]), threshold=SLOWDOWN)
    assert (empty.status, empty.current, empty.crossed) == ("no_data", None, None)


@pytest.mark.parametrize(
    ("metric", "value", "source"),
    [
        ("temperature", 92.0, "slowdown_temp of GPU 0, the default"),
        ("ecc_uncorrected_volatile", 1.0, "default for ecc_uncorrected_volatile: any"),
        ("remapped_rows_uncorrected", 8.0, "default for remapped_rows_uncorrected: a bank"),
        ("remap_failure", 1.0, "default for remap_failure"),
    ],
)
def test_metrics_with_an_nvidia_limit_have_a_default_threshold(
    metric: str, value: float, source: str
) -> None:
    threshold = pick_threshold(get_metric(metric), H100)
    assert threshold is not None and threshold.above
    assert threshold.value == value and threshold.source.startswith(source)


def test_a_given_threshold_or_limit_overrides_the_default() -> None:
    temperature = get_metric("temperature")
    assert pick_threshold(temperature, H100, given=85.0) == Threshold(85.0, "given")
    shutdown = pick_threshold(temperature, H100, limit="shutdown_temp")
    assert shutdown == Threshold(97.0, "shutdown_temp of GPU 0")
    slowdown = pick_threshold(temperature, H100)
    assert slowdown is not None and slowdown.beyond == ("shutdown temperature", 97.0)
    assert pick_threshold(get_metric("power"), H100) is None  # at the cap is normal
    assert pick_threshold(get_metric("power"), H100, limit="power_limit") == Threshold(
        700.0, "power_limit of GPU 0"
    )
    silent = replace(H100, slowdown_temp_c=None)
    assert pick_threshold(temperature, silent) is None


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        (-2376.0000000000005, -2376.0),
        (72.33333, 72.33),
        (81234.5, 81234.0),
        (0.0123456, 0.01235),
        (250.50000000000003, 250.5),
        (0.0, 0.0),
        (None, None),
    ],
)
def test_round_sig_keeps_four_significant_digits_and_whole_numbers(
    value: float | None, rounded: float | None
) -> None:
    assert round_sig(value) == rounded


def test_noise_on_a_steady_rise_is_not_taken_for_a_load_change() -> None:
    rng = random.Random(11)
    noisy = series([60 + 0.5 * i + rng.gauss(0, 1.0) for i in range(60)])
    report = assess_trend(noisy, threshold=Threshold(120.0, "given"))
    assert report.status == "approaching" and report.confidence in ("high", "medium")
