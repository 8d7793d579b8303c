"""GPU health: the GPU's own limits, NVIDIA's XID workflows, and what cleared a fatal state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from store.acks import Ack, record_ack
from store.health import GpuHealth, NodeFacts, assess_gpu, current_boot_id, node_health
from store.metrics import HW_POWER_BRAKE, SW_THERMAL
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
from store.xid_workflows import recovery_action
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
) -> StoredXid:
    return StoredXid(
        id, ts_ms, ts_ms, ts_ms, count, count > 1, "n1", "xid", code, pci, None, None, None,
        None, None, message, message, "kmsg", action, boot, id,
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
    facts = NodeFacts(NOW, tuple(events), tuple(states), tuple(acks), current_boot_id="b2")
    fresh = sample or GpuSample(gpu.uuid, NOW - 1000, temperature_c=50)
    inventory = inv(gpu, lost_since_ms=lost_since_ms)
    return assess_gpu(gpu.pci_bus_id, facts, gpu=inventory, sample=fresh)


def codes(h: GpuHealth) -> dict[str, str]:
    return {f.code: f.severity for f in h.findings}


def finding(h: GpuHealth, code: str) -> str:
    (f,) = [f for f in h.findings if f.code == code]
    return f"{f.message} | {f.action}"


def test_thresholds_come_from_each_gpus_own_slowdown_temperature() -> None:
    h100 = judge([], gpu=H100, sample=GpuSample(H100.uuid, NOW, temperature_c=86))
    t4 = judge([], gpu=T4, sample=GpuSample(T4.uuid, NOW, temperature_c=86))
    assert h100.status == "warning"
    assert "86 °C is within 3 °C of its slowdown temperature (89 °C)" in finding(
        h100, "temperature_near_slowdown"
    )
    assert (t4.status, t4.findings, t4.score) == ("ok", (), 100)
    at_slowdown = judge([], gpu=T4, sample=GpuSample(T4.uuid, NOW, temperature_c=93))
    assert codes(at_slowdown) == {"temperature_slowdown": "critical"}


def test_a_gpu_that_reports_no_limits_is_not_judged_on_temperature() -> None:
    bare = GpuInfo("GPU-cccc0000-old", 2, "Tesla K80", C)
    h = judge([], gpu=bare, sample=GpuSample(bare.uuid, NOW, temperature_c=95))
    assert (h.status, codes(h)) == ("ok", {"no_thermal_limits": "info"})


def test_power_is_judged_against_the_gpus_own_enforced_limit() -> None:
    over = GpuSample(H100.uuid, NOW, power_w=560.0, power_limit_w=500.0)
    under = GpuSample(H100.uuid, NOW, power_w=690.0, power_limit_w=700.0)
    assert codes(judge([], sample=over)) == {"power_over_limit": "warning"}
    assert judge([], sample=under).status == "ok"


def test_readings_show_throttling_ecc_and_remaps_with_what_to_do() -> None:
    sample = GpuSample(
        H100.uuid, NOW, clocks_event_reasons=SW_THERMAL | HW_POWER_BRAKE,
        ecc_uncorrected_volatile=2, remap_pending=True,
    )  # fmt: skip
    h = judge([], sample=sample)
    assert codes(h) == {
        "ecc_uncorrected": "critical",
        "thermal_throttle": "warning",
        "power_brake": "warning",
        "remap_pending": "warning",
    }
    assert "drain the GPU and reset it" in finding(h, "ecc_uncorrected")
    failed = judge([], sample=GpuSample(H100.uuid, NOW, remap_failure=True, remap_pending=True))
    assert codes(failed) == {"remap_failure": "critical"}


def test_a_gpu_not_sampled_for_a_while_is_stale() -> None:
    h = judge([], sample=GpuSample(H100.uuid, NOW - 10 * 60_000, temperature_c=40))
    assert codes(h) == {"stale": "warning"}
    assert "10 min old" in finding(h, "stale")


def test_xid_13_repeating_on_one_gpu_while_the_others_are_clean_points_at_the_gpu() -> None:
    h = judge([xid(i, 13, "RESTART_APP", ts_ms=T0 + i * 60_000) for i in range(3)])
    assert codes(h) == {"xid_13_repeating": "warning"}
    assert "dcgmi diag" in finding(h, "xid_13_repeating")
    assert h.findings[0].xid_ids == (0, 1, 2)


def test_xid_13_spread_over_several_gpus_points_at_the_application() -> None:
    here = [xid(i, 13, "RESTART_APP", ts_ms=T0 + i) for i in range(3)]
    there = [xid(10 + i, 13, "RESTART_APP", ts_ms=T0 + i, pci=B) for i in range(2)]
    h = judge(here + there)
    assert (h.status, codes(h)) == ("ok", {"xid_13_application": "info"})
    assert f"x2 on 1 other GPU(s) ({B})" in finding(h, "xid_13_application")
    assert "check the application" in finding(h, "xid_13_application")


def test_a_one_off_xid_31_is_the_applications() -> None:
    h = judge([xid(1, 31, "RESTART_APP", ts_ms=T0)])
    assert (h.status, codes(h)) == ("ok", {"xid_31": "info"})


def test_xid_45_alone_is_routine() -> None:
    h = judge([xid(1, 45, "WORKFLOW_XID_45", ts_ms=T0)])
    assert (h.status, codes(h)) == ("ok", {"xid_45": "info"})
    assert "a job was stopped" in finding(h, "xid_45")


def test_xid_45_seconds_after_another_xid_reports_that_one_not_the_45() -> None:
    h = judge([xid(1, 79, "RESTART_BM", ts_ms=T0), xid(2, 45, "WORKFLOW_XID_45", ts_ms=T0 + 2000)])
    assert codes(h) == {"xid_79": "critical"}
    assert "power-cycle" in finding(h, "xid_79")


def test_xid_48_alone_asks_for_a_gpu_reset() -> None:
    h = judge([xid(1, 48, "WORKFLOW_XID_48", ts_ms=T0)])
    assert codes(h) == {"xid_48": "critical"}
    assert "reset the GPU" in finding(h, "xid_48")


@pytest.mark.parametrize(("companion", "rma"), [(63, False), (64, True)])
def test_xid_48_with_63_or_64_asks_to_drain_and_reset(companion: int, rma: bool) -> None:
    action = "IGNORE" if companion == 63 else "RESET_GPU"
    h = judge([xid(1, 48, "WORKFLOW_XID_48", ts_ms=T0), xid(2, companion, action, ts_ms=T0 + 5)])
    assert codes(h) == {"xid_48_with_remap": "critical"}
    text = finding(h, "xid_48_with_remap")
    assert "drain the GPU and reset it" in text
    assert ("RMA" in text) is rma


def test_xid_64_repeating_asks_for_rma_even_after_a_reset_cleared_its_state() -> None:
    events = [xid(1, 64, "RESET_GPU", ts_ms=T0), xid(2, 64, "RESET_GPU", ts_ms=T0 + 600_000)]
    reset = GpuStateEvent(H100.uuid, T0 + 700_000, "recovered")
    h = judge(events, states=[reset])
    assert codes(h)["xid_64_repeating"] == "critical"
    assert "RMA" in finding(h, "xid_64_repeating")
    assert codes(h)["cleared_by_reset"] == "info"


@pytest.mark.parametrize(
    ("message", "status", "todo"),
    [
        ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", "critical",
         "reset it"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x2 (Node Reboot "
         "Required)", "critical", "reboot it"),
        ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)", "warning",
         "peer-to-peer"),
        ("GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)", "critical",
         "drain the GPU, then reset"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", "ok",
         "no longer asks"),
    ],
    ids=["reset", "reboot", "drain-p2p", "drain-reset", "none"],
)  # fmt: skip
def test_xid_154_reports_the_recovery_action_its_message_names(
    message: str, status: str, todo: str
) -> None:
    h = judge([xid(1, 154, "XID_154", ts_ms=T0, message=message)])
    assert h.status == status
    assert todo in finding(h, "xid_154")


def test_the_recovery_action_is_read_from_the_label_or_else_the_number() -> None:
    assert recovery_action("changed from 0x0 (None) to 0x4") == "Drain and Reset"
    assert recovery_action("changed from 0 to 2 (node reboot required)") == "Node Reboot Required"
    assert recovery_action("recovery action: Drain P2P") == "Drain P2P"
    assert recovery_action("something else") is None


def test_a_fatal_xid_from_an_earlier_boot_is_cleared_by_the_reboot_and_says_so() -> None:
    h = judge([xid(1, 79, "RESTART_BM", ts_ms=T0, boot="b1")])
    assert (h.status, codes(h)) == ("ok", {"cleared_by_reboot": "info"})
    assert "XID 79 x1 (RESTART_BM)" in finding(h, "cleared_by_reboot")
    assert "a reboot (boot b1, now b2)" in finding(h, "cleared_by_reboot")


def test_a_gpu_reset_after_the_xid_clears_it_and_says_when() -> None:
    reset = GpuStateEvent(H100.uuid, T0 + 60_000, "recovered")
    h = judge([xid(1, 95, "RESET_GPU", ts_ms=T0)], states=[reset])
    assert h.status == "ok"
    assert "answered NVML again at 2027-01-15T08:01:00.000Z" in finding(h, "cleared_by_reset")
    assert codes(h)["gpu_recovered"] == "info"


def test_an_ack_after_the_xid_clears_it_naming_who_and_why() -> None:
    ack = Ack(1, T0 + 5000, H100.uuid, A, "alice", "reseated the GPU, diag passed")
    h = judge([xid(1, 62, "RESET_GPU", ts_ms=T0)], acks=[ack])
    assert (h.status, codes(h)) == ("ok", {"cleared_by_ack": "info"})
    assert "alice's acknowledgement" in finding(h, "cleared_by_ack")
    assert "reseated the GPU, diag passed" in finding(h, "cleared_by_ack")


def test_an_ack_before_the_xid_or_for_another_gpu_does_not_clear_it() -> None:
    early = Ack(1, T0 - 1, H100.uuid, A, "alice", "earlier")
    other = Ack(2, T0 + 1, T4.uuid, B, "bob", "other GPU")
    h = judge([xid(1, 62, "RESET_GPU", ts_ms=T0)], acks=[early, other])
    assert codes(h) == {"xid_62": "critical"}


def test_a_reset_does_not_clear_repeats_that_point_at_the_gpu_but_an_ack_does() -> None:
    repeats = [xid(i, 31, "RESTART_APP", ts_ms=T0 + i) for i in range(4)]
    reset = GpuStateEvent(H100.uuid, T0 + 60_000, "recovered")
    assert judge(repeats, states=[reset]).status == "warning"
    ack = Ack(1, T0 + 60_000, H100.uuid, A, "bob", "diag passed; job bug INC-42")
    h = judge(repeats, acks=[ack])
    assert (h.status, codes(h)) == ("ok", {"cleared_by_ack": "info"})


def test_a_lost_gpu_is_critical_until_an_operator_acknowledges_it() -> None:
    lost = judge([], sample=GpuSample(H100.uuid, T0 - 10), lost_since_ms=T0)
    assert codes(lost) == {"gpu_lost": "critical"}
    ack = Ack(1, T0 + 10, H100.uuid, A, "carol", "RMA ticket 7")
    acked = judge([], sample=GpuSample(H100.uuid, T0 - 10), lost_since_ms=T0, acks=[ack])
    assert codes(acked) == {"gpu_lost_acknowledged": "warning"}
    assert "carol" in finding(acked, "gpu_lost_acknowledged")


def test_the_score_sorts_gpus_the_way_their_status_does() -> None:
    ok = judge([xid(1, 31, "RESTART_APP", ts_ms=T0)])
    many_warnings = judge(
        [xid(i, c, "CONTACT_SUPPORT", ts_ms=T0) for i, c in enumerate((8, 32, 38, 54, 68, 109))]
    )
    critical = judge([xid(1, 79, "RESTART_BM", ts_ms=T0)])
    assert ok.score == 100
    assert many_warnings.status == "warning"
    assert many_warnings.score == 51
    assert critical.score == 50


async def test_node_health_covers_sampled_gpus_and_gpus_seen_only_in_xid_lines(
    db_path: Path,
) -> None:
    hot = GpuSample(H100.uuid, NOW - 5000, temperature_c=87)
    cool = GpuSample(T4.uuid, NOW - 5000, temperature_c=40)
    await write_all(
        db_path,
        [
            SampleBatch(NOW - 5000, (hot, cool), gpus=(H100, T4)),
            replace(event(1, xid=95, gpu=A, ts_ms=T0, boot_id="b2"), action="RESET_GPU"),
            replace(event(2, xid=79, gpu=C, ts_ms=T0 + 10, boot_id="b2"), action="RESTART_BM"),
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
        "temperature_near_slowdown": "warning",
        "gpu_recovered": "info",
        "cleared_by_reset": "info",
    }
    assert t4.gpu is not None
    assert (t4.gpu.info, t4.findings) == (T4, ())
    assert lost.gpu is None
    assert codes(lost) == {"xid_79": "critical", "not_in_inventory": "info"}


async def test_a_reboot_shows_through_the_kmsg_watermark_before_any_new_xid(
    db_path: Path,
) -> None:
    before = event(1, xid=79, gpu=A, ts_ms=T0, key="kmsg:b1", boot_id="b1")
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
