"""Charts for ``xidwatch trend``: a sparkline per GPU with its XIDs marked, plus JSON and CSV.

Pure functions from store records to text. Values arrive already in the metric's unit (the
query layer applies ``Metric.scale``), so nothing here rescales. The current reading, the
threshold and the projection come from :func:`store.trend.assess_trend` (the caller passes
reports read with the raw samples), and the JSON is the MCP tools' SeriesModel and
TrendModel, so the CLI and the assistant see the same facts.
"""

from __future__ import annotations

import csv
import io
import shutil
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from mcp_server.answers import answer_data
from mcp_server.series_models import SeriesModel, TrendModel
from store.pci import normalize_pci
from store.records import Bucket, Series, StoredXid
from store.telemetry import METRICS, Metric
from store.trend import TrendReport, assess_trend, has_data
from store.windows import format_ts
from xidwatch.remote import trend_records

__all__ = [
    "CSV_FIELDS",
    "GAP",
    "LEVELS",
    "MARKER",
    "list_metrics_text",
    "merge_buckets",
    "render_answers",
    "render_trend",
    "sparkline",
    "trend_csv",
    "trend_json",
]

LEVELS = "▁▂▃▄▅▆▇█"
GAP = "·"
MARKER = "▲"
CSV_FIELDS = (
    "gpu",
    "uuid",
    "pci_bus_id",
    "metric",
    "unit",
    "ts",
    "ts_ms",
    "min",
    "avg",
    "max",
    "count",
)

_INDENT = "  "
_MIN_COLUMNS = 8
_MAX_GRID_SLOTS = 1_000_000
_MAX_XID_LABELS = 12
_DAY_MS = 86_400_000
_TIMES = "\N{MULTIPLICATION SIGN}"
# TrendModel fields that repeat the series' own identity, left out of ``stats``.
_IDENTITY = frozenset({"gpu", "pci_bus_id", "metric", "unit"})
_BOLD, _DIM, _RED = "1", "2", "31"


@dataclass(frozen=True, slots=True)
class _Marker:
    """XIDs of one code that fell in one chart column."""

    column: int
    kind: str
    xid: int
    ts_ms: int
    count: int


def sparkline(
    values: Sequence[float | None], *, lo: float | None = None, hi: float | None = None
) -> str:
    """One block character per value, ``lo`` drawn as ``▁`` and ``hi`` as ``█``; None is a gap.

    ``lo`` and ``hi`` default to the extremes of ``values``; the trend chart passes the
    series' true min and max, so the line sits where the averages are within the range the
    stats line reports, and sample noise on a steady GPU does not fill all eight levels. A
    series that never varies draws at the lowest level: a baseline reads as "steady".
    """
    present = [v for v in values if v is not None]
    if not present:
        return GAP * len(values)
    low = min(present) if lo is None else lo
    high = max(present) if hi is None else hi
    top = len(LEVELS) - 1
    chars = []
    for v in values:
        if v is None:
            chars.append(GAP)
        elif high <= low:
            chars.append(LEVELS[0])
        else:
            level = int((v - low) / (high - low) * len(LEVELS))
            chars.append(LEVELS[min(top, max(0, level))])
    return "".join(chars)


