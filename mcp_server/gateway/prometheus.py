"""The gateway's Prometheus metrics, in a registry of its own (served on its ``/metrics``).

One collector renders in-memory state at scrape time, as the daemon's does: latencies and
errors are counted as node calls end; breaker states and the node count are read from the
fleet, so an open breaker whose cooldown has passed shows as half-open before any call,
and a node that leaves discovery leaves the page with it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mcp_server.gateway.breaker import BreakerState

__all__ = ["BUCKETS_S", "GatewayMetrics"]

# Node latencies run from a few ms (a small summary) to the timeout (a hung node).
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

BreakerStates = Callable[[], Iterable[tuple[str, BreakerState]]]
DiscoveryCounts = Callable[[], tuple[int, int]]  # (nodes known, failed refreshes)


@dataclass(slots=True)
class _Latency:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    sum_s: float = 0.0


class GatewayMetrics(Collector):
    """Everything the gateway exports; ``registry`` is what ``/metrics`` renders."""

    def __init__(self, breakers: BreakerStates, discovery: DiscoveryCounts) -> None:
        self._breakers = breakers
        self._discovery = discovery
        self._latency: dict[tuple[str, str], _Latency] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def observe(self, node: str, tool: str, seconds: float) -> None:
        latency = self._latency.setdefault((node, tool), _Latency())
        latency.buckets[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        latency.sum_s += seconds

    def error(self, node: str, reason: str) -> None:
        self._errors[(node, reason)] = self._errors.get((node, reason), 0) + 1

    def forget(self, node: str) -> None:
        """Drop a node's series when it leaves discovery, so the page stays bounded."""
        self._latency = {k: v for k, v in self._latency.items() if k[0] != node}
        self._errors = {k: v for k, v in self._errors.items() if k[0] != node}

    def collect(self) -> Iterator[Metric]:
        yield self._histogram()
        errors = CounterMetricFamily(
            "xidwatch_gateway_node_errors",
            "Node calls that gave no result, by reason (timeout, refused, http_401, "
            "tool_error, breaker_open, ...).",
            labels=("node", "reason"),
        )
        for (node, reason), count in sorted(self._errors.items()):
            errors.add_metric((node, reason), count)
        yield errors
        state = GaugeMetricFamily(
            "xidwatch_gateway_node_breaker_state",
            "Circuit breaker per node: 0 closed, 1 half-open, 2 open.",
            labels=("node",),
        )
        for node, value in self._breakers():
            state.add_metric((node,), int(value))
        yield state
        nodes, failures = self._discovery()
        yield GaugeMetricFamily(
            "xidwatch_gateway_nodes", "Node daemons the gateway currently knows.", value=nodes
        )
        yield CounterMetricFamily(
            "xidwatch_gateway_discovery_failures",
            "Discovery refreshes that failed (the last good node list was kept).",
            value=failures,
        )

    def _histogram(self) -> Metric:
        family = HistogramMetricFamily(
            "xidwatch_gateway_node_request_seconds",
            "Time for one node to answer one tool call, retries included.",
            labels=("node", "tool"),
        )
        for (node, tool), latency in sorted(self._latency.items()):
            cumulative, running = [], 0
            for bound, count in zip((*map(str, BUCKETS_S), "+Inf"), latency.buckets, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            family.add_metric((node, tool), cumulative, latency.sum_s)
        return family
