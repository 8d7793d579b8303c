"""Trend analytics over one metric Series: a weighted line fit, summary stats, and time to a limit.

Pure functions over :class:`~store.records.Series`; the CLI's ``xidwatch trend`` and the MCP
trend tool both read their numbers from here, so the two never disagree.

:func:`assess_trend` is what they show: the latest reading, whether it is already past the
threshold (and since when), and a slope and a projection only where the data can carry
them: at least :data:`MIN_POINTS` buckets over :data:`MIN_SPAN_MS`, and no change of load
inside the window (see :func:`load_change`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from store.records import Bucket, GpuInfo, Series
from store.telemetry import GpuLimit, Metric
from store.windows import format_ts

__all__ = [
    "MIN_POINTS",
    "MIN_SPAN_MS",
    "PER_DAY_AFTER_MS",
    "Confidence",
    "Reading",
    "Threshold",
    "ThresholdEta",
    "TrendFit",
    "TrendReport",
    "TrendStatus",
    "assess_trend",
    "crossing_bucket",
    "data_span_ms",
    "eta_to_threshold",
    "fit_trend",
    "has_data",
    "load_change",
    "pick_threshold",
    "round_sig",
    "time_to_threshold",
    "too_little_to_fit",
]

Confidence = Literal["high", "medium", "low", "none"]
TrendStatus = Literal[
    "crossed", "approaching", "not_approaching", "no_projection", "no_threshold", "no_data"
]

_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000
# A slope, its r² and a projection need this many buckets with data, spanning this long.
MIN_POINTS = 5
MIN_SPAN_MS = 10 * 60_000
# Windows longer than this give their slope per day instead of per hour.
PER_DAY_AFTER_MS = 3 * _MS_PER_DAY
# The latter half of the window must move at least this share of the whole window's slope,
# in the same direction, or the load changed inside it (see load_change); more than the
# inverse is an acceleration, and a line through the whole window is then late.
_HALF_AGREES = 0.5

# Confidence rules for eta_to_threshold: (min points, min r², max hours ahead per hour seen).
_HIGH = (12, 0.8, 1.0)
_MEDIUM = (6, 0.5, 4.0)
# A slope whose whole effect over the window is below this share of the values is flat.
_FLAT_RELATIVE = 1e-9


@dataclass(frozen=True, slots=True)
class TrendFit:
    """A least-squares line and summary stats over the buckets of a Series that hold data.

    ``slope_per_hour`` is in the metric's unit per hour; ``change`` is the last bucket's
    average minus the first's; ``min``/``max`` are the true extremes (min of bucket mins, max
    of bucket maxes) and ``avg`` is weighted by sample count. ``first_ts_ms``/``last_ts_ms``
    are the start times of the first and last buckets with data, ``last`` the last one's
    average (a natural ``current`` for :func:`eta_to_threshold`). ``points`` counts buckets,
    ``samples`` the raw samples behind them. Everything is None when no bucket has data;
    slope and r² are None with fewer than two points.
    """

    slope_per_hour: float | None
    change: float | None
    r_squared: float | None
    points: int
    min: float | None
    avg: float | None
    max: float | None
    first_ts_ms: int | None
    last_ts_ms: int | None
    last: float | None = None
    samples: int = 0

    @property
    def span_hours(self) -> float:
        """Hours between the first and last buckets with data (0 with fewer than two)."""
        if self.first_ts_ms is None or self.last_ts_ms is None:
            return 0.0
        return (self.last_ts_ms - self.first_ts_ms) / _MS_PER_HOUR


@dataclass(frozen=True, slots=True)
class ThresholdEta:
    """When the fitted line reaches a threshold, how far to trust that, and why.

    ``hours`` is None when it never does (no fit, flat, or moving away); ``reason`` is a
    sentence a person or an assistant can repeat as is.
    """

    hours: float | None
    confidence: Confidence
    reason: str


def has_data(bucket: Bucket) -> bool:
    """A bucket counts when it has a finite average over at least one sample."""
    return bucket.avg is not None and bucket.count > 0 and math.isfinite(bucket.avg)


def fit_trend(series: Series) -> TrendFit:
    """Fit a line through the bucket averages of ``series`` against bucket mid-times.

    The fit is weighted by each bucket's sample count. A bucket's average over ``n``
    samples has 1/n the variance of one sample, so count weights are the least-squares
    estimate of the underlying samples' trend: a partial bucket (the one still filling at
    the end of the window, or one cut short by a daemon restart) counts for what it holds
    instead of as much as a full one. r² is the weighted coefficient of determination; a
    series that does not vary at all is fitted exactly (slope 0, r² 1), not undefined.

    A bucket's time is the middle of the part of it inside the window, so a first or last
    bucket that the window clips sits where its samples are.
    """
    data = [b for b in series.buckets if has_data(b)]
    if not data:
        return TrendFit(None, None, None, 0, None, None, None, None, None)
    first, last = data[0], data[-1]
    first_avg, last_avg = _avg(first), _avg(last)
    weights = [float(b.count) for b in data]
    values = [_avg(b) for b in data]
    total = sum(weights)
    slope, r_squared = _weighted_line(
        [_mid_hours(b, series, origin_ms=first.ts_ms) for b in data], values, weights
    )
    return TrendFit(
        slope_per_hour=slope,
        change=last_avg - first_avg,
        r_squared=r_squared,
        points=len(data),
        min=min(b.min if b.min is not None else _avg(b) for b in data),
        avg=math.fsum(v * w for v, w in zip(values, weights, strict=True)) / total,
        max=max(b.max if b.max is not None else _avg(b) for b in data),
        first_ts_ms=first.ts_ms,
        last_ts_ms=last.ts_ms,
        last=last_avg,
        samples=sum(b.count for b in data),
    )


def time_to_threshold(fit: TrendFit, current: float, threshold: float) -> float | None:
    """Hours until the fitted line takes ``current`` to ``threshold``; None if it never does."""
    return eta_to_threshold(fit, current, threshold).hours


def eta_to_threshold(fit: TrendFit, current: float, threshold: float) -> ThresholdEta:
    """When a value now at ``current`` reaches ``threshold`` at the fitted slope.

    Confidence weighs three things: how many buckets the line rests on, how well it fits
    (r²), and how far ahead it reaches compared with the time it was fitted over, since a
    line fitted over one hour says little about next week. ``high`` needs 12 points,
    r² >= 0.8 and an ETA no further out than the observed span; ``medium`` 6 points,
    r² >= 0.5 and at most four spans ahead; anything weaker that still crosses is ``low``.
    """
    if not (math.isfinite(current) and math.isfinite(threshold)):
        return ThresholdEta(None, "none", "current value or threshold is not a finite number")
    if current == threshold:
        return ThresholdEta(0.0, "high", f"the value is at the threshold {_g(threshold)} now")
    slope = fit.slope_per_hour
    if slope is None:
        return ThresholdEta(
            None, "none", f"no trend: {fit.points} bucket(s) with data, at least 2 needed"
        )
    scale = max(1.0, abs(current), abs(threshold))
    if abs(slope) * max(fit.span_hours, 1.0) <= _FLAT_RELATIVE * scale:
        return ThresholdEta(None, "none", f"the trend is flat at {_g(current)}")
    rising = slope > 0
    if rising != (threshold > current):
        side = "below" if threshold > current else "above"
        moving = "rising" if rising else "falling"
        return ThresholdEta(
            None,
            "none",
            f"the trend moves away from the threshold: {_g(current)} is {side} "
            f"{_g(threshold)} and {moving} {_g(slope, signed=True)}/h",
        )
    hours = (threshold - current) / slope
    r_squared = fit.r_squared if fit.r_squared is not None else 0.0
    ahead = hours / fit.span_hours if fit.span_hours > 0 else math.inf
    confidence = _confidence(fit.points, r_squared, ahead)
    basis = (
        f"{_g(slope, signed=True)}/h from {_g(current)} reaches {_g(threshold)} in "
        f"{_g(hours)} h; r² {r_squared:.2f} over {fit.points} points spanning "
        f"{_g(fit.span_hours)} h"
    )
    weak = _weaknesses(fit.points, r_squared, ahead)
    return ThresholdEta(hours, confidence, basis + (f" ({'; '.join(weak)})" if weak else ""))


@dataclass(frozen=True, slots=True)
class Reading:
    """A metric's value at one time: a raw sample, or a bucket's extreme when none is kept."""

    ts_ms: int
    value: float
    source: Literal["sample", "bucket max", "bucket min"] = "sample"


@dataclass(frozen=True, slots=True)
class Threshold:
    """A line to judge a trend against: reached at or above it (at or below if not ``above``).

    ``source`` says where it came from; ``beyond`` names a further limit worth saying once
    this one is crossed (the shutdown temperature past the slowdown one).
    """

    value: float
    source: str
    above: bool = True
    beyond: tuple[str, float] | None = None

    def reached(self, value: float) -> bool:
        """Whether ``value`` is at or past this threshold."""
        return value >= self.value if self.above else value <= self.value


@dataclass(frozen=True, slots=True)
class TrendReport:
    """What a trend answer says about one series: the facts, and a projection when earned.

    ``current`` is the latest reading. ``slope`` is per ``slope_per`` (hour, or day for
    windows over :data:`PER_DAY_AFTER_MS`), and it and ``r_squared`` are None with
    ``slope_reason`` saying why when the data are too few or too short. ``crossed`` is None
    without a threshold; when True, ``crossed_at_ms`` is when the readings last went past it
    and stayed (the first sample of that run, or its bucket's start) and there is no
    projection. ``status`` and ``reason`` sum it up.
    """

    fit: TrendFit
    status: TrendStatus
    reason: str
    current: Reading | None = None
    slope: float | None = None
    slope_per: Literal["hour", "day"] = "hour"
    r_squared: float | None = None
    slope_reason: str | None = None
    span_ms: int = 0
    threshold: Threshold | None = None
    crossed: bool | None = None
    crossed_at_ms: int | None = None
    hours_to_threshold: float | None = None
    confidence: Confidence = "none"


def pick_threshold(
    metric: Metric,
    gpu: GpuInfo,
    *,
    given: float | None = None,
    limit: GpuLimit | None = None,
    above: bool = True,
) -> Threshold | None:
    """The threshold asked for (``given`` or the GPU's own ``limit``), else the metric's default.

    ``above`` applies to a given value; limits and defaults are ceilings. None when nothing
    applies, or the GPU does not report the limit.
    """
    if given is not None:
        return Threshold(given, "given", above)
    name = limit or metric.default_limit
    if name is None:
        if metric.default_threshold is None:
            return None
        return Threshold(
            metric.default_threshold, f"default for {metric.name}: {metric.threshold_basis}"
        )
    value = _gpu_limit(gpu, name)
    if value is None:
        return None
    source = f"{name} of GPU {gpu.index}" + (", the default" if limit is None else "")
    beyond = None
    if name == "slowdown_temp" and gpu.shutdown_temp_c is not None:
        beyond = ("shutdown temperature", float(gpu.shutdown_temp_c))
    return Threshold(float(value), source, True, beyond)


def crossing_bucket(series: Series, threshold: Threshold) -> Bucket | None:
    """The first bucket of the latest run of buckets that reach ``threshold``.

    Buckets without data do not break a run. None when the last bucket with data does not
    reach it.
    """
    start: Bucket | None = None
    for bucket in reversed([b for b in series.buckets if has_data(b)]):
        extreme = bucket.max if threshold.above else bucket.min
        value = extreme if extreme is not None else _avg(bucket)
        if not threshold.reached(value):
            break
        start = bucket
    return start


def assess_trend(
    series: Series,
    *,
    current: Reading | None = None,
    threshold: Threshold | None = None,
    crossed_at_ms: int | None = None,
) -> TrendReport:
    """The facts and, when the data carry one, the projection for one series.

    ``current`` is the newest raw reading (the caller reads it from the store); without
    one, the last bucket's max (its min for a floor) stands in. A reading at or past the
    threshold is ``crossed``, at ``crossed_at_ms`` when the caller found the sample, else
    at the start of :func:`crossing_bucket`. Otherwise a projection needs a slope (at least
    :data:`MIN_POINTS` buckets over :data:`MIN_SPAN_MS`), a trend toward the threshold, and
    no change of load in the window (:func:`load_change`).
    """
    fit = fit_trend(series)
    data = [b for b in series.buckets if has_data(b)]
    per: Literal["hour", "day"] = (
        "day" if series.until_ms - series.since_ms > PER_DAY_AFTER_MS else "hour"
    )
    span = data_span_ms(series, data)
    short = too_little_to_fit(fit.points, span)
    slope = None
    if short is None and fit.slope_per_hour is not None:
        slope = fit.slope_per_hour * (24 if per == "day" else 1)
    facts = TrendReport(
        fit,
        "no_data",
        "no data in the window",
        slope=slope,
        slope_per=per,
        r_squared=fit.r_squared if short is None else None,
        slope_reason=short,
        span_ms=span,
        threshold=threshold,
    )
    if not data:
        return facts
    now = current or _bucket_reading(data[-1], threshold)
    if threshold is None:
        return _with(
            facts,
            "no_threshold",
            "no threshold asked for, none by default for this metric, "
            "or the GPU does not report that limit",
            now,
        )
    side = "above" if threshold.above else "below"
    if threshold.reached(now.value):
        at = crossed_at_ms
        if at is None:
            bucket = crossing_bucket(series, threshold)
            at = max(bucket.ts_ms, series.since_ms) if bucket is not None else now.ts_ms
        unit = f" {series.unit}"
        reason = (
            f"crossed: {_g(now.value)}{unit} is at or {side} the threshold "
            f"{_g(threshold.value)}{unit} ({threshold.source}) since {format_ts(at)}"
        )
        if threshold.beyond is not None:
            name, value = threshold.beyond
            reason += f"; the {name} is {_g(value)}{unit}" + (
                ", reached too" if now.value >= value else f", {_g(value - now.value)}{unit} away"
            )
        return replace(_with(facts, "crossed", reason, now), crossed=True, crossed_at_ms=at)
    below = replace(facts, current=now, crossed=False)
    if short is not None:
        return replace(below, status="no_projection", reason=f"no projection: {short}")
    eta = eta_to_threshold(fit, now.value, threshold.value)
    if eta.hours is None:
        return replace(below, status="not_approaching", reason=eta.reason)
    halves = _half_slopes(series, data)
    changed = load_change(halves)
    if changed is not None:
        return replace(below, status="no_projection", reason=f"no projection: {changed}")
    confidence, reason = eta.confidence, eta.reason
    if halves is not None and abs(halves[1]) > abs(halves[0]) / _HALF_AGREES:
        confidence = "low"
        reason += (
            f"; accelerating ({_g(halves[1], signed=True)}/h over the latter half), "
            "so it may come sooner"
        )
    return replace(
        below,
        status="approaching",
        reason=reason,
        hours_to_threshold=eta.hours,
        confidence=confidence,
    )


def load_change(halves: tuple[float, float] | None) -> str | None:
    """Why a line through the window would mislead: the load changed inside it, or None.

    ``halves`` is the slope per hour over the whole window and over its latter half (by
    time; see :func:`_half_slopes`). When the latter half moves the other way, or at less
    than half the whole window's pace, the early part holds a step or a warm-up (a load
    that started, a fan curve settling) and the whole-window line overstates the trend.
    """
    if halves is None:
        return None
    whole, late = halves
    if whole == 0.0:
        return None
    if late * whole <= 0.0 or abs(late) < abs(whole) * _HALF_AGREES:
        return (
            f"the load changed in the window (warm-up or a step): the latter half moves "
            f"{_g(late, signed=True)}/h against {_g(whole, signed=True)}/h over the whole"
        )
    return None


def round_sig(value: float | None, digits: int = 4) -> float | None:
    """``value`` to ``digits`` significant digits, never dropping whole-number digits.

    72.33333 -> 72.33, -2376.0000000000005 -> -2376.0, 81234.5 -> 81234.0, 0.0123456 ->
    0.01235. None, zero and non-finite values come back as they are.
    """
    if value is None or value == 0 or not math.isfinite(value):
        return value
    magnitude = math.floor(math.log10(abs(value)))
    return round(value, max(0, digits - 1 - magnitude))


def _with(report: TrendReport, status: TrendStatus, reason: str, now: Reading) -> TrendReport:
    return replace(report, status=status, reason=reason, current=now)


def _gpu_limit(gpu: GpuInfo, name: GpuLimit) -> float | None:
    if name == "slowdown_temp":
        return gpu.slowdown_temp_c
    if name == "shutdown_temp":
        return gpu.shutdown_temp_c
    return gpu.power_limit_default_w


def _bucket_reading(bucket: Bucket, threshold: Threshold | None) -> Reading:
    if threshold is not None and not threshold.above:
        return Reading(
            bucket.ts_ms, bucket.min if bucket.min is not None else _avg(bucket), "bucket min"
        )
    return Reading(
        bucket.ts_ms, bucket.max if bucket.max is not None else _avg(bucket), "bucket max"
    )


def data_span_ms(series: Series, data: Sequence[Bucket]) -> int:
    """From the start of the first bucket with data to the end of the last, inside the window."""
    if not data:
        return 0
    start = max(data[0].ts_ms, series.since_ms)
    end = min(data[-1].ts_ms + series.step_ms, series.until_ms)
    return max(0, end - start)


def too_little_to_fit(points: int, span_ms: int) -> str | None:
    """Why a slope over ``points`` buckets spanning ``span_ms`` means nothing; None if it may."""
    if points < MIN_POINTS:
        return f"{points} bucket{'s' if points != 1 else ''} with data, {MIN_POINTS} needed"
    if span_ms < MIN_SPAN_MS:
        return f"{_g(span_ms / 60_000)} min of data, {MIN_SPAN_MS // 60_000} needed"
    return None


def _half_slopes(series: Series, data: Sequence[Bucket]) -> tuple[float, float] | None:
    """Slopes per hour over all of ``data`` and over its latter half in time (3 points or more)."""
    origin = data[0].ts_ms
    xs = [_mid_hours(b, series, origin_ms=origin) for b in data]
    ys = [_avg(b) for b in data]
    ws = [float(b.count) for b in data]
    middle = (xs[0] + xs[-1]) / 2
    late = [i for i, x in enumerate(xs) if x >= middle]
    if len(late) < 3:
        return None
    whole, _ = _weighted_line(xs, ys, ws)
    part, _ = _weighted_line([xs[i] for i in late], [ys[i] for i in late], [ws[i] for i in late])
    if whole is None or part is None:
        return None
    return whole, part


def _confidence(points: int, r_squared: float, ahead: float) -> Confidence:
    if _meets(_HIGH, points, r_squared, ahead):
        return "high"
    if _meets(_MEDIUM, points, r_squared, ahead):
        return "medium"
    return "low"


def _meets(rule: tuple[int, float, float], points: int, r_squared: float, ahead: float) -> bool:
    min_points, min_r_squared, max_ahead = rule
    return points >= min_points and r_squared >= min_r_squared and ahead <= max_ahead


def _weaknesses(points: int, r_squared: float, ahead: float) -> list[str]:
    weak: list[str] = []
    if points < _HIGH[0]:
        weak.append(f"few points, {_HIGH[0]} wanted")
    if r_squared < _HIGH[1]:
        weak.append("noisy fit")
    if ahead > _HIGH[2]:
        weak.append("extrapolates past the observed span")
    return weak


def _weighted_line(
    xs: Sequence[float], ys: Sequence[float], ws: Sequence[float]
) -> tuple[float | None, float | None]:
    """Weighted least squares slope and r²; None, None when x does not vary.

    Values are taken relative to the first one before summing, so a constant series gives
    exact zeros, and large offsets (temperatures near 80, MiB near 80 000) cost no precision.
    r² is the squared correlation built from square roots, which stays finite where the
    product of two tiny sums would underflow to zero; a result that is not finite is None.
    """
    if len(xs) < 2:
        return None, None
    total = math.fsum(ws)
    y0 = ys[0]
    dy = [y - y0 for y in ys]
    x_mean = math.fsum(w * x for w, x in zip(ws, xs, strict=True)) / total
    y_mean = math.fsum(w * y for w, y in zip(ws, dy, strict=True)) / total
    sxx = math.fsum(w * (x - x_mean) ** 2 for w, x in zip(ws, xs, strict=True))
    if sxx <= 0.0:
        return None, None
    syy = math.fsum(w * (y - y_mean) ** 2 for w, y in zip(ws, dy, strict=True))
    sxy = math.fsum(w * (x - x_mean) * (y - y_mean) for w, x, y in zip(ws, xs, dy, strict=True))
    slope = sxy / sxx
    if not math.isfinite(slope):
        return None, None
    spread = math.sqrt(sxx) * math.sqrt(syy)
    if spread <= 0.0:
        return slope, 1.0
    r = sxy / spread
    return slope, min(1.0, r * r) if math.isfinite(r) else None


def _mid_hours(bucket: Bucket, series: Series, *, origin_ms: int) -> float:
    """The bucket's mid-time in hours from ``origin_ms``, clipped to the series window."""
    start, end = bucket.ts_ms, bucket.ts_ms + series.step_ms
    lo, hi = max(start, series.since_ms), min(end, series.until_ms)
    if lo < hi:
        start, end = lo, hi
    return ((start - origin_ms) + (end - origin_ms)) / 2 / _MS_PER_HOUR


def _avg(bucket: Bucket) -> float:
    assert bucket.avg is not None  # callers filter with has_data
    return bucket.avg


def _g(value: float, *, signed: bool = False) -> str:
    """Three significant digits for a sentence; whole numbers from 1000 up, exponents below 1e-3."""
    sign = "+" if signed else ""
    if abs(value) >= 1000:
        return f"{value:{sign}.0f}"
    if value != 0 and abs(value) < 0.001:
        return f"{value:{sign}.1e}"
    return f"{value:{sign}.3g}"
