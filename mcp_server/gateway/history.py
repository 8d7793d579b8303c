"""Fleet history from Prometheus: the daemons' own series, asked with PromQL.

The Prometheus that scrapes every daemon keeps its XID counters and GPU gauges after the
node is gone, so a node that is down now still has a history, and one instant query
answers for the whole fleet instead of a fan-out. Only the HTTP API (``/api/v1/query``) is
used, so Thanos, Mimir and VictoriaMetrics answer the same. Series are tied to nodes by the
target label the shipped ServiceMonitor sets (``node``). What Prometheus cannot give:
pids, process names, messages, XID times, and bursts (it keeps counts).
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from mcp_server.gateway.errors import GatewayError
from store.windows import format_ts

__all__ = [
    "MISSING_HEALTH",
    "MISSING_XIDS",
    "RECORDED",
    "THRESHOLDS",
    "XIDS",
    "GpuTrendPoint",
    "PrometheusError",
    "PrometheusHistory",
    "PrometheusSource",
    "Sample",
    "xid_counts_query",
]

XIDS = "xidwatch_xid_events_total"
STARTED = "xidwatch_start_time_seconds"  # one series per daemon: which nodes were scraped
LAST_READ = "xidwatch_last_successful_sample_timestamp_seconds"  # the daemon's newest NVML read
# Per GPU, the series a reading is measured against: its own limit, not a fleet constant.
THRESHOLDS = {
    "xidwatch_gpu_temperature_celsius": "xidwatch_gpu_slowdown_temperature_celsius",
    "xidwatch_gpu_power_watts": "xidwatch_gpu_power_limit_watts",
    "xidwatch_gpu_memory_used_bytes": "xidwatch_gpu_memory_total_bytes",
}
# What alerts/xidwatch.history.rules.yml records every 5 minutes; long windows read these.
RECORDED = {
    XIDS: "xidwatch:xid_events_total:max5m",
    **{
        metric: f"xidwatch:{metric.removeprefix('xidwatch_')}:avg5m"
        for metric in (
            "xidwatch_gpu_temperature_celsius",
            "xidwatch_gpu_power_watts",
            "xidwatch_gpu_utilization_ratio",
            "xidwatch_gpu_memory_used_bytes",
            "xidwatch_gpu_sm_clock_hertz",
        )
    },
}
RECORDED_FROM_S = 6 * 3600  # windows at least this long read the recorded means
# What a per-node answer from Prometheus lacks, said in the answer.
MISSING_XIDS = (
    "event times, ids, pids, process names and messages: Prometheus keeps counts per GPU "
    "and code; ask the node when it answers again"
)
MISSING_HEALTH = (
    "scores, findings, steps and the verdict's reasons: Prometheus keeps each verdict's "
    "action and cause; ask the node when it answers again"
)
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ERROR_CHARS = 300
_MAX_STEP_S = 240  # under the 5-minute lookback, so no scrape falls between two steps


class PrometheusError(GatewayError):
    """Prometheus did not answer a query; the message says what to check."""


@dataclass(frozen=True, slots=True)
class PrometheusSource:
    """Where the fleet's history is, and how to be let in."""

    url: str
    node_label: str = "node"
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_file: Path | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise GatewayError(f"--prometheus-url {self.url!r} must start with http:// or https://")
        if not _LABEL.match(self.node_label):
            raise GatewayError(
                f"--prometheus-node-label {self.node_label!r} is not a Prometheus label name"
            )


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of an instant vector: its labels and its value."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class GpuTrendPoint:
    """One GPU's reading over the window: where it is, its peak, its slope, its limit."""

    node: str
    labels: Mapping[str, str]
    last: float
    peak: float
    slope_per_hour: float
    threshold: float | None


