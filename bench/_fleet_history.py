"""The fake fleet's history as the Prometheus scraping every daemon would hold it.

For each node of :mod:`bench._fake_nodes`: the series ``mcp_server.gateway.history`` reads,
``xidwatch_start_time_seconds`` (which daemons were scraped) and one
``xidwatch_xid_events_total`` counter per row of the node's ``summarize_xid_events`` answer
(labels ``xid``, ``kind``, ``pci_bus_id``, ``action``, ``injected`` as the daemon exports
them, plus the ServiceMonitor's ``node``), sampled every 30 s (the ServiceMonitor's
interval). A counter appears at its first XID with 1 and holds the row's count from its
last, as the daemon's does. Silent nodes stopped being scraped ``SILENT_FOR_MS`` ago: their
history is there, they are not.

Not a benchmark itself (hence the ``_``: ``python -m bench`` skips it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bench._fake_nodes import node_answers
from bench._prometheus_tsdb import Family, Series, target_labels
from mcp_server.tools_xid import XidSummaryResult
from watcher.kernel.catalog import default_catalog

__all__ = ["SCRAPE_MS", "fleet_families"]

SCRAPE_MS = 30_000
SPAN_MS = (24 * 60 + 15) * 60_000  # a 24 h question, and the 10 min before it the query reads
SILENT_FOR_MS = 10 * 60_000
STARTED_AGO_MS = 3 * 86_400_000  # when every daemon started


def fleet_families(nodes: Sequence[tuple[str, bool]], now_ms: int) -> list[Family]:
    """The start-time and XID counter families of ``nodes`` ((name, silent), in the fake
    fleet's order) over the ``SPAN_MS`` before ``now_ms``."""
    grid = range(now_ms - SPAN_MS - now_ms % SCRAPE_MS, now_ms + 1, SCRAPE_MS)
    ends = {name: now_ms - SILENT_FOR_MS if silent else now_ms for name, silent in nodes}
    started = (now_ms - STARTED_AGO_MS) / 1000
    starts = (
        Series(target_labels(name), [(t, started) for t in grid if t <= ends[name]])
        for name, _ in nodes
    )
    return [
        Family("xidwatch_start_time_seconds", "gauge", starts),
        Family("xidwatch_xid_events_total", "counter", _xid_series(nodes, grid, ends, now_ms)),
    ]


def _xid_series(
    nodes: Sequence[tuple[str, bool]], grid: range, ends: dict[str, int], now_ms: int
) -> Iterator[Series]:
    catalog = default_catalog()
    for index, (name, _) in enumerate(nodes):
        answer = node_answers(index, name, now_ms=now_ms, catalog=catalog)
        summary = answer["summarize_xid_events"]
        assert isinstance(summary, XidSummaryResult)
        for row in summary.rows:
            labels = {
                "xid": str(row.xid),
                "kind": row.kind,
                "pci_bus_id": row.pci_bus_id or "",
                "action": row.action,
                "injected": "false",
                **target_labels(name),
            }
            points = [
                (t, float(row.count if t >= row.last_ts_ms else 1))
                for t in grid
                if row.first_ts_ms <= t <= ends[name]
            ]
            if points:
                yield Series(labels, points)
