"""The fleet: the nodes discovery found, a way to ask one or all, and the fleet questions.

This is the gateway's programmatic entry point; the MCP tools are thin shells over it::

    async with Fleet.static({"gpu-1": "http://10.0.3.1:9607"}) as fleet:
        summary = await fleet.xid_summary("7d")

Windows are resolved once, here, into absolute times sent to every node, so every node
answers for the same window whatever its clock or the moment it was reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import structlog

from mcp_server.gateway import aggregate
from mcp_server.gateway.breaker import BreakerState
from mcp_server.gateway.client import NodeClient
from mcp_server.gateway.clusters import ClusterClient, ClusterNodes
from mcp_server.gateway.discovery import (
    DEFAULT_REFRESH_S,
    Discovery,
    NodeLister,
    NodeRef,
    StaticNodes,
    static_node,
)
from mcp_server.gateway.errors import GatewayError
from mcp_server.gateway.fanout import CallPolicy, FanOut, FanOutResult, NodeAnswer, NodeState
from mcp_server.gateway.history import PrometheusError, PrometheusHistory
from mcp_server.gateway.models import (
    ClusterFailureModel,
    FleetAnswer,
    FleetCluster,
    FleetHealth,
    FleetInventory,
    FleetMetricTrend,
    FleetXidSummary,
    NodesNeedingAttention,
    NodeToolResult,
)
from mcp_server.gateway.prometheus import GatewayMetrics
from mcp_server.gateway.transport import DirectTransport, Transport
from store.errors import InvalidQueryError
from store.windows import format_ts, parse_duration_ms, parse_instant_ms
from watcher.clock import now_ms as wall_now_ms

__all__ = ["MAX_WINDOW", "Fleet", "UnknownNodeError"]

log = structlog.get_logger("mcp_server.gateway.fleet")

MAX_WINDOW = "400d"  # the longest the nodes keep anything (1-hour rollups, XIDs)
_NAMES_SHOWN = 50
# The node tools a node that does not answer gets from Prometheus instead.
HISTORY_TOOLS = frozenset({"get_gpu_health", "list_xid_events", "summarize_xid_events"})
NO_HISTORY = (
    "fleet history needs Prometheus: start the gateway with --prometheus-url URL "
    "(the Prometheus, Thanos, Mimir or VictoriaMetrics that scrapes the daemons)"
)
A = TypeVar("A", bound=FleetAnswer)


class UnknownNodeError(GatewayError):
    """A node name discovery does not know."""


class _LastKnown(NamedTuple):
    """Prometheus's answers for nodes that gave none; ``nodes`` None without Prometheus."""

    health: tuple[NodeAnswer, ...] = ()
    xids: tuple[NodeAnswer, ...] = ()
    nodes: list[str] | None = None
    error: str | None = None


def _with(fan: FanOutResult, answers: Sequence[NodeAnswer]) -> FanOutResult:
    """``fan`` with more answers (from Prometheus), kept in node order."""
    merged = sorted((*fan.answers, *answers), key=lambda a: a.node)
    return FanOutResult(tuple(merged), fan.failures)


async def _no_rows() -> dict[str, list[dict[str, Any]]]:
    return {}


