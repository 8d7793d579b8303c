"""The token bucket and the backoff every part paces itself with."""

from __future__ import annotations

import pytest

from store.pacing import Backoff, TokenBucket


def test_a_full_bucket_gives_its_burst_at_once_then_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(burst=2, per=1, period=10.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert not bucket.take(9.0)
    assert bucket.take(10.0)


def test_time_running_backwards_adds_no_tokens_and_keeps_the_clock() -> None:
    bucket = TokenBucket.full(burst=1, per=1, period=10.0, now=100.0)
    assert bucket.take(100.0)
    assert not bucket.take(50.0)
    assert bucket.at == 100.0
    assert bucket.take(110.0)


def test_a_copy_spends_its_own_tokens() -> None:
    bucket = TokenBucket.full(burst=1, per=1, period=60.0, now=0.0)
    planned = bucket.copy()
    assert planned.take(0.0)
    assert bucket.take(0.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, max_s=0.5)
    assert [backoff.delay_s(n) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_full_jitter_draws_from_zero_to_the_bound() -> None:
    assert Backoff(0.1, 0.5, jitter=1.0, rand=lambda: 0.5).delay_s(3) == pytest.approx(0.2)
    assert Backoff(0.1, 0.5, jitter=1.0, rand=lambda: 0.0).delay_s(3) == 0.0


def test_backoff_never_overflows_however_long_it_retries() -> None:
    assert Backoff(0.05, 5.0).delay_s(10_000) == 5.0


def test_a_jitter_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        Backoff(0.1, 1.0, jitter=1.5)
