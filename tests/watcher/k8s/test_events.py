from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from store.pacing import Backoff
from store.records import PodRef, XidEvent
from tests.kube_api import STRATEGIC_MERGE_PATCH, KubeApiServer
from tests.waiting import wait_until_async
from watcher.k8s.condition import NodeCondition
from watcher.k8s.event_queue import XidEventQueue
from watcher.k8s.event_writer import KubeEventWriter
from watcher.k8s.events import REPORTING_CONTROLLER, XidEventPoster

NODE = "gpu-node-1"
CONDITION = "GpuXidFatal"
GPU = "GPU-11111111-2222-3333-4444-555555555555"


class FakeClock:
    """Wall and monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def xid(code: int = 79, action: str = "RESTART_BM", **kw: Any) -> XidEvent:
    fields: dict[str, Any] = {
        "ts_ms": 1_700_000_000_000,
        "received_ms": 1_700_000_000_000,
        "kind": "xid",
        "xid": code,
        "message": "GPU has fallen off the bus.",
        "raw": f"NVRM: Xid (PCI:0000:3b:00): {code}, GPU has fallen off the bus.",
        "source": "kmsg",
        "action": action,
        "node": NODE,
        "pci_bus_id": "00000000:3B:00.0",
        "gpu_uuid": GPU,
    }
    fields.update(kw)
    return XidEvent(**fields)


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        server.add_node(NODE, uid="node-uid-1")
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Running:
    """A poster whose run() is a task, stopped and awaited on exit."""

    def __init__(self, poster: XidEventPoster) -> None:
        self.poster = poster
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> XidEventPoster:
        self.task = asyncio.create_task(self.poster.run())
        return self.poster

    async def __aexit__(self, *exc: object) -> None:
        self.poster.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


_QUEUE = {"actions", "post_injected", "dedupe_s", "rate_per_minute", "burst", "size"}


def poster(
    api: Any,
    clock: FakeClock,
    *,
    node_condition: str | None = None,
    quiet_s: float = 3600.0,
    retry_s: float = 0.01,
    tick_s: float = 0.01,
    max_attempts: int = 5,
    **queue: Any,
) -> XidEventPoster:
    """The three parts as the daemon joins them, on the fake clock, retrying quickly."""
    assert set(queue) <= _QUEUE, set(queue) - _QUEUE
    backoff = Backoff(initial_s=retry_s, max_s=2 * retry_s)
    condition = None
    if node_condition is not None:
        condition = NodeCondition(node_condition, quiet_s=quiet_s, retry_s=backoff.max_s)
    return XidEventPoster(
        XidEventQueue(**queue),
        KubeEventWriter(api, NODE, backoff=backoff, max_attempts=max_attempts),
        condition=condition,
        tick_s=tick_s,
        now=clock,
        monotonic=clock,
    )


async def passes(p: XidEventPoster, n: int = 2) -> None:
    """Wait until the poster's loop has gone round ``n`` more times: with ``n`` = 2, at
    least one whole pass started after the caller moved the clock."""
    target = p.ticks + n
    await wait_until_async(lambda: p.ticks >= target)


def handled(p: XidEventPoster) -> int:
    s = p.stats
    return s.posted + s.post_failures + s.deduplicated + s.rate_limited


async def test_fatal_xid_posts_a_warning_event_on_the_node_and_the_pod(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    pod = PodRef("ml", "train-0", "trainer", "pod-uid-9")
    async with Running(poster(api, clock)) as p:
        p.submit([xid(pid=4242, process="python", pod=pod)])
        await wait_until_async(lambda: p.stats.posted == 2)
    node_event, pod_event = sorted(kube.events, key=lambda e: e["involvedObject"]["kind"])
    assert node_event["metadata"]["namespace"] == "default"
    assert node_event["metadata"]["name"].startswith(f"{NODE}.")
    assert node_event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": NODE,
        "uid": "node-uid-1",
    }
    assert node_event["type"] == "Warning"
    assert node_event["reason"] == "GpuXid"
    assert node_event["action"] == "RESTART_BM"
    assert node_event["source"] == {"component": "xidwatch", "host": NODE}
    assert node_event["reportingComponent"] == REPORTING_CONTROLLER
    assert node_event["reportingInstance"] == NODE
    assert node_event["count"] == 1
    assert node_event["firstTimestamp"].startswith("2023-11-14T22:13:20")
    message = node_event["message"]
    for part in ("XID 79", "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "00000000:3B:00.0", GPU):
        assert part in message
    assert "RESTART_BM" in message
    assert "ml/train-0" in message
    assert pod_event["metadata"]["namespace"] == "ml"
    assert pod_event["involvedObject"]["kind"] == "Pod"
    assert pod_event["involvedObject"]["name"] == "train-0"
    assert pod_event["involvedObject"]["uid"] == "pod-uid-9"
    assert pod_event["involvedObject"]["fieldPath"] == "spec.containers{trainer}"
    assert pod_event["message"] == message


async def test_actions_not_in_the_set_and_injected_xids_are_not_posted(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    async with Running(poster(api, clock)) as p:
        with capture_logs() as logs:
            p.submit([xid(13, "RESTART_APP"), xid(48, "RESET_GPU", injected=True)])
        p.submit([xid(48, "RESET_GPU")])
        await wait_until_async(lambda: p.stats.posted == 1)
    assert (p.stats.not_qualifying, p.stats.injected_skipped) == (1, 1)
    assert [e["reason"] for e in kube.events] == ["GpuXid"]
    assert "[injected]" not in kube.events[0]["message"]
    assert [e["event"] for e in logs] == ["k8s_event_injected_skipped"]
    assert logs[0]["log_level"] == "debug"


async def test_injected_xids_are_posted_marked_when_asked(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    async with Running(poster(api, clock, post_injected=True)) as p:
        p.submit([xid(injected=True)])
        await wait_until_async(lambda: p.stats.posted == 1)
    assert kube.events[0]["message"].startswith("[injected] XID 79")


async def test_event_actions_are_configurable(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    async with Running(poster(api, clock, actions={"RESTART_APP"})) as p:
        p.submit([xid(79, "RESTART_BM"), xid(13, "RESTART_APP")])
        await wait_until_async(lambda: p.stats.posted == 1)
    assert "XID 13" in kube.events[0]["message"]


async def test_the_same_gpu_and_code_posts_once_per_dedupe_window(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    async with Running(poster(api, clock, dedupe_s=600)) as p:
        p.submit([xid(), xid(), xid(code=48, action="RESET_GPU")])
        await wait_until_async(lambda: handled(p) == 3)
        clock.t += 599
        p.submit([xid()])
        await wait_until_async(lambda: handled(p) == 4)
        clock.t += 1
        p.submit([xid()])
        await wait_until_async(lambda: handled(p) == 5)
    assert p.stats.posted == 3
    assert p.stats.deduplicated == 2
    assert len(kube.events) == 3


async def test_a_token_bucket_caps_the_rate_and_logs_once_per_window(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    storm = [xid(code=79, gpu_uuid=f"GPU-{i:04d}") for i in range(6)]
    with capture_logs() as logs:
        async with Running(poster(api, clock, rate_per_minute=6, burst=2)) as p:
            p.submit(storm)
            await wait_until_async(lambda: handled(p) == 6)
            clock.t += 10  # one more token (6 a minute)
            p.submit([xid(gpu_uuid="GPU-late")])
            await wait_until_async(lambda: handled(p) == 7)
    assert p.stats.posted == 3
    assert p.stats.rate_limited == 4
    limited = [e for e in logs if e["event"] == "k8s_events_rate_limited"]
    assert len(limited) == 1
    assert limited[0]["log_level"] == "warning"


async def test_submit_never_blocks_and_counts_overflow(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    p = poster(api, clock, size=3)
    with capture_logs() as logs:
        p.submit([xid(gpu_uuid=f"GPU-{i}") for i in range(5)])  # nothing is running yet
    assert p.stats.submitted == 5
    assert p.stats.queue_dropped == 2
    assert [e["event"] for e in logs] == ["k8s_events_queue_full"]
    async with Running(p):
        await wait_until_async(lambda: p.stats.posted == 3)


async def test_node_condition_is_set_by_strategic_merge_and_cleared_when_quiet(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    async with Running(poster(api, clock, node_condition=CONDITION, quiet_s=60)) as p:
        p.submit([xid()])
        await wait_until_async(lambda: p.stats.conditions_set == 1 and p.stats.posted == 1)
        cond = kube.node_condition(NODE, CONDITION)
        assert cond is not None
        assert (cond["status"], cond["reason"]) == ("True", "Xid79")
        assert "XID 79" in cond["message"]
        assert cond["lastTransitionTime"] == cond["lastHeartbeatTime"] == "2023-11-14T22:13:20Z"
        assert kube.node_condition(NODE, "Ready") is not None  # merged, not replaced

        clock.t += 30
        p.submit([xid(code=48, action="RESET_GPU")])  # resets the quiet period
        await wait_until_async(lambda: p.stats.posted == 2)
        clock.t += 59
        await passes(p)  # still within the quiet period
        assert p.stats.conditions_cleared == 0
        clock.t += 1
        await wait_until_async(lambda: p.stats.conditions_cleared == 1)
    cond = kube.node_condition(NODE, CONDITION)
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "NoRecentFatalXid")
    patches = [r for r in kube.requests if r.method == "PATCH"]
    assert [r.path for r in patches] == [f"/api/v1/nodes/{NODE}/status"] * 2
    assert {r.content_type for r in patches} == {STRATEGIC_MERGE_PATCH}
    assert p.stats.conditions_set == 1  # the second XID did not patch again


async def test_a_condition_left_true_clears_after_the_quiet_period_from_start(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    kube.add_node(
        NODE,
        uid="node-uid-1",
        conditions=[{"type": CONDITION, "status": "True", "reason": "Xid79"}],
    )
    async with Running(poster(api, clock, node_condition=CONDITION, quiet_s=60)) as p:
        await wait_until_async(
            lambda: any(r.path == f"/api/v1/nodes/{NODE}" for r in kube.requests)
        )
        clock.t += 59
        await passes(p)
        assert p.stats.conditions_cleared == 0
        clock.t += 1
        await wait_until_async(lambda: p.stats.conditions_cleared == 1)
    cond = kube.node_condition(NODE, CONDITION)
    assert cond is not None
    assert cond["status"] == "False"


async def test_no_condition_patches_without_a_condition_type(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    async with Running(poster(api, clock, quiet_s=0)) as p:
        p.submit([xid()])
        await wait_until_async(lambda: p.stats.posted == 1)
        clock.t += 10
        await passes(p)
    assert not [r for r in kube.requests if r.method == "PATCH"]


async def test_api_down_is_retried_logged_once_and_recovers(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    with capture_logs() as logs:
        async with Running(poster(api, clock, max_attempts=1000)) as p:
            await wait_until_async(lambda: len(kube.requests) == 1)  # the node read
            kube.down = True
            p.submit([xid()])
            await wait_until_async(lambda: p.stats.retries >= 5)
            kube.down = False
            await wait_until_async(lambda: p.stats.posted == 1)
    assert p.stats.post_failures == 0
    assert len(kube.events) == 1
    assert kube.events[0]["involvedObject"]["uid"] == "node-uid-1"
    failed = [(e["call"], e["error"]) for e in logs if e["event"] == "k8s_api_failed"]
    assert failed == [("create_event", "HTTP 503 Service Unavailable")]
    recovered = [e["call"] for e in logs if e["event"] == "k8s_api_recovered"]
    assert recovered == ["create_event"]


async def test_an_unreadable_node_still_gets_events_named_as_the_kubelet_names_them(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    kube.fail_next(2, status=503)
    async with Running(poster(api, clock, max_attempts=2)) as p:
        p.submit([xid()])
        await wait_until_async(lambda: p.stats.posted == 1)
    assert kube.events[0]["involvedObject"]["uid"] == NODE


async def test_permanent_errors_are_not_retried_and_never_raise(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    async with Running(poster(api, clock)) as p:
        await wait_until_async(lambda: len(kube.requests) == 1)  # the node read
        kube.fail_next(1, status=403)
        p.submit([xid()])
        await wait_until_async(lambda: p.stats.post_failures == 1)
        p.submit([xid(code=48, action="RESET_GPU")])
        await wait_until_async(lambda: p.stats.posted == 1)
    assert p.stats.retries == 0


async def test_attempts_are_bounded(kube: KubeApiServer, api: Any, clock: FakeClock) -> None:
    async with Running(poster(api, clock, max_attempts=3)) as p:
        await wait_until_async(lambda: len(kube.requests) == 1)
        kube.fail_next(3, status=500)
        p.submit([xid()])
        await wait_until_async(lambda: p.stats.post_failures == 1)
    assert p.stats.retries == 2
    assert kube.events == []


async def test_a_long_message_is_cut_to_the_api_limit(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    long_name = "x" * 2000
    async with Running(poster(api, clock)) as p:
        p.submit([replace(xid(pid=1), process=long_name)])
        await wait_until_async(lambda: p.stats.posted == 1)
    assert len(kube.events[0]["message"]) == 1024


async def test_stop_ends_run_during_a_retry_backoff(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    kube.down = True
    p = poster(api, clock, retry_s=3600)
    task = asyncio.create_task(p.run())
    await wait_until_async(lambda: len(kube.requests) == 1)
    p.stop()
    await asyncio.wait_for(task, 5)


async def test_xids_submitted_as_it_stops_are_still_posted(
    kube: KubeApiServer, api: Any, clock: FakeClock
) -> None:
    p = poster(api, clock, tick_s=3600)
    task = asyncio.create_task(p.run())
    await wait_until_async(lambda: len(kube.requests) == 1)  # read the node, now waiting a tick
    p.stop()  # the daemon stops the poster after the writer's last commit ...
    p.submit([xid(79), xid(48, action="RESET_GPU")])  # ... whose XIDs arrive just then
    await asyncio.wait_for(task, 5)
    assert p.stats.posted == 2 and p.queued == 0
    assert sorted(e["message"][:6] for e in kube.events) == ["XID 48", "XID 79"]