class Fleet:
    """Discovered nodes and calls to them; use ``async with`` (it owns connections)."""

    def __init__(
        self,
        lister: NodeLister,
        *,
        policy: CallPolicy | None = None,
        token: str | None = None,
        transport: Transport | None = None,
        transports: Mapping[str, Transport] | None = None,
        history: PrometheusHistory | None = None,
        refresh_s: float = DEFAULT_REFRESH_S,
        source: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now_ms: Callable[[], int] = wall_now_ms,
    ) -> None:
        self.policy = policy or CallPolicy()
        self.source = source or type(lister).__name__
        self.discovery = Discovery(lister, refresh_s=refresh_s, on_change=self._sync)
        self.metrics = GatewayMetrics(self._breaker_states, self._discovery_counts)
        # The lister's URLs and these calls go the same way: give both the same transport.
        self.transport = transport or DirectTransport(token)
        self._pool = self.transport.pool()
        # Several clusters (``transports`` by name): each node's calls go its cluster's way.
        self._clusters = ClusterClient(transports) if transports else None
        self._fanout = FanOut(
            self._clusters or NodeClient(self._pool, self.transport),
            self.metrics,
            self.policy,
            clock=clock,
            sleep=sleep,
            now_ms=now_ms,
        )
        self._states: dict[str, NodeState] = {}
        self._now_ms = now_ms
        self._refresher: asyncio.Task[None] | None = None
        self._static = isinstance(lister, StaticNodes)
        self.history = history  # the daemons' series in Prometheus (--prometheus-url)

    @classmethod
    def static(cls, nodes: Mapping[str, str] | Iterable[NodeRef], **options: Any) -> Fleet:
        """A fleet of fixed nodes: ``{"name": "http://host:9607"}`` or NodeRefs."""
        refs = (
            [static_node(name, url) for name, url in nodes.items()]
            if isinstance(nodes, Mapping)
            else list(nodes)
        )
        return cls(StaticNodes(tuple(sorted(refs))), source="static (--node)", **options)

    async def __aenter__(self) -> Fleet:
        await self.discovery.refresh()
        if not self._static and self.discovery.refresh_s > 0:
            self._refresher = asyncio.create_task(self.discovery.run(), name="discovery")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop refreshing and close every connection (to the nodes and to the API)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self._pool.aclose()
        if self._clusters is not None:
            await self._clusters.aclose()
        await self.discovery.lister.aclose()
        if self.history is not None:
            await self.history.aclose()

    # nodes

    def nodes(self) -> list[NodeState]:
        """Every known node, by name."""
        return [self._states[name] for name in sorted(self._states)]

    def node(self, name: str) -> NodeState:
        """The node called ``name``, or an error listing the nodes there are."""
        state = self._states.get(name)
        if state is None:
            raise UnknownNodeError(f"no node {name!r}; {self._known()}")
        return state

    def readiness(self) -> dict[str, str | None]:
        """For ``/readyz``: ready once discovery has worked at least once."""
        d = self.discovery
        return {"discovery": None if d.succeeded else (d.last_error or "not yet listed")}

    # calls

    async def call(self, node: str, tool: str, args: Mapping[str, Any]) -> NodeAnswer:
        """One node's answer to ``tool``; a :class:`NodeCallError` says why there is none."""
        return await self._fanout.call(self.node(node), tool, args)

    async def fan_out(
        self, tool: str, args: Mapping[str, Any], *, names: Sequence[str] | None = None
    ) -> FanOutResult:
        """Every node's answer to ``tool`` (or the ``names`` ones'), or why not; raises only
        when no node is known or a name is unknown."""
        states = self.nodes() if names is None else [self.node(name) for name in names]
        if not states:
            raise GatewayError(f"no node daemons known: {self._known()}")
        return await self._fanout.gather(states, tool, args)

    # fleet questions

    async def inventory(self) -> FleetInventory:
        """Every node's GPUs."""
        return self._via(aggregate.fleet_inventory(await self.fan_out("list_gpus", {})))

    async def xid_summary(
        self, since: str = "24h", until: str | None = None, *, limit: int = 500
    ) -> FleetXidSummary:
        """Which nodes and GPUs had which XIDs in the window, worst action first."""
        since_ms, until_ms = self.window(since, until)
        args = {"since": format_ts(since_ms), "until": format_ts(until_ms)}
        if self.history is None:
            fan = await self.fan_out("summarize_xid_events", args)
            recorded: list[str] | None = None
            error = None
        else:
            fan, recorded, error = await self._xids_with_history(args, since_ms, until_ms)
        answer = aggregate.fleet_xid_summary(fan, since_ms=since_ms, until_ms=until_ms, limit=limit)
        answer.from_prometheus, answer.prometheus_error = recorded, error
        return self._via(answer)

    async def metric_trend(
        self,
        metric: str,
        since: str = "24h",
        until: str | None = None,
        *,
        threshold: float | None = None,
        limit: int = 20,
    ) -> FleetMetricTrend:
        """One metric on every GPU Prometheus scraped in the window, nodes down now included."""
        if self.history is None:
            raise GatewayError(NO_HISTORY)
        since_ms, until_ms = self.window(since, until)
        (points, series), up = await asyncio.gather(
            self.history.trend(metric, since_ms, until_ms, threshold),
            self.history.nodes_up(until_ms),
        )
        return aggregate.fleet_metric_trend(
            points,
            metric=metric,
            series=series,
            source=self.history.source.url,
            up=up,
            since_ms=since_ms,
            until_ms=until_ms,
            limit=limit,
        )

    async def recorded(
        self, node: str, tool: str, args: Mapping[str, Any], error: GatewayError
    ) -> NodeToolResult | None:
        """``tool``'s answer for a node that gave none (``error``), rebuilt from its series in
        Prometheus; None without Prometheus, for other tools, or when it has nothing."""
        if self.history is None or tool not in HISTORY_TOOLS:
            return None
        try:
            since_ms, until_ms = self.window(str(args.get("since", "24h")), args.get("until"))
            result = await self.history.node_answer(node, tool, args, since_ms, until_ms)
        except (PrometheusError, InvalidQueryError) as e:
            log.warning("prometheus_fallback_failed", node=node, tool=tool, error=str(e))
            return None
        if result is None:
            return None
        return NodeToolResult(
            node=node, latency_ms=0.0, result=result, source="prometheus", node_error=str(error)
        )

    async def _xids_with_history(
        self, args: Mapping[str, Any], since_ms: int, until_ms: int
    ) -> tuple[FanOutResult, list[str] | None, str | None]:
        """Prometheus answers for every node it scraped in the window (down now or not); the
        nodes it has no series of are asked themselves. If it fails, every node is asked."""
        assert self.history is not None
        try:
            recorded = await self.history.xid_rows(since_ms, until_ms)
        except PrometheusError as e:
            log.warning("prometheus_failed", error=str(e))
            return await self.fan_out("summarize_xid_events", args), [], str(e)
        rest = [s for s in self.nodes() if s.ref.name not in recorded]
        fan = await self._fanout.gather(rest, "summarize_xid_events", args)
        answers = [NodeAnswer(node, {"rows": rows}, 0.0) for node, rows in recorded.items()]
        return _with(fan, answers), sorted(recorded), None

    async def health(self, since: str = "24h", *, limit: int = 500) -> FleetHealth:
        """Every GPU's health across the fleet, worst first; with Prometheus, the nodes that
        do not answer as it last had them."""
        since_ms, until_ms = self.window(since, None)
        fan = await self.fan_out("get_gpu_health", {"since": format_ts(since_ms)})
        known = await self._last_known(fan, since_ms, until_ms)
        answer = aggregate.fleet_health(fan, since_ms=since_ms, limit=limit, recorded=known.health)
        answer.from_prometheus, answer.prometheus_error = known.nodes, known.error
        return self._via(answer)

    async def needing_attention(self, since: str = "24h") -> NodesNeedingAttention:
        """Nodes with unhealthy GPUs, fatal XIDs in the window, or no answer, with why; with
        Prometheus, a node that does not answer is judged by what it last exported."""
        since_ms, until_ms = self.window(since, None)
        health = await self.fan_out("get_gpu_health", {"since": format_ts(since_ms)})
        # Then only the nodes that answered: one that hangs costs one timeout, not two.
        answered = {a.node for a in health.answers}
        states = [state for state in self.nodes() if state.ref.name in answered]
        args = {"since": format_ts(since_ms), "until": format_ts(until_ms)}
        xids, known = await asyncio.gather(
            self._fanout.gather(states, "summarize_xid_events", args),
            self._last_known(health, since_ms, until_ms, xids=True),
        )
        answer = aggregate.nodes_needing_attention(
            health, _with(xids, known.xids), since_ms=since_ms, recorded=known.health
        )
        answer.from_prometheus, answer.prometheus_error = known.nodes, known.error
        return self._via(answer)

    async def _last_known(
        self, fan: FanOutResult, since_ms: int, until_ms: int, *, xids: bool = False
    ) -> _LastKnown:
        """What Prometheus last had of the nodes that failed ``fan``: their health answers
        and, with ``xids``, their XID rows, in a few queries for all of them. A node it did
        not scrape in the window stays a plain failure."""
        failed = [f.node for f in fan.failures]
        if self.history is None:
            return _LastKnown()
        if not failed:
            return _LastKnown(nodes=[])
        try:
            health, rows = await asyncio.gather(
                self.history.health(since_ms, until_ms, nodes=failed),
                self.history.xid_rows(since_ms, until_ms, nodes=failed) if xids else _no_rows(),
            )
        except PrometheusError as e:
            log.warning("prometheus_failed", error=str(e))
            return _LastKnown(nodes=[], error=str(e))
        return _LastKnown(
            tuple(NodeAnswer(node, answer, 0.0) for node, answer in health.items()),
            tuple(NodeAnswer(node, {"rows": r}, 0.0) for node, r in rows.items() if node in health),
            sorted(health),
        )

    def window(self, since: str, until: str | None) -> tuple[int, int]:
        """(since_ms, until_ms), checked: start before end, at most :data:`MAX_WINDOW`."""
        now = self._now_ms()
        since_ms = parse_instant_ms(since, now_ms=now)
        until_ms = parse_instant_ms(until, now_ms=now) if until else now
        if since_ms >= until_ms:
            raise InvalidQueryError(f"since ({since}) must be before until ({until or 'now'})")
        if until_ms - since_ms > parse_duration_ms(MAX_WINDOW):
            raise InvalidQueryError(f"the window is longer than {MAX_WINDOW}; ask for less")
        return since_ms, until_ms

    # internals

    def _via(self, answer: A) -> A:
        answer.transport = self.transport.via
        if isinstance(self.discovery.lister, ClusterNodes):
            answer.clusters = self._by_cluster(answer)
            answer.clusters_failed = self.clusters_failed()
        return answer

    def clusters_failed(self) -> list[ClusterFailureModel] | None:
        """The clusters whose API server failed the last listing; None with one cluster."""
        lister = self.discovery.lister
        if not isinstance(lister, ClusterNodes):
            return None
        failed = sorted(lister.failed.items())
        return [ClusterFailureModel(cluster=name, error=error) for name, error in failed]

    def _by_cluster(self, answer: FleetAnswer) -> list[FleetCluster]:
        """Each cluster's nodes asked and answered (every known node is asked)."""
        lister = self.discovery.lister
        assert isinstance(lister, ClusterNodes)
        failed = {f.node for f in answer.nodes_failed}
        out = []
        for cluster in sorted(lister.clusters):
            names = [s.ref.name for s in self.nodes() if s.ref.cluster == cluster]
            answered = sum(1 for name in names if name not in failed)
            out.append(
                FleetCluster(cluster=cluster, nodes_asked=len(names), nodes_answered=answered)
            )
        return out

    def _sync(self, refs: Sequence[NodeRef]) -> None:
        """Follow discovery: a new node, or one at a new address (a new pod), starts afresh."""
        if self._clusters is not None:
            self._clusters.route(refs)
        old, self._states = self._states, {}
        for ref in refs:
            state = old.pop(ref.name, None)
            if state is None or state.ref != ref:
                state = self._fanout.new_state(ref)
            self._states[ref.name] = state
        for gone in old:
            self.metrics.forget(gone)

    def _known(self) -> str:
        names = sorted(self._states)
        if not names:
            error = self.discovery.last_error
            return f"discovery has found none yet ({self.source}{f'; {error}' if error else ''})"
        more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
        return f"known nodes: {', '.join(names[:_NAMES_SHOWN])}{more}"

    def _breaker_states(self) -> list[tuple[str, BreakerState]]:
        return [(s.ref.name, s.breaker.state) for s in self.nodes()]

    def _discovery_counts(self) -> tuple[int, int]:
        return len(self._states), self.discovery.failures
