"""The circuit breaker, stepped through its states with an injected clock."""

from __future__ import annotations

from mcp_server.gateway.breaker import BreakerState, CircuitBreaker
from tests.gateway.fakes import StepClock


def _opened(clock: StepClock, threshold: int = 3) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold=threshold, cooldown_s=30, clock=clock)
    for _ in range(threshold):
        assert breaker.allow()
        breaker.record_failure()
    return breaker


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=30, clock=StepClock())
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()


def test_a_success_resets_the_count_of_failures() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=30, clock=StepClock())
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 2


def test_open_refuses_until_the_cooldown_then_lets_exactly_one_trial_through() -> None:
    clock = StepClock()
    breaker = _opened(clock)
    clock.advance(29.9)
    assert not breaker.allow() and round(breaker.retry_in_s, 1) == 0.1
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # the trial is still running


def test_a_successful_trial_closes_it() -> None:
    clock = StepClock()
    breaker = _opened(clock)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()


def test_a_failed_trial_opens_it_for_another_cooldown() -> None:
    clock = StepClock()
    breaker = _opened(clock)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(29)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_a_late_failure_of_an_earlier_call_does_not_extend_the_cooldown() -> None:
    clock = StepClock()
    breaker = _opened(clock)
    clock.advance(20)
    breaker.record_failure()  # a call started before it opened
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_cancelled_trial_lets_the_next_call_be_the_trial() -> None:
    clock = StepClock()
    breaker = _opened(clock)
    clock.advance(30)
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_state_labels_and_gauge_values() -> None:
    assert [(s.label, int(s)) for s in BreakerState] == [
        ("closed", 0),
        ("half-open", 1),
        ("open", 2),
    ]
