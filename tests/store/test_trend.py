"""Trend fit over a Series: exact slopes, count weighting, stats, and time to a threshold."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.records import Bucket, Series
from store.trend import TrendFit, eta_to_threshold, fit_trend, time_to_threshold

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