def merge_buckets(buckets: Sequence[Bucket], columns: int) -> list[Bucket]:
    """Fold adjacent buckets so at most ``columns`` remain, keeping the true extremes.

    Bucket ``i`` goes to column ``i * columns // len(buckets)``; a merged bucket has the
    min of the mins, the max of the maxes, the count-weighted average and the summed count,
    and starts where its first bucket does.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, not {columns}")
    if len(buckets) <= columns:
        return list(buckets)
    n = len(buckets)
    return [
        _merge([b for _, b in group])
        for _, group in groupby(enumerate(buckets), key=lambda ib: ib[0] * columns // n)
    ]


def render_trend(
    series: Sequence[Series],
    xids: Sequence[StoredXid],
    *,
    metric: Metric,
    width: int | None = None,
    color: bool = False,
    reports: Mapping[str, TrendReport] | None = None,
) -> str:
    """Per GPU: a header, a sparkline of bucket averages, its XIDs marked, now, and the stats.

    ``width`` is the line width to fit the chart in (the terminal's when None). XIDs are
    drawn under the GPU whose PCI bus id (or UUID) they carry, in the column of the bucket
    they fell in. ``reports`` (by GPU UUID) carry the latest reading and the threshold; a
    GPU without one is assessed from its buckets alone. :func:`render_answers` draws the
    same chart from a node's answers.
    """
    records = [(s, _report(s, reports)) for s in series]
    return _render(records, xids, metric, width, color)


def render_answers(
    answers: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    xids: Sequence[StoredXid],
    *,
    metric: Metric,
    width: int | None = None,
    color: bool = False,
) -> str:
    """:func:`render_trend` from answers: per GPU a ``get_metric_history`` series and its
    ``get_metric_trend`` answer, as JSON data (``kubectl xidwatch trend``). Answers carry 4
    significant digits, so a number whose 4th is a 5 may show one unit off in its 3rd."""
    records = [trend_records(s, t) for s, t in answers]
    return _render(records, xids, metric, width, color)


def _render(
    records: Sequence[tuple[Series, TrendReport]],
    xids: Sequence[StoredXid],
    metric: Metric,
    width: int | None,
    color: bool,
) -> str:
    series = [s for s, _ in records]
    if not series:
        return f"no {metric.name} data: no GPU series to show"
    if not any(has_data(b) for s in series for b in s.buckets):
        first = series[0]
        gpus = ", ".join(str(s.index) for s in series)
        return (
            f"no {metric.name} data for GPU {gpus} in tier {first.tier}, "
            f"{_short_ts(first.since_ms)} .. {_short_ts(first.until_ms)}"
        )
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    columns = max(_MIN_COLUMNS, width - len(_INDENT))
    blocks = [_render_one(s, xids, metric, columns, color, report) for s, report in records]
    return "\n\n".join(blocks)


def trend_json(
    series: Sequence[Series],
    xids: Sequence[StoredXid],
    metric: Metric,
    reports: Mapping[str, TrendReport] | None = None,
) -> list[dict[str, object]]:
    """The ``trend --json`` objects, one per GPU: a stable contract (fields added, not renamed).

    Each is the MCP SeriesModel with every bucket listed (empty ones with null values),
    ``stats`` (the MCP TrendModel less the GPU and metric named above it) and ``xids``;
    rounded as the MCP answers are (:func:`mcp_server.answers.answer_data`).
    """
    out: list[dict[str, object]] = []
    for s in series:
        body = answer_data(SeriesModel.from_series(s, keep_empty=True))
        trend = answer_data(TrendModel.from_report(s, _report(s, reports)))
        body["metric"], body["unit"] = metric.name, metric.unit
        body["stats"] = {k: v for k, v in trend.items() if k not in _IDENTITY}
        body["xids"] = [
            {
                "ts": format_ts(x.ts_ms),
                "ts_ms": x.ts_ms,
                "kind": x.kind,
                "xid": x.xid,
                "count": x.count,
            }
            for x in _xids_for(s, xids)
        ]
        out.append(body)
    return out


def trend_csv(series: Sequence[Series]) -> str:
    """One row per bucket of every series; empty cells where a bucket has no data."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for s in series:
        for b in s.buckets:
            writer.writerow(
                (
                    s.index,
                    s.uuid,
                    s.pci_bus_id,
                    s.metric,
                    s.unit,
                    format_ts(b.ts_ms),
                    b.ts_ms,
                    _csv_number(b.min),
                    _csv_number(b.avg),
                    _csv_number(b.max),
                    b.count,
                )
            )
    return buf.getvalue()


def list_metrics_text(metrics: Sequence[Metric] = METRICS) -> str:
    """The metrics ``trend --metric`` accepts, as an aligned table."""
    rows = [("METRIC", "UNIT", "KIND", "DESCRIPTION")]
    rows += [(m.name, m.unit, m.kind, m.description) for m in metrics]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)), r[3]]) for r in rows
    )


