"""Node calls: retries with jittered backoff, the deadline, the breaker, bounded concurrency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from mcp_server.gateway.breaker import BreakerState
from mcp_server.gateway.discovery import NodeRef
from mcp_server.gateway.errors import NodeCallError
from mcp_server.gateway.fanout import CallPolicy, FanOut, NodeAnswer
from mcp_server.gateway.prometheus import GatewayMetrics
from mcp_server.gateway.retry import RetryPolicy
from store.pacing import Backoff
from tests.gateway.fakes import ScriptedClient, StepClock, failing


def _fanout(
    client: ScriptedClient, clock: StepClock, **policy: Any
) -> tuple[FanOut, GatewayMetrics]:
    metrics = GatewayMetrics(lambda: [], lambda: (0, 0))
    backoff = Backoff(initial_s=0.1, max_s=2.0, jitter=1.0, rand=lambda: 1.0)
    options: dict[str, Any] = {"retry": RetryPolicy(retries=2, backoff=backoff), **policy}
    fan = FanOut(client, metrics, CallPolicy(**options), clock=clock, sleep=clock.sleep)
    return fan, metrics


def _ok(url: str, tool: str, args: Mapping[str, Any]) -> dict[str, Any]:
    return {"url": url}


def test_node_calls_back_off_with_full_jitter() -> None:
    assert RetryPolicy().backoff.jitter == 1.0


async def test_transport_errors_are_retried_then_reported_with_their_reason() -> None:
    clock = StepClock()
    client = ScriptedClient(failing("refused", "connection refused"))
    fan, metrics = _fanout(client, clock)
    state = fan.new_state(NodeRef("n1", "http://n1/mcp"))
    with pytest.raises(NodeCallError) as failed:
        await fan.call(state, "list_gpus", {})
    assert failed.value.reason == "refused" and len(client.calls) == 3
    assert clock.slept == [0.1, 0.2]
    assert state.last_reason == "refused" and state.breaker.failures == 1
    errors = {"node": "n1", "reason": "refused"}
    assert metrics.registry.get_sample_value("xidwatch_gateway_node_errors_total", errors) == 1


async def test_a_retry_that_would_pass_the_deadline_is_not_made() -> None:
    clock = StepClock()
    client = ScriptedClient(failing("http_5xx"))
    fan, _ = _fanout(client, clock, node_timeout_s=0.25)
    with pytest.raises(NodeCallError):
        await fan.call(fan.new_state(NodeRef("n1", "http://n1/mcp")), "list_gpus", {})
    assert len(client.calls) == 2 and clock.slept == [0.1]  # 0.1 + 0.2 would pass 0.25


async def test_a_tool_error_is_not_retried_and_does_not_count_against_the_node() -> None:
    clock = StepClock()
    client = ScriptedClient(failing("tool_error", "GPU '9' matches no GPU"))
    fan, _ = _fanout(client, clock)
    state = fan.new_state(NodeRef("n1", "http://n1/mcp"))
    for _ in range(5):
        with pytest.raises(NodeCallError, match="matches no GPU"):
            await fan.call(state, "get_gpu_snapshot", {"gpu": "9"})
    assert len(client.calls) == 5 and clock.slept == []
    assert state.breaker.state is BreakerState.CLOSED and state.last_answer_ms is not None


async def test_an_open_breaker_refuses_without_calling_then_a_trial_recovers_it() -> None:
    clock = StepClock()
    down = True

    def script(url: str, tool: str, args: Mapping[str, Any]) -> dict[str, Any]:
        if down:
            raise NodeCallError("refused", "connection refused")
        return {"ok": True}

    client = ScriptedClient(script)
    fan, _ = _fanout(client, clock, retry=RetryPolicy(retries=0), breaker_cooldown_s=30)
    state = fan.new_state(NodeRef("n1", "http://n1/mcp"))
    for _ in range(3):
        with pytest.raises(NodeCallError, match="refused"):
            await fan.call(state, "list_gpus", {})
    with pytest.raises(NodeCallError) as refused:
        await fan.call(state, "list_gpus", {})
    assert refused.value.reason == "breaker_open" and "connection refused" in str(refused.value)
    assert len(client.calls) == 3
    down = False
    clock.advance(30)
    assert state.breaker.state is BreakerState.HALF_OPEN
    answer = await fan.call(state, "list_gpus", {})
    assert answer.result == {"ok": True} and state.breaker.state is BreakerState.CLOSED


async def test_a_fan_out_names_every_failed_node_and_keeps_the_answers() -> None:
    def script(url: str, tool: str, args: Mapping[str, Any]) -> dict[str, Any]:
        if "bad" in url:
            raise NodeCallError("http_401", "the node wants a bearer token")
        return {"url": url}

    client = ScriptedClient(script)
    fan, _ = _fanout(client, StepClock())
    states = [fan.new_state(NodeRef(n, f"http://{n}/mcp")) for n in ("a", "bad1", "b", "bad2")]
    result = await fan.gather(states, "list_gpus", {})
    assert [a.node for a in result.answers] == ["a", "b"]
    assert all(isinstance(a, NodeAnswer) for a in result.answers)
    assert [(f.node, f.reason) for f in result.failures] == [
        ("bad1", "http_401"),
        ("bad2", "http_401"),
    ]
    assert len(client.calls) == 4  # 401 is not worth a retry


async def test_no_more_than_the_concurrency_limit_of_calls_run_at_once() -> None:
    client = ScriptedClient(_ok)
    fan, _ = _fanout(client, StepClock(), concurrency=3)
    states = [fan.new_state(NodeRef(f"n{i}", f"http://n{i}/mcp")) for i in range(10)]
    result = await fan.gather(states, "list_gpus", {})
    assert len(result.answers) == 10 and client.most_in_flight == 3