class PrometheusHistory:
    """Asks one Prometheus (or a server with its query API) about the daemons' series."""

    def __init__(self, source: PrometheusSource, http: httpx2.AsyncClient | None = None) -> None:
        self.source = source
        self.node_label = source.node_label
        self._http = http or httpx2.AsyncClient(**_client_options(source))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, promql: str, at_ms: int) -> list[Sample]:
        """An instant query's vector at ``at_ms``; a :class:`PrometheusError` says why not."""
        url = f"{self.source.url.rstrip('/')}/api/v1/query"
        params = {"query": promql, "time": f"{at_ms / 1000:.3f}"}
        try:
            response = await self._http.post(url, data=params)
            body = response.json()
        except httpx2.HTTPError as e:
            raise PrometheusError(f"cannot query {url}: {e or type(e).__name__}") from e
        except ValueError as e:
            text = response.text[:_ERROR_CHARS]
            raise PrometheusError(f"{url} answered HTTP {response.status_code}: {text}") from e
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise PrometheusError(f"{url} answered HTTP {response.status_code}: {error}")
        return [_sample(item) for item in body["data"]["result"]]

    async def xid_rows(
        self, since_ms: int, until_ms: int, *, node: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Per node Prometheus scraped in the window (or only ``node``): its XID counts per
        (GPU, code), shaped as the node's own ``summarize_xid_events`` rows, without times."""
        window = _range(since_ms, until_ms)
        xids = await self._series(XIDS, since_ms, until_ms) + self._only(node)
        started = STARTED + self._only(node)
        counts = xid_counts_query(xids, window, self.node_label)
        seen = f"count by ({self.node_label}) (max_over_time({started}[{window}]))"
        rows, nodes = await asyncio.gather(self.query(counts, until_ms), self.query(seen, until_ms))
        out: dict[str, list[dict[str, Any]]] = {self._node(s): [] for s in nodes}
        for s in rows:
            out.setdefault(self._node(s), []).append(_xid_row(s))
        out.pop("", None)
        return out

    async def node_answer(
        self, node: str, tool: str, args: Mapping[str, Any], since_ms: int, until_ms: int
    ) -> dict[str, Any] | None:
        """``tool``'s answer for ``node`` as far as its series tell, with what they cannot
        (``missing``); None when Prometheus has nothing of the node in the window."""
        if tool == "get_gpu_health":
            return await self._health(node, since_ms, until_ms)
        rows = (await self.xid_rows(since_ms, until_ms, node=node)).get(node)
        if rows is None:
            return None
        codes, kind = set(args.get("codes") or ()), args.get("kind")
        actions = set(args.get("actions") or ())
        rows = [
            r
            for r in rows
            if (not codes or r["xid"] in codes)
            and (kind is None or r["kind"] == kind)
            and (not actions or r["action"] in actions)
        ]
        return {"rows": rows, "total": sum(r["count"] for r in rows), "missing": MISSING_XIDS}

    async def _health(self, node: str, since_ms: int, until_ms: int) -> dict[str, Any] | None:
        """The verdicts the node's daemon exported at its last scrape in the window."""
        at_ms = await self._last_scrape_ms(node, since_ms, until_ms)
        if at_ms is None:
            return None
        only = self._only(node)
        gpus, node_verdict, lost, seen = await asyncio.gather(
            *(
                self.query(f"{metric}{only}", at_ms)
                for metric in (
                    "xidwatch_gpu_verdict_action",
                    "xidwatch_node_verdict_action",
                    "xidwatch_gpu_lost",
                    "xidwatch_gpu_last_sample_timestamp_seconds",
                )
            )
        )
        lost_by, seen_by = self._by_pci(lost), self._by_pci(seen)
        return {
            "as_of": format_ts(at_ms),
            "node_verdict": _verdict(node_verdict[0]) if node_verdict else None,
            "gpus": [
                {
                    **{k: s.labels.get(k, "") for k in ("gpu", "uuid", "pci_bus_id", "model")},
                    "verdict": _verdict(s),
                    "lost": lost_by.get(s.labels.get("pci_bus_id", "")) == 1,
                    "last_sample": _ts(seen_by.get(s.labels.get("pci_bus_id", ""))),
                }
                for s in sorted(gpus, key=lambda s: (-s.value, s.labels.get("pci_bus_id", "")))
            ],
            "missing": MISSING_HEALTH,
        }

    async def _last_scrape_ms(self, node: str, since_ms: int, until_ms: int) -> int | None:
        """When Prometheus last scraped ``node``'s daemon in the window, about: the newest
        sample a step of the window saw, or the daemon's own newest NVML read, the later.
        Series a stopped daemon left are stale after it, so they answer nothing later."""
        window_s = max(1, (until_ms - since_ms) // 1000)
        step = min(_MAX_STEP_S, max(1, window_s // 10_000))
        only = self._only(node)
        answers = await asyncio.gather(
            self.query(
                f"max(max_over_time(timestamp({STARTED}{only})[{window_s}s:{step}s]))", until_ms
            ),
            self.query(f"max(max_over_time({LAST_READ}{only}[{window_s}s]))", until_ms),
        )
        found = [s.value for answer in answers for s in answer if s.value > 0]
        return round(max(found) * 1000) if found else None

    async def nodes_up(self, at_ms: int) -> set[str]:
        """The nodes whose daemon Prometheus scraped at ``at_ms`` (a stopped one goes stale)."""
        return {
            self._node(s)
            for s in await self.query(f"count by ({self.node_label}) ({STARTED})", at_ms)
        } - {""}

    async def trend(
        self, metric: str, since_ms: int, until_ms: int, threshold: float | None
    ) -> tuple[list[GpuTrendPoint], str]:
        """Every GPU's last value, peak and slope of ``metric`` over the window, and which
        series answered (the recorded 5-minute means for long windows, where loaded)."""
        window = _range(since_ms, until_ms)
        series = await self._series(metric, since_ms, until_ms)
        queries = [
            f"last_over_time({series}[{window}])",
            f"max_over_time({series}[{window}])",
            f"deriv({series}[{window}])",
        ]
        limit = THRESHOLDS.get(metric) if threshold is None else None
        if limit is not None:
            queries.append(f"last_over_time({limit}[{window}])")
        answers = await asyncio.gather(*(self.query(q, until_ms) for q in queries))
        last, peak, slope = (self._by_gpu(a) for a in answers[:3])
        limits = self._by_gpu(answers[3]) if limit is not None else {}
        points = [
            GpuTrendPoint(
                node=self._node(s),
                labels=s.labels,
                last=s.value,
                peak=peak[key].value if key in peak else s.value,
                slope_per_hour=slope[key].value * 3600 if key in slope else 0.0,
                threshold=threshold if key not in limits else limits[key].value,
            )
            for key, s in last.items()
        ]
        return points, series

    async def _series(self, metric: str, since_ms: int, until_ms: int) -> str:
        """``metric``, or its recorded 5-minute series for a long window where Prometheus
        has it (the rules loaded)."""
        recorded = RECORDED.get(metric)
        if recorded is None or (until_ms - since_ms) / 1000 < RECORDED_FROM_S:
            return metric
        window = _range(since_ms, until_ms)
        found = await self.query(f"count(last_over_time({recorded}[{window}]))", until_ms)
        return recorded if found else metric

    def _only(self, node: str | None) -> str:
        """A selector for ``node``'s series, or none."""
        return "" if node is None else f'{{{self.node_label}="{_quote(node)}"}}'

    def _by_pci(self, samples: Sequence[Sample]) -> dict[str, float]:
        return {s.labels.get("pci_bus_id", ""): s.value for s in samples}

    def _node(self, s: Sample) -> str:
        return s.labels.get(self.node_label, "")

    def _by_gpu(self, samples: Sequence[Sample]) -> dict[tuple[str, str], Sample]:
        return {
            (self._node(s), s.labels.get("uuid") or s.labels.get("pci_bus_id", "")): s
            for s in samples
            if math.isfinite(s.value)
        }


def xid_counts_query(xids: str, window: str, node_label: str) -> str:
    """PromQL: XIDs per (node, GPU, code, action) in the ``window`` before the query time.

    A series appears with its first XID, so increase() misses that one: a series born in
    the window (no sample in the 10 minutes before it) counts whole; the others count their
    increase (over restarts too), rounded, as Prometheus extrapolates to the window's ends.
    """
    by = f"{node_label}, pci_bus_id, kind, xid, action"
    born = f"max_over_time({xids}[{window}]) unless last_over_time({xids}[10m] offset {window})"
    return f"sum by ({by}) (({born}) or round(increase({xids}[{window}]))) > 0"


def _client_options(source: PrometheusSource) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {source.bearer_token}"} if source.bearer_token else {}
    options: dict[str, Any] = {"headers": headers, "timeout": source.timeout_s}
    if source.basic_auth is not None:
        options["auth"] = source.basic_auth
    if source.ca_file is not None:
        try:
            options["verify"] = ssl.create_default_context(cafile=str(source.ca_file))
        except (OSError, ssl.SSLError) as e:
            raise GatewayError(f"cannot read --prometheus-ca-file {source.ca_file}: {e}") from e
    return options


def _quote(value: str) -> str:
    """A PromQL string literal's inside."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _ts(seconds: float | None) -> str | None:
    return None if seconds is None or seconds <= 0 else format_ts(round(seconds * 1000))


def _verdict(s: Sample) -> dict[str, Any]:
    return {"action": s.labels.get("action", ""), "cause": s.labels.get("cause", "")}


def _range(since_ms: int, until_ms: int) -> str:
    """The window as a PromQL range, in whole seconds (at least one)."""
    return f"{max(1, (until_ms - since_ms) // 1000)}s"


def _sample(item: Mapping[str, Any]) -> Sample:
    labels = dict(item["metric"])
    return Sample(labels, float(item["value"][1]))


def _xid_row(s: Sample) -> dict[str, Any]:
    return {
        "kind": s.labels.get("kind", "xid"),
        "xid": int(s.labels.get("xid", "0")),
        "pci_bus_id": s.labels.get("pci_bus_id") or None,
        "action": s.labels.get("action", "UNKNOWN"),
        "count": round(s.value),
        "first_ts_ms": None,
        "last_ts_ms": None,
    }
