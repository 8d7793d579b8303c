"""Trend analytics over one metric Series: a weighted line fit, summary stats, and time to a limit.

Pure functions over :class:`~store.records.Series`; the CLI's ``xidwatch trend`` and the MCP
trend tool both read their numbers from here, so the two never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from store.records import Bucket, Series

__all__ = [
    "Confidence",
    "ThresholdEta",
    "TrendFit",
    "eta_to_threshold",
    "fit_trend",
    "has_data",
    "time_to_threshold",
]

Confidence = Literal["high", "medium", "low", "none"]

_MS_PER_HOUR = 3_600_000

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