def _report(series: Series, reports: Mapping[str, TrendReport] | None) -> TrendReport:
    given = reports.get(series.uuid) if reports else None
    return given if given is not None else assess_trend(series)


def _render_one(
    series: Series,
    xids: Sequence[StoredXid],
    metric: Metric,
    columns: int,
    color: bool,
    report: TrendReport,
) -> str:
    header = (
        f"GPU {series.index}  {series.pci_bus_id}  {metric.name} ({metric.unit})  "
        f"tier {series.tier}, step {_duration(series.step_ms)}, "
        f"{_short_ts(series.since_ms)} .. {_short_ts(series.until_ms)}"
    )
    lines = [_paint(header, _BOLD, color)]
    fit = report.fit
    if fit.points == 0:
        lines.append(f"{_INDENT}no data in this window")
        return "\n".join(lines)
    slots = _slots(series)
    merged = merge_buckets(slots, columns)
    spark = sparkline([b.avg if has_data(b) else None for b in merged], lo=fit.min, hi=fit.max)
    if color:
        spark = "".join(_paint(c, _DIM, True) if c == GAP else c for c in spark)
    lines.append(_INDENT + spark)
    markers = _markers(series, xids, slots, columns)
    if markers:
        marked = {m.column for m in markers}
        row = "".join(MARKER if c in marked else " " for c in range(len(merged))).rstrip()
        lines.append(_INDENT + _paint(row, _RED, color))
        lines.append(_INDENT + _marker_labels(markers, series, columns))
    now = _now_line(report, series, metric.unit)
    if now:
        lines.append(_INDENT + _paint(now, _RED, color and report.status == "crossed"))
    lines.append(_INDENT + _stats(report, series, metric.unit))
    return "\n".join(lines)


