"""The benchmarks' Prometheus peer holds what they wrote: series written as OpenMetrics,
made into blocks by promtool and served by a real Prometheus come back with their labels
and values, through the same query_range and avg_over_time the query benchmark asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import _prometheus_tsdb as tsdb
from bench._prometheus_tsdb import Family, Series, target_labels
from tests.prometheus_server import api

pytestmark = pytest.mark.skipif(tsdb.missing_tools() is not None, reason=str(tsdb.missing_tools()))

T0_MS = 1_732_406_400_000 - 3 * 86_400_000  # three days before the query benchmark's "now"
MINUTE_MS = 60_000


def test_backfilled_series_answer_query_range_with_their_labels_and_values(
    tmp_path: Path,
) -> None:
    gpu = {"gpu": "0", "uuid": "GPU-1", "pci_bus_id": "00000000:18:00.0", "model": "H100"}
    temps = [(T0_MS + i * MINUTE_MS, float(40 + i % 10)) for i in range(3 * 24 * 60)]
    starts = [(T0_MS + i * MINUTE_MS, 1.7e9) for i in range(3 * 24 * 60)]
    families = [
        Family(
            "xidwatch_gpu_temperature_celsius",
            "gauge",
            [Series({**gpu, **target_labels("n1")}, temps)],
        ),
        Family(
            "xidwatch_xid_events_total", "counter", [Series(target_labels("n1"), [(T0_MS, 2.0)])]
        ),
        Family("xidwatch_start_time_seconds", "gauge", [Series(target_labels("n1"), starts)]),
    ]
    text = tmp_path / "series.om"
    assert tsdb.write_openmetrics(text, families) == 2 * len(temps) + 1
    tsdb.create_blocks(text, tmp_path / "tsdb", block_hours=54)

    with tsdb.prometheus_serving(tmp_path, retention="31d") as url:
        step_s = 600  # ten samples a point, 40..49 each time: the mean is 44.5
        end_ms = T0_MS + len(temps) * MINUTE_MS
        data = api(  # as bench.query asks: each point [t - step, t), one point per bucket
            url,
            "/api/v1/query_range",
            query='avg_over_time(xidwatch_gpu_temperature_celsius{node="n1"}[599999ms])',
            start=f"{(T0_MS + step_s * 1000 - 1) / 1000:.3f}",
            end=f"{(end_ms - 1) / 1000:.3f}",
            step=str(step_s),
        )
        xids = api(url, "/api/v1/query", query="xidwatch_xid_events_total", time=str(T0_MS / 1000))
        start = api(
            url, "/api/v1/query", query="xidwatch_start_time_seconds", time=str(end_ms // 1000)
        )

    (series,) = data["result"]
    assert series["metric"] == {**gpu, **target_labels("n1")}
    assert {float(v) for _, v in series["values"]} == {44.5}
    assert len(series["values"]) == len(temps) * MINUTE_MS // 1000 // step_s
    assert [(x["metric"]["node"], x["value"][1]) for x in xids["result"]] == [("n1", "2")]
    assert [float(x["value"][1]) for x in start["result"]] == [1.7e9]  # no digit lost
