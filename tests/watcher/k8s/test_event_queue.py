"""The rate-limited queue of XIDs for Events, on a fake clock."""

from __future__ import annotations

from tests.watcher.k8s.test_events import xid
from watcher.k8s.event_queue import XidEventQueue


def test_the_same_gpu_and_code_is_admitted_once_per_dedupe_window() -> None:
    queue = XidEventQueue(dedupe_s=600)
    assert queue.admit(xid(), 0.0)
    assert not queue.admit(xid(), 599.0)
    assert queue.admit(xid(), 600.0)
    assert queue.admit(xid(code=48, action="RESET_GPU"), 600.0)
    assert queue.stats.deduplicated == 1


def test_the_token_bucket_admits_the_burst_then_the_rate() -> None:
    queue = XidEventQueue(rate_per_minute=6, burst=2)
    admitted = [queue.admit(xid(gpu_uuid=f"GPU-{i}"), 0.0) for i in range(4)]
    assert admitted == [True, True, False, False]
    assert not queue.admit(xid(gpu_uuid="GPU-9"), 9.9)
    assert queue.admit(xid(gpu_uuid="GPU-10"), 10.0)
    assert queue.stats.rate_limited == 3


def test_take_empties_the_queue_oldest_first() -> None:
    queue = XidEventQueue()
    queue.submit([xid(79), xid(48, action="RESET_GPU")])
    assert [e.xid for e in queue.take()] == [79, 48]
    assert queue.queued == 0 and queue.take() == []
