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
from watcher.prometheus import GPU_LABELS

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
        self, since_ms: int, until_ms: int, *, nodes: Sequence[str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Per node Prometheus scraped in the window (or per one of ``nodes``): its XID counts
        per (GPU, code), shaped as the node's own ``summarize_xid_events`` rows, without times.
        """
        window = _range(since_ms, until_ms)
        only = self._select(nodes)
        xids = await self._series(XIDS, since_ms, until_ms) + only
        counts = xid_counts_query(xids, window, self.node_label)
        seen = f"count by ({self.node_label}) (max_over_time({STARTED}{only}[{window}]))"
        rows, scraped = await asyncio.gather(
            self.query(counts, until_ms), self.query(seen, until_ms)
        )
        out: dict[str, list[dict[str, Any]]] = {self._node(s): [] for s in scraped}
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
            return (await self.health(since_ms, until_ms, nodes=[node])).get(node)
        rows = (await self.xid_rows(since_ms, until_ms, nodes=[node])).get(node)
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

    async def health(
        self, since_ms: int, until_ms: int, *, nodes: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """Per one of ``nodes`` scraped in the window: the verdicts its daemon exported at its
        last scrape there. Six queries however many nodes are asked: when each was last
        scraped, then each node's series at its own time (PromQL's ``@``), all in one."""
        scraped = await self._last_scrapes(nodes, since_ms, until_ms)
        if not scraped:
            return {}
        node_verdicts, gpu_verdicts, lost, seen = await asyncio.gather(
            *(
                self.query(self._each_at(metric, scraped), until_ms)
                for metric in (
                    "xidwatch_node_verdict_action",
                    "xidwatch_gpu_verdict_action",
                    "xidwatch_gpu_lost",
                    "xidwatch_gpu_last_sample_timestamp_seconds",
                )
            )
        )
        node_verdict = {self._node(s): _verdict(s) for s in node_verdicts}
        gpus: dict[str, list[dict[str, Any]]] = {}
        lost_by, seen_by = self._by_gpu(lost), self._by_gpu(seen)
        # worst first: the gauge's value is the action's rank
        for s in sorted(gpu_verdicts, key=lambda s: (-s.value, s.labels.get("pci_bus_id", ""))):
            key = (self._node(s), _gpu_key(s))
            gpu: dict[str, Any] = {k: s.labels.get(k, "") for k in GPU_LABELS}
            gpu |= {"verdict": _verdict(s), "lost": key in lost_by and lost_by[key].value == 1}
            gpu["last_sample"] = _ts(seen_by[key].value if key in seen_by else None)
            gpus.setdefault(key[0], []).append(gpu)
        return {
            node: {
                "as_of": format_ts(at_ms),
                "node_verdict": node_verdict.get(node),
                "gpus": gpus.get(node, []),
                "missing": MISSING_HEALTH,
            }
            for node, at_ms in sorted(scraped.items())
        }

    async def _last_scrapes(
        self, nodes: Sequence[str], since_ms: int, until_ms: int
    ) -> dict[str, int]:
        """When Prometheus last scraped each of ``nodes``' daemons in the window, about: the
        newest sample a step of the window saw, or the daemon's own newest NVML read, the
        later. Series a stopped daemon left are stale after it, so later steps see none."""
        only = self._select(nodes)
        window_s = max(1, (until_ms - since_ms) // 1000)
        step_s = min(_MAX_STEP_S, max(1, window_s // 10_000))
        by_node = f"max by ({self.node_label})"
        answers = await asyncio.gather(
            self.query(
                f"{by_node} (max_over_time(timestamp({STARTED}{only})[{window_s}s:{step_s}s]))",
                until_ms,
            ),
            self.query(f"{by_node} (max_over_time({LAST_READ}{only}[{window_s}s]))", until_ms),
        )
        out: dict[str, int] = {}
        for s in (*answers[0], *answers[1]):
            node = self._node(s)
            if node and s.value > 0:
                out[node] = max(out.get(node, 0), round(s.value * 1000))
        return out

    def _each_at(self, metric: str, at_ms: Mapping[str, int]) -> str:
        """PromQL: ``metric``'s series of each node at its own instant (``@``), in one query
        (``or`` nested in halves, so Prometheus joins n nodes in n log n, not n squared)."""
        terms = [
            f"{metric}{self._select([node])} @ {ms / 1000:.3f}"
            for node, ms in sorted(at_ms.items())
        ]
        while len(terms) > 1:
            pairs = zip(terms[::2], terms[1::2], strict=False)
            terms = [f"({a} or {b})" for a, b in pairs] + terms[len(terms) - len(terms) % 2 :]
        return terms[0]

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

    def _select(self, nodes: Sequence[str] | None) -> str:
        """A selector for the series of ``nodes`` (one regex for many), or none for all."""
        if nodes is None:
            return ""
        if len(nodes) == 1:
            return f'{{{self.node_label}="{_quote(nodes[0])}"}}'
        return f'{{{self.node_label}=~"{_quote("|".join(re.escape(n) for n in nodes))}"}}'

    def _node(self, s: Sample) -> str:
        return s.labels.get(self.node_label, "")

    def _by_gpu(self, samples: Sequence[Sample]) -> dict[tuple[str, str], Sample]:
        return {(self._node(s), _gpu_key(s)): s for s in samples if math.isfinite(s.value)}


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


def _gpu_key(s: Sample) -> str:
    return s.labels.get("uuid") or s.labels.get("pci_bus_id", "")


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
