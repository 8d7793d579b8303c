"""The Node condition's state on a fake clock: set once, cleared after a quiet period."""

from __future__ import annotations

from watcher.k8s.condition import NodeCondition


def test_a_fatal_xid_asks_to_set_the_condition_only_while_it_is_false() -> None:
    cond = NodeCondition("GpuXidFatal", quiet_s=60, retry_s=5)
    assert cond.fatal(0.0)
    cond.set_done(True)
    assert not cond.fatal(1.0)
    assert cond.stats.conditions_set == 1


def test_clearing_is_due_only_after_the_quiet_period_since_the_last_fatal_xid() -> None:
    cond = NodeCondition("GpuXidFatal", quiet_s=60, retry_s=5)
    cond.fatal(0.0)
    cond.set_done(True)
    cond.fatal(30.0)  # restarts the quiet period
    assert not cond.clear_due(89.9)
    assert cond.clear_due(90.0)
    cond.clear_done(True, 90.0)
    assert not cond.true and not cond.clear_due(500.0)


def test_a_failed_clear_waits_before_trying_again() -> None:
    cond = NodeCondition("GpuXidFatal", quiet_s=60, retry_s=5)
    cond.found(True, 0.0)
    cond.clear_done(False, 60.0)
    assert not cond.clear_due(64.0)
    assert cond.clear_due(65.0)
    assert cond.stats.condition_failures == 1


def test_an_unreadable_node_counts_as_true_and_a_false_one_needs_nothing() -> None:
    unknown = NodeCondition("GpuXidFatal", quiet_s=60, retry_s=5)
    unknown.found(None, 0.0)
    assert unknown.clear_due(60.0)
    clean = NodeCondition("GpuXidFatal", quiet_s=60, retry_s=5)
    clean.found(False, 0.0)
    assert not clean.clear_due(1e9)
