"""Calling nodes the careful way: bounded concurrency, a deadline, retries and a breaker.

One node call gets ``node_timeout_s`` in all, retries included, counted from when it gets
a concurrency slot: a fleet question then takes about one node timeout however many nodes
are down, and a node that keeps failing is refused by its breaker without a connection
attempt. A fan-out never raises for a node: each answers or is named with its reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from mcp_server.gateway.breaker import BreakerState, CircuitBreaker
from mcp_server.gateway.discovery import NodeRef
from mcp_server.gateway.errors import NodeCallError, Reason
from mcp_server.gateway.prometheus import GatewayMetrics
from mcp_server.gateway.retry import RetryPolicy
from watcher.clock import now_ms as wall_now_ms

__all__ = [
    "CallPolicy",
    "FanOut",
    "FanOutResult",
    "NodeAnswer",
    "NodeFailure",
    "NodeState",
    "ToolCaller",
]

log = structlog.get_logger("mcp_server.gateway.fanout")


class ToolCaller(Protocol):
    """One tools/call to the node at ``url``: a
    :class:`~mcp_server.gateway.client.NodeClient`, or one per cluster."""

    async def call_tool(
        self, url: str, tool: str, arguments: Mapping[str, Any], *, timeout_s: float
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How hard the gateway tries each node."""

    concurrency: int = 32
    node_timeout_s: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 30.0


@dataclass(slots=True)
class NodeState:
    """A known node: its breaker and how its last call went (for ``list_nodes``)."""

    ref: NodeRef
    breaker: CircuitBreaker
    last_error: str | None = None
    last_reason: Reason | None = None
    last_latency_s: float | None = None
    last_answer_ms: int | None = None


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    node: str
    result: dict[str, Any]
    latency_s: float


@dataclass(frozen=True, slots=True)
class NodeFailure:
    node: str
    reason: Reason
    error: str


@dataclass(frozen=True, slots=True)
class FanOutResult:
    """Every node asked, in name order: those that answered and those that did not."""

    answers: tuple[NodeAnswer, ...]
    failures: tuple[NodeFailure, ...]


class FanOut:
    """Makes node calls under one :class:`CallPolicy` and records how each went."""

    def __init__(
        self,
        client: ToolCaller,
        metrics: GatewayMetrics,
        policy: CallPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now_ms: Callable[[], int] = wall_now_ms,
    ) -> None:
        self.policy = policy
        self._client = client
        self._metrics = metrics
        self._limit = asyncio.Semaphore(policy.concurrency)
        self._clock = clock
        self._sleep = sleep
        self._now_ms = now_ms

    def new_state(self, ref: NodeRef) -> NodeState:
        p = self.policy
        breaker = CircuitBreaker(p.breaker_threshold, p.breaker_cooldown_s, self._clock)
        return NodeState(ref, breaker)

    async def call(self, state: NodeState, tool: str, args: Mapping[str, Any]) -> NodeAnswer:
        """One node's answer, or a :class:`NodeCallError` (``breaker_open`` without trying)."""
        node = state.ref.name
        if not state.breaker.allow():
            error = NodeCallError(
                "breaker_open",
                f"not called: {state.breaker.failures} failures in a row, next try in "
                f"{state.breaker.retry_in_s:.0f} s (last: {state.last_error})",
            )
            self._metrics.error(node, error.reason)
            raise error
        try:
            async with self._limit:
                start = self._clock()
                try:
                    result = await self._attempts(state.ref, tool, args)
                finally:
                    state.last_latency_s = self._clock() - start
                    self._metrics.observe(node, tool, state.last_latency_s)
        except NodeCallError as e:
            self._failed(state, e)
            raise
        except BaseException:
            state.breaker.release()  # cancelled: no verdict on the node
            raise
        self._answered(state)
        return NodeAnswer(node, result, state.last_latency_s)

    async def gather(
        self, states: Iterable[NodeState], tool: str, args: Mapping[str, Any]
    ) -> FanOutResult:
        """Ask every node at once (``concurrency`` at a time); never raises for a node."""
        outcomes = await asyncio.gather(*(self._settle(s, tool, args) for s in states))
        return FanOutResult(
            answers=tuple(o for o in outcomes if isinstance(o, NodeAnswer)),
            failures=tuple(o for o in outcomes if isinstance(o, NodeFailure)),
        )

    async def _settle(
        self, state: NodeState, tool: str, args: Mapping[str, Any]
    ) -> NodeAnswer | NodeFailure:
        try:
            return await self.call(state, tool, args)
        except NodeCallError as e:
            return NodeFailure(state.ref.name, e.reason, str(e.args[0]))

    async def _attempts(self, ref: NodeRef, tool: str, args: Mapping[str, Any]) -> dict[str, Any]:
        timeout = self.policy.node_timeout_s
        deadline = self._clock() + timeout
        attempt = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    remaining = max(deadline - self._clock(), 0.001)
                    try:
                        return await self._client.call_tool(
                            ref.url, tool, args, timeout_s=remaining
                        )
                    except NodeCallError as e:
                        attempt += 1
                        delay = self.policy.retry.backoff.delay_s(attempt)
                        last = attempt > self.policy.retry.retries
                        if not e.retryable or last or self._clock() + delay >= deadline:
                            raise
                        log.debug("node_retry", node=ref.name, attempt=attempt, error=str(e))
                        await self._sleep(delay)
        except TimeoutError as e:
            raise NodeCallError("timeout", f"no answer within {timeout:g} s") from e

    def _answered(self, state: NodeState) -> None:
        was = state.breaker.state
        state.breaker.record_success()
        state.last_answer_ms = self._now_ms()
        if was is not BreakerState.CLOSED:
            log.info("node_breaker_closed", node=state.ref.name)

    def _failed(self, state: NodeState, error: NodeCallError) -> None:
        self._metrics.error(state.ref.name, error.reason)
        state.last_error, state.last_reason = str(error), error.reason
        if error.node_is_up:  # it answered: the node works, the question did not
            state.breaker.record_success()
            state.last_answer_ms = self._now_ms()
            return
        was = state.breaker.state
        state.breaker.record_failure()
        if was is not BreakerState.OPEN and state.breaker.state is BreakerState.OPEN:
            log.warning("node_breaker_opened", node=state.ref.name, error=str(error))