def _slots(series: Series) -> list[Bucket]:
    """The series' buckets on a gap-free grid over its window, when they lie on one.

    A query may leave out empty buckets or start after ``since``; the grid puts the gaps
    back so that one column is always one step of time. Buckets that are not on a common
    step grid (jittered raw samples) are drawn as given.
    """
    buckets, step = series.buckets, series.step_ms
    if not buckets or step <= 0:
        return list(buckets)
    origin = buckets[0].ts_ms
    if any((b.ts_ms - origin) % step for b in buckets):
        return list(buckets)
    start = origin - max(0, -(-(origin - series.since_ms) // step)) * step
    end = max(series.until_ms, buckets[-1].ts_ms + step)
    n = -(-(end - start) // step)
    if n > _MAX_GRID_SLOTS:
        return list(buckets)
    by_ts = {b.ts_ms: b for b in buckets}
    return [
        by_ts.get(ts) or Bucket(ts_ms=ts, min=None, avg=None, max=None, count=0)
        for ts in range(start, start + n * step, step)
    ]


def _merge(group: Sequence[Bucket]) -> Bucket:
    data = [b for b in group if has_data(b)]
    if not data:
        return Bucket(ts_ms=group[0].ts_ms, min=None, avg=None, max=None, count=0)
    count = sum(b.count for b in data)
    return Bucket(
        ts_ms=group[0].ts_ms,
        min=min(b.min if b.min is not None else _avg(b) for b in data),
        avg=sum(_avg(b) * b.count for b in data) / count,
        max=max(b.max if b.max is not None else _avg(b) for b in data),
        count=count,
    )


def _avg(bucket: Bucket) -> float:
    assert bucket.avg is not None  # only called on buckets that pass has_data
    return bucket.avg


def _xids_for(series: Series, xids: Sequence[StoredXid]) -> list[StoredXid]:
    """This GPU's XIDs that overlap the series window, oldest first."""
    keys = {_pci_key(series.pci_bus_id)}
    mine = [
        x
        for x in xids
        if (
            (x.pci_bus_id is not None and _pci_key(x.pci_bus_id) in keys)
            or (x.gpu_uuid is not None and x.gpu_uuid == series.uuid)
        )
        and x.ts_ms < series.until_ms
        and x.last_ts_ms >= series.since_ms
    ]
    return sorted(mine, key=lambda x: (x.ts_ms, x.id))


def _pci_key(pci_bus_id: str) -> str:
    """``0000:3b:00.0`` and ``00000000:3B:00.0`` name the same device."""
    try:
        return normalize_pci(pci_bus_id)
    except ValueError:
        return pci_bus_id.strip().upper()


def _markers(
    series: Series, xids: Sequence[StoredXid], slots: Sequence[Bucket], columns: int
) -> list[_Marker]:
    """XIDs grouped by chart column and code; a burst counts as the events it stands for."""
    starts = [b.ts_ms for b in slots]
    n = len(slots)
    counts: dict[tuple[int, str, int], _Marker] = {}
    for x in _xids_for(series, xids):
        ts = max(x.ts_ms, series.since_ms)
        slot = max(0, bisect_right(starts, ts) - 1)
        column = slot * columns // n if n > columns else slot
        key = (column, x.kind, x.xid)
        prev = counts.get(key)
        if prev is None:
            counts[key] = _Marker(column, x.kind, x.xid, x.ts_ms, x.count)
        else:
            counts[key] = _Marker(column, x.kind, x.xid, prev.ts_ms, prev.count + x.count)
    return sorted(counts.values(), key=lambda m: (m.column, m.ts_ms, m.xid))


def _marker_labels(markers: Sequence[_Marker], series: Series, width: int) -> str:
    """The list under the markers, like ``▲ 79 @11:02, 31 @11:40``, fitted to ``width``.

    Each entry is a code, a multiplication sign and how many times it was seen when more
    than once, and the first time (UTC; with the date when the window is over a day).
    """
    long_window = series.until_ms - series.since_ms > _DAY_MS
    labels = []
    for m in markers:
        code = f"SXid {m.xid}" if m.kind == "sxid" else str(m.xid)
        times = f"{_TIMES}{m.count}" if m.count > 1 else ""
        stamp = format_ts(m.ts_ms)
        when = f"{stamp[5:10]} {stamp[11:16]}" if long_window else stamp[11:16]
        labels.append(f"{code}{times} @{when}")
    text = f"{MARKER} {labels[0]}"
    for i, label in enumerate(labels[1:], start=1):
        left = len(labels) - i
        tail = f", +{left - 1} more" if left > 1 else ""
        if i >= _MAX_XID_LABELS or len(text) + 2 + len(label) + len(tail) > width:
            return f"{text}, +{left} more"
        text += f", {label}"
    return text


def _now_line(report: TrendReport, series: Series, unit: str) -> str:
    """``now 96 °C at 10:41:07Z · crossed 92 °C (slowdown_temp of GPU 2) at 10:32:05Z``."""
    now, limit = report.current, report.threshold
    if now is None:
        return ""
    text = f"now {_num(now.value)} {unit} at {_when(now.ts_ms, series)}"
    if now.source != "sample":
        text += f" ({now.source})"
    if limit is None:
        return text
    line = f"{_num(limit.value)} {unit} ({limit.source})"
    if report.status == "crossed":
        assert report.crossed_at_ms is not None
        text += f" · crossed {line} at {_when(report.crossed_at_ms, series)}"
        if limit.beyond is not None:
            name, value = limit.beyond
            text += f"; {name} {_num(value)} {unit}"
    elif report.status == "approaching":
        assert report.hours_to_threshold is not None
        text += (
            f" · reaches {line} in {_hours(report.hours_to_threshold)}, "
            f"confidence {report.confidence}"
        )
    else:
        text += f" · {line}: {report.reason}"
    return text


def _stats(report: TrendReport, series: Series, unit: str) -> str:
    """``min 41 avg 63.2 max 88 °C · slope +2.4 °C/h (r² 0.93) · change +17 over 24h``."""
    fit = report.fit
    assert fit.min is not None and fit.avg is not None and fit.max is not None
    parts = [f"min {_num(fit.min)} avg {_num(fit.avg)} max {_num(fit.max)} {unit}"]
    if report.slope is None:
        parts.append(f"slope n/a ({report.slope_reason or 'no fit'})")
    else:
        r_squared = f" (r² {report.r_squared:.2f})" if report.r_squared is not None else ""
        per = "h" if report.slope_per == "hour" else "d"
        parts.append(f"slope {_num(report.slope, signed=True)} {unit}/{per}{r_squared}")
    if fit.points >= 2 and fit.change is not None and fit.first_ts_ms is not None:
        assert fit.last_ts_ms is not None
        start = max(fit.first_ts_ms, series.since_ms)
        end = min(fit.last_ts_ms + series.step_ms, series.until_ms)
        over = _duration(max(end - start, fit.last_ts_ms - fit.first_ts_ms))
        parts.append(f"change {_num(fit.change, signed=True)} over {over}")
    return " · ".join(parts)


def _when(ts_ms: int, series: Series) -> str:
    """A reading's time: ``10:41:07Z``, with the date when the window is over a day."""
    stamp = format_ts(ts_ms)
    if series.until_ms - series.since_ms > _DAY_MS:
        return f"{stamp[5:10]} {stamp[11:19]}Z"
    return f"{stamp[11:19]}Z"


def _hours(hours: float) -> str:
    """``45m``, ``5.2 h``, ``3.1 d``."""
    if hours < 1:
        return f"{max(1, round(hours * 60))}m"
    if hours < 48:
        return f"{_num(hours)} h"
    return f"{_num(hours / 24)} d"


def _num(value: float, *, signed: bool = False) -> str:
    """Three significant digits, whole numbers kept whole: 41, 63.2, 312, 81234, 0.125."""
    magnitude = abs(value)
    if magnitude >= 1:
        decimals = max(0, 3 - len(str(int(magnitude))))
        text = f"{value:.{decimals}f}"
    elif magnitude >= 1e-4 or magnitude == 0:
        text = f"{value:.3g}"
    else:
        text = f"{value:.1e}"
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", "0"):
        return "0"
    return f"+{text}" if signed and not text.startswith("-") else text


def _duration(ms: int) -> str:
    """Compact, the largest unit and the next: ``5m``, ``24h``, ``23h55m``, ``7d``, ``1m30s``.

    Days start at 48 h, so a day-long window reads ``24h`` as people say it.
    """
    if ms < 1000:
        return f"{ms}ms"
    units: tuple[tuple[str, int], ...] = (
        ("d", _DAY_MS),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    )
    if ms < 2 * _DAY_MS:
        units = units[1:]
    for i, (name, size) in enumerate(units):
        if ms >= size:
            text = f"{ms // size}{name}"
            if i + 1 < len(units):
                next_name, next_size = units[i + 1]
                rest = ms % size // next_size
                text += f"{rest}{next_name}" if rest else ""
            return text
    return f"{ms}ms"


def _short_ts(ts_ms: int) -> str:
    """ISO time without the zero seconds and milliseconds: ``2026-11-24T10:00Z``."""
    text = format_ts(ts_ms)
    if ts_ms % 60_000 == 0:
        return text[:16] + "Z"
    if ts_ms % 1_000 == 0:
        return text[:19] + "Z"
    return text


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(value)


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and text else text
