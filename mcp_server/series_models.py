"""The time-series tools' results: bucketed series and trends, and the CLI's ``trend --json``.

Values have 4 significant digits; times are ISO 8601 UTC strings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from mcp_server.models import record_values
from store.records import Bucket, Series
from store.trend import TrendReport, TrendStatus, round_sig
from store.windows import format_ts

__all__ = [
    "BucketModel",
    "FurtherLimit",
    "HistoryResult",
    "SeriesModel",
    "TrendModel",
    "TrendResult",
]


class BucketModel(BaseModel):
    """One bucket: its start as an ISO time, and values to 4 significant digits."""

    ts: str
    min: float | None
    avg: float | None
    max: float | None
    count: int = Field(description="samples in the bucket; 0 means no data")

    @classmethod
    def from_bucket(cls, b: Bucket) -> BucketModel:
        # Rounded where every answer is written (mcp_server.answers.answer_data).
        return cls(ts=format_ts(b.ts_ms), **record_values(b, "ts_ms"))


class SeriesModel(BaseModel):
    """A metric for one GPU over a window, from one storage tier.

    Bucket times are ISO 8601 strings only (no millisecond twin); values have 4 significant
    digits. Buckets without samples are left out unless asked for; ``empty_buckets`` counts
    them, and a missing ``step_ms`` stretch between two ``ts`` is such a gap.
    """

    gpu: int
    uuid: str
    pci_bus_id: str
    metric: str
    unit: str
    tier: Literal["raw", "1m", "1h"] | str
    step_ms: int = Field(
        description="bucket width actually used: a whole number of tier steps, and never "
        "narrower than the interval between samples"
    )
    since: str
    until: str
    empty_buckets: int = Field(description="buckets in the window without samples (not listed)")
    buckets: list[BucketModel]

    @classmethod
    def from_series(cls, s: Series, *, keep_empty: bool = False) -> SeriesModel:
        """The model of ``s``; ``keep_empty`` lists empty buckets too (count 0, null values)."""
        # Renamed for a reader: index as gpu (as in every answer), times as ISO text.
        return cls(
            **record_values(s, "index", "since_ms", "until_ms", "buckets"),
            gpu=s.index,
            since=format_ts(s.since_ms),
            until=format_ts(s.until_ms),
            empty_buckets=sum(1 for b in s.buckets if b.count == 0),
            buckets=[BucketModel.from_bucket(b) for b in s.buckets if keep_empty or b.count],
        )


class HistoryResult(BaseModel):
    """Bucketed series, one per (GPU, metric); ``tier`` and ``step_ms`` say how fine they are."""

    series: list[SeriesModel]


class FurtherLimit(BaseModel):
    """A limit past the threshold, worth saying once it is crossed."""

    name: str = Field(description="e.g. shutdown temperature")
    value: float


class TrendModel(BaseModel):
    """One GPU's trend: latest reading, threshold crossed or not, slope and projection if earned.

    The CLI's ``trend --json`` stats are this model too. Numbers have 4 significant digits;
    times are ISO 8601 UTC strings.
    """

    gpu: int
    pci_bus_id: str
    metric: str
    unit: str
    status: TrendStatus = Field(
        description="crossed (the latest reading is at or past the threshold), approaching "
        "(hours_to_threshold given), not_approaching (flat or moving away), no_projection "
        "(too little data or the load changed: see reason), no_threshold, no_data"
    )
    current: float | None = Field(description="the latest reading (the newest raw sample)")
    current_ts: str | None
    current_from: Literal["sample", "bucket max", "bucket min"] | None = Field(
        description="sample, or the last bucket's max (min for a floor) once raw samples expired"
    )
    points: int = Field(description="buckets with data behind the fit")
    span_minutes: float = Field(description="minutes of the window covered by data")
    min: float | None
    avg: float | None
    max: float | None
    change: float | None = Field(description="last bucket's average minus the first's")
    slope_per_hour: float | None = Field(
        description="set for windows up to 3 days, when at least 5 points span 10 minutes"
    )
    slope_per_day: float | None = Field(
        description="instead of slope_per_hour for windows over 3 days"
    )
    r_squared: float | None = Field(description="fit quality; null with the slope")
    slope_reason: str | None = Field(description="why there is no slope, when there is none")
    threshold: float | None
    threshold_source: str | None = Field(
        description="given, the GPU's own limit, or the metric's default and why"
    )
    threshold_direction: Literal["above", "below"] | None = Field(
        default=None, description="above: reached from below (a ceiling); below: a floor"
    )
    further_limit: FurtherLimit | None = Field(
        default=None,
        description="a limit past the threshold (the shutdown temperature past the slowdown one)",
    )
    crossed: bool | None = Field(description="latest reading at or past the threshold")
    crossed_at: str | None = Field(
        description="when the readings went past the threshold and stayed there"
    )
    hours_to_threshold: float | None
    confidence: str = Field(description="high, medium, low or none: how far to trust the ETA")
    reason: str

    @classmethod
    def from_report(cls, s: Series, r: TrendReport) -> TrendModel:
        fit, now, limit = r.fit, r.current, r.threshold
        return cls(
            gpu=s.index,
            pci_bus_id=s.pci_bus_id,
            metric=s.metric,
            unit=s.unit,
            status=r.status,
            current=round_sig(now.value) if now else None,
            current_ts=format_ts(now.ts_ms) if now else None,
            current_from=now.source if now else None,
            points=fit.points,
            span_minutes=round(r.span_ms / 60_000, 1),
            min=round_sig(fit.min),
            avg=round_sig(fit.avg),
            max=round_sig(fit.max),
            change=round_sig(fit.change) if fit.points >= 2 else None,
            slope_per_hour=round_sig(r.slope) if r.slope_per == "hour" else None,
            slope_per_day=round_sig(r.slope) if r.slope_per == "day" else None,
            r_squared=None if r.r_squared is None else round(r.r_squared, 3),
            slope_reason=r.slope_reason,
            threshold=limit.value if limit else None,
            threshold_source=limit.source if limit else None,
            threshold_direction=None if limit is None else "above" if limit.above else "below",
            further_limit=FurtherLimit(name=limit.beyond[0], value=limit.beyond[1])
            if limit and limit.beyond
            else None,
            crossed=r.crossed,
            crossed_at=format_ts(r.crossed_at_ms) if r.crossed_at_ms is not None else None,
            hours_to_threshold=round_sig(r.hours_to_threshold, 3),
            confidence=r.confidence,
            reason=r.reason,
        )


class TrendResult(BaseModel):
    trends: list[TrendModel]
