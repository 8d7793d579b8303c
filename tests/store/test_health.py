"""GPU health: one verdict per GPU from its own limits, NVIDIA's XID workflows, and what
cleared a fatal state; findings as the evidence under it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from store.acks import Ack, record_ack
from store.actions import recovery_action
from store.health import (
    GpuHealth,
    NodeFacts,
    assess_gpu,
    current_boot_id,
    judge_from_xids,
    node_health,
    node_verdict,
)
from store.records import (
    Checkpoint,
    GpuInfo,
    GpuSample,
    GpuStateEvent,
    InventoryGpu,
    SampleBatch,
    SourceCursor,
    StoredXid,
)
from store.telemetry import HW_POWER_BRAKE, SW_THERMAL
from tests.store.helpers import event, reading, write_all

T0 = 1_800_000_000_000
NOW = T0 + 3_600_000
A, B, C = "00000000:3B:00.0", "00000000:86:00.0", "00000000:AF:00.0"
H100 = GpuInfo(
    "GPU-aaaa0000-h100", 0, "NVIDIA H100 80GB HBM3", A, slowdown_temp_c=89, shutdown_temp_c=92
)
T4 = GpuInfo("GPU-bbbb0000-t4", 1, "Tesla T4", B, slowdown_temp_c=93, shutdown_temp_c=96)


def inv(info: GpuInfo, *, lost_since_ms: int | None = None) -> InventoryGpu:
    return InventoryGpu(info, T0 - 86_400_000, NOW, lost_since_ms)


def xid(
    id: int,
    code: int,
    action: str,
    *,
    ts_ms: int,
    pci: str = A,
    boot: str | None = "b2",
    message: str = "",
    count: int = 1,
    pid: int | None = None,
    process: str | None = None,
) -> StoredXid:
    return StoredXid(
        id, ts_ms, ts_ms, ts_ms, count, count > 1, "n1", "xid", code, pci, None, None, None,
        pid, process, message, message, "kmsg", action, boot, id,
    )  # fmt: skip


def judge(
    events: Sequence[StoredXid],
    *,
    gpu: GpuInfo = H100,
    sample: GpuSample | None = None,
    acks: Sequence[Ack] = (),
    states: Sequence[GpuStateEvent] = (),
    lost_since_ms: int | None = None,
) -> GpuHealth:
    """Health from the XIDs alone: judgements without telemetry (the store tests add it)."""
    inventory = inv(gpu, lost_since_ms=lost_since_ms)
    facts = NodeFacts(NOW, tuple(events), tuple(states), tuple(acks), current_boot_id="b2")
    judged = judge_from_xids(facts, [inventory])
    fresh = sample or GpuSample(gpu.uuid, NOW - 1000, temperature_c=50)
    facts = replace(facts, judged=judged)
    return assess_gpu(gpu.pci_bus_id, facts, gpu=inventory, sample=fresh)


def codes(h: GpuHealth) -> dict[str, str]:
    return {f.code: f.severity for f in h.findings}


def finding(h: GpuHealth, code: str) -> str:
    (f,) = [f for f in h.findings if f.code == code]
    return f.message


def verdict(h: GpuHealth) -> tuple[str, str]:
    return h.verdict.cause, h.verdict.action


def todo(h: GpuHealth) -> str:
    return " / ".join((h.verdict.because, *h.verdict.steps))


def test_thresholds_come_from_each_gpus_own_slowdown_and_shutdown_temperature() -> None:
    h100 = judge([], gpu=H100, sample=GpuSample(H100.uuid, NOW, temperature_c=86))
    t4 = judge([], gpu=T4, sample=GpuSample(T4.uuid, NOW, temperature_c=86))
    assert (h100.status, verdict(h100)) == ("warning", ("thermal", "watch"))
    assert "86 °C is within 3 °C of its limits (slowdown 89 °C, shutdown 92 °C)" in finding(
        h100, "temperature_near_limit"
    )
    assert (t4.status, t4.findings, t4.score, verdict(t4)) == ("ok", (), 100, ("none", "none"))
    at_slowdown = judge([], gpu=T4, sample=GpuSample(T4.uuid, NOW, temperature_c=93))
    assert codes(at_slowdown) == {"temperature_slowdown": "warning"}


def test_past_the_shutdown_limit_is_said_and_the_gpu_is_taken_out_for_diagnostics() -> None:
    """Before: "96 °C is at or near its slowdown temperature (89 °C)", shutdown unnoticed."""
    h = judge([], sample=GpuSample(H100.uuid, NOW, temperature_c=96))
    assert (h.status, verdict(h)) == ("critical", ("thermal", "run_diagnostics"))
    assert "past its shutdown temperature (slowdown 89 °C, shutdown 92 °C)" in h.verdict.because
    assert "cooling" in todo(h)


def test_a_gpu_that_reports_no_limits_is_not_judged_on_temperature() -> None:
    bare = GpuInfo("GPU-cccc0000-old", 2, "Tesla K80", C)
    h = judge([], gpu=bare, sample=GpuSample(bare.uuid, NOW, temperature_c=95))
    assert (h.status, codes(h), verdict(h)) == ("ok", {}, ("none", "none"))


def test_power_is_judged_against_the_gpus_own_enforced_limit() -> None:
    over = GpuSample(H100.uuid, NOW, power_w=560.0, power_limit_w=500.0)
    under = GpuSample(H100.uuid, NOW, power_w=690.0, power_limit_w=700.0)
    assert codes(judge([], sample=over)) == {"power_over_limit": "warning"}
    assert verdict(judge([], sample=over)) == ("power", "watch")
    assert judge([], sample=under).status == "ok"


def test_readings_give_one_verdict_the_most_disruptive_with_the_rest_as_evidence() -> None:
    sample = GpuSample(
        H100.uuid, NOW, clocks_event_reasons=SW_THERMAL | HW_POWER_BRAKE,
        ecc_uncorrected_volatile=2, remap_pending=True,
    )  # fmt: skip
    h = judge([], sample=sample)
    assert codes(h) == {
        "ecc_uncorrected": "critical",
        "remap_pending": "critical",
        "thermal_throttle": "warning",
        "power_brake": "warning",
    }
    assert verdict(h) == ("gpu_memory", "reset_gpu")
    assert "nvidia-smi -r -i 00000000:3B:00.0" in todo(h)
    failed = judge([], sample=GpuSample(H100.uuid, NOW, remap_failure=True, remap_pending=True))
    assert codes(failed) == {"remap_failure": "critical"}
    assert verdict(failed) == ("gpu_memory", "replace_gpu")
    assert "RMA" in todo(failed)


def test_a_gpu_not_sampled_for_a_while_is_stale() -> None:
    h = judge([], sample=GpuSample(H100.uuid, NOW - 10 * 60_000, temperature_c=40))
    assert codes(h) == {"stale": "warning"}
    assert "10 min old" in finding(h, "stale")
    assert verdict(h) == ("unknown", "watch")


def test_the_same_workload_failing_again_and_again_is_the_application() -> None:
    """A crash loop: one job restarting with new pids, the GPU needs nothing."""
    crashes = [
        xid(i, 13, "RESTART_APP", ts_ms=T0 + i * 60_000, pid=100 + i, process="trainer",
            message="Graphics Exception: ESR 0x405840=0x1 @ 0x7f00dead0000")
        for i in range(3)
    ]  # fmt: skip
    h = judge(crashes)
    assert (h.status, verdict(h)) == ("warning", ("application", "restart_application"))
    assert h.verdict.confidence == "high"
    assert "the same workload (trainer) failed 3 times" in h.verdict.because
    assert "same address 0x7f00dead0000" in h.verdict.because
    assert h.findings[0].xid_ids == (0, 1, 2)


def test_different_workloads_failing_on_one_gpu_point_at_the_gpu() -> None:
    events = [
        xid(1, 31, "RESTART_APP", ts_ms=T0, pid=100, process="trainer"),
        xid(2, 31, "RESTART_APP", ts_ms=T0 + 600_000, pid=200, process="inference"),
    ]
    h = judge(events)
    assert (h.status, verdict(h)) == ("critical", ("gpu_hardware", "run_diagnostics"))
    assert "2 different workloads faulted on this GPU (inference, trainer)" in h.verdict.because
    assert "dcgmi diag -r 3" in todo(h)


def test_xid_13_spread_over_several_gpus_points_at_the_application() -> None:
    here = [xid(i, 13, "RESTART_APP", ts_ms=T0 + i) for i in range(3)]
    there = [xid(10 + i, 13, "RESTART_APP", ts_ms=T0 + i, pci=B) for i in range(2)]
    h = judge(here + there)
    assert (h.status, verdict(h)) == ("warning", ("application", "restart_application"))
    assert f"also on 1 other GPU(s) ({B})" in h.verdict.because


def test_a_one_off_xid_31_is_the_applications() -> None:
    h = judge([xid(1, 31, "RESTART_APP", ts_ms=T0, pid=7, process="python3")])
    assert verdict(h) == ("application", "restart_application")
    assert h.verdict.confidence == "low"
    assert "a single failure of python3" in h.verdict.because


def test_xid_45_alone_is_routine() -> None:
    h = judge([xid(1, 45, "WORKFLOW_XID_45", ts_ms=T0)])
    assert (h.status, verdict(h)) == ("ok", ("none", "none"))
    assert "a job was stopped" in h.verdict.because


def test_xid_45_seconds_after_another_xid_follows_it_and_the_other_decides() -> None:
    h = judge([xid(1, 79, "RESTART_BM", ts_ms=T0), xid(2, 45, "WORKFLOW_XID_45", ts_ms=T0 + 2000)])
    assert codes(h) == {"xid_79": "critical", "xid_45": "info"}
    assert "follows that one" in finding(h, "xid_45")
    assert verdict(h) == ("gpu_hardware", "reboot_node")
    assert "power-cycle" in todo(h)


def test_xid_79_needs_a_power_cycle_never_a_gpu_reset() -> None:
    h = judge([xid(1, 79, "RESTART_BM", ts_ms=T0)])
    assert h.verdict.action == "reboot_node"
    assert "nvidia-smi -r" not in todo(h)
    assert "a reset cannot reach a GPU that fell off the bus" in todo(h)


def test_xid_48_alone_asks_for_a_gpu_reset() -> None:
    h = judge([xid(1, 48, "WORKFLOW_XID_48", ts_ms=T0)])
    assert codes(h) == {"xid_48": "critical"}
    assert verdict(h) == ("gpu_memory", "reset_gpu")
    assert "nvidia-smi -r" in todo(h)


@pytest.mark.parametrize(("companion", "action"), [(63, "reset_gpu"), (64, "replace_gpu")])
def test_xid_48_with_63_resets_and_with_64_replaces(companion: int, action: str) -> None:
    label = "IGNORE" if companion == 63 else "RESET_GPU"
    h = judge([xid(1, 48, "WORKFLOW_XID_48", ts_ms=T0), xid(2, companion, label, ts_ms=T0 + 5)])
    assert verdict(h) == ("gpu_memory", action)
    assert ("RMA" in todo(h)) is (companion == 64)


def test_xid_92_alone_is_watched() -> None:
    h = judge([xid(1, 92, "IGNORE", ts_ms=T0)])
    assert (h.status, verdict(h)) == ("warning", ("gpu_memory", "watch"))


def test_xid_64_stays_a_replacement_even_after_a_reset_cleared_its_state() -> None:
    events = [xid(1, 64, "RESET_GPU", ts_ms=T0), xid(2, 64, "RESET_GPU", ts_ms=T0 + 600_000)]
    reset = GpuStateEvent(H100.uuid, T0 + 700_000, "recovered")
    h = judge(events, states=[reset])
    assert codes(h)["cleared_by_reset"] == "info"
    assert h.verdict.cleared == "reset"


@pytest.mark.parametrize(
    ("message", "action"),
    [
        ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", "reset_gpu"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x2 (Node Reboot "
         "Required)", "reboot_node"),
        ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)",
         "restart_application"),
        ("GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)", "reset_gpu"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", "none"),
    ],
    ids=["reset", "reboot", "drain-p2p", "drain-reset", "none"],
)  # fmt: skip
def test_xid_154_takes_the_recovery_action_its_message_names(message: str, action: str) -> None:
    h = judge([xid(1, 154, "XID_154", ts_ms=T0, message=message)])
    assert h.verdict.action == action


def test_the_recovery_action_is_read_from_the_label_or_else_the_number() -> None:
    assert recovery_action("changed from 0x0 (None) to 0x4") == "Drain and Reset"
    assert recovery_action("changed from 0 to 2 (node reboot required)") == "Node Reboot Required"
    assert recovery_action("recovery action: Drain P2P") == "Drain P2P"
    assert recovery_action("something else") is None


def test_a_fatal_xid_from_an_earlier_boot_is_cleared_by_the_reboot_and_says_so() -> None:
    h = judge([xid(1, 79, "RESTART_BM", ts_ms=T0, boot="b1")])
    assert (h.status, codes(h)) == ("ok", {"cleared_by_reboot": "info"})
    assert "XID 79 x1" in finding(h, "cleared_by_reboot")
    assert "a reboot (boot b1, now b2)" in finding(h, "cleared_by_reboot")
    assert (h.verdict.action, h.verdict.cleared) == ("none", "reboot")
    assert "cleared by a reboot" in h.verdict.because


def test_a_gpu_reset_after_the_xid_clears_it_and_says_when() -> None:
    reset = GpuStateEvent(H100.uuid, T0 + 60_000, "recovered")
    h = judge([xid(1, 95, "RESET_GPU", ts_ms=T0)], states=[reset])
    assert h.status == "ok"
    assert "answered NVML again at 2027-01-15T08:01:00.000Z" in finding(h, "cleared_by_reset")
    assert codes(h)["gpu_recovered"] == "info"
    assert h.verdict.cleared == "reset"


def test_an_ack_after_the_xid_clears_it_naming_who_and_why() -> None:
    ack = Ack(1, T0 + 5000, H100.uuid, A, "alice", "reseated the GPU, diag passed")
    h = judge([xid(1, 62, "RESET_GPU", ts_ms=T0)], acks=[ack])
    assert (h.status, codes(h)) == ("ok", {"cleared_by_ack": "info"})
    assert "alice's acknowledgement" in finding(h, "cleared_by_ack")
    assert "reseated the GPU, diag passed" in finding(h, "cleared_by_ack")
    assert h.verdict.cleared == "ack"


def test_an_ack_before_the_xid_or_for_another_gpu_does_not_clear_it() -> None:
    early = Ack(1, T0 - 1, H100.uuid, A, "alice", "earlier")
    other = Ack(2, T0 + 1, T4.uuid, B, "bob", "other GPU")
    h = judge([xid(1, 62, "RESET_GPU", ts_ms=T0)], acks=[early, other])
    assert codes(h) == {"xid_62": "critical"}
    assert verdict(h) == ("gpu_hardware", "reset_gpu")


def test_a_reset_does_not_clear_repeats_that_point_at_the_gpu_but_an_ack_does() -> None:
    repeats = [xid(i, 31, "RESTART_APP", ts_ms=T0 + i * 60_000) for i in range(4)]
    reset = GpuStateEvent(H100.uuid, T0 + 600_000, "recovered")
    assert verdict(judge(repeats, states=[reset])) == ("gpu_hardware", "run_diagnostics")
    ack = Ack(1, T0 + 600_000, H100.uuid, A, "bob", "diag passed; job bug INC-42")
    h = judge(repeats, acks=[ack])
    assert (h.status, codes(h)) == ("ok", {"cleared_by_ack": "info"})


def test_a_lost_gpu_needs_a_power_cycle_shows_no_readings_and_an_ack_is_named() -> None:
    lost = judge([], sample=GpuSample(H100.uuid, T0 - 10, temperature_c=70), lost_since_ms=T0)
    assert codes(lost) == {"gpu_lost": "critical"}
    assert verdict(lost) == ("gpu_hardware", "reboot_node")
    assert lost.sample is None
    ack = Ack(1, T0 + 10, H100.uuid, A, "carol", "RMA ticket 7")
    acked = judge([], sample=GpuSample(H100.uuid, T0 - 10), lost_since_ms=T0, acks=[ack])
    assert acked.verdict.action == "reboot_node"
    assert "carol" in finding(acked, "gpu_lost")


def test_the_node_verdict_is_the_most_disruptive_gpu_action_and_names_the_gpus() -> None:
    app = judge([xid(1, 31, "RESTART_APP", ts_ms=T0)])
    off = judge([xid(2, 79, "RESTART_BM", ts_ms=T0, pci=B)], gpu=T4)
    v = node_verdict([app, off])
    assert (v.action, v.gpus) == ("reboot_node", (B,))
    assert node_verdict([judge([])]).action == "none"


def test_the_score_sorts_gpus_the_way_their_status_does() -> None:
    ok = judge([xid(1, 45, "WORKFLOW_XID_45", ts_ms=T0)])
    warning = judge([xid(1, 31, "RESTART_APP", ts_ms=T0)])
    critical = judge([xid(1, 79, "RESTART_BM", ts_ms=T0)])
    assert ok.score == 100
    assert 50 < warning.score < 100
    assert critical.score <= 50


async def test_node_health_covers_sampled_gpus_and_gpus_seen_only_in_xid_lines(
    db_path: Path,
) -> None:
    hot = GpuSample(H100.uuid, NOW - 5000, temperature_c=87)
    cool = GpuSample(T4.uuid, NOW - 5000, temperature_c=40)
    await write_all(
        db_path,
        [
            SampleBatch(NOW - 5000, (hot, cool), gpus=(H100, T4)),
            replace(event(1, xid=95, gpu=A, ts_ms=T0, key="kmsg:b2"), action="RESET_GPU"),
            replace(event(2, xid=79, gpu=C, ts_ms=T0 + 10, key="kmsg:b2"), action="RESTART_BM"),
            GpuStateEvent(H100.uuid, T0 + 60_000, "lost"),
            GpuStateEvent(H100.uuid, T0 + 90_000, "recovered"),
        ],
    )
    await record_ack(db_path, "1", reason="nothing wrong", who="ops", now_ms=T0 + 20)
    async with reading(db_path) as conn:
        results = await node_health(conn, since_ms=T0 - 1, now_ms=NOW)
    assert [(h.pci_bus_id, h.status) for h in results] == [
        (A, "warning"),
        (B, "ok"),
        (C, "critical"),
    ]
    h100, t4, lost = results
    assert codes(h100) == {
        "temperature_near_limit": "warning",
        "gpu_recovered": "info",
        "cleared_by_reset": "info",
    }
    assert t4.gpu is not None
    assert (t4.gpu.info, t4.findings) == (T4, ())
    assert lost.gpu is None
    assert codes(lost) == {"xid_79": "critical", "not_in_inventory": "info"}
    assert verdict(lost) == ("gpu_hardware", "reboot_node")


async def test_a_reboot_shows_through_the_kmsg_watermark_before_any_new_xid(
    db_path: Path,
) -> None:
    before = event(1, xid=79, gpu=A, ts_ms=T0, key="kmsg:b1")
    await write_all(db_path, [SampleBatch(NOW - 5000, gpus=(H100,))])
    await write_all(db_path, [replace(before, action="RESTART_BM")], now_s=T0 / 1000)
    async with reading(db_path) as conn:
        assert await current_boot_id(conn) == "b1"
        (h,) = await node_health(conn, since_ms=T0 - 1, now_ms=NOW)
    assert codes(h)["xid_79"] == "critical"
    await write_all(db_path, [Checkpoint(SourceCursor("kmsg:b2", 7))], now_s=(T0 + 60_000) / 1000)
    async with reading(db_path) as conn:
        assert await current_boot_id(conn) == "b2"
        (h,) = await node_health(conn, since_ms=T0 - 1, now_ms=NOW)
    assert codes(h)["cleared_by_reboot"] == "info"
    assert "xid_79" not in codes(h)
