"""Health, summaries, correlation and processes through a real MCP client, on scenario data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from store.acks import record_ack
from tests.mcp_server.helpers import served
from tests.mcp_server.test_tools import call, error


async def xid_id(client: Any, code: int) -> int:
    events = (await call(client, "list_xid_events", since="1d", codes=[code]))["events"]
    return int(events[0]["id"])


async def test_the_thermal_runaway_xid_79_is_correlated_with_the_heat_before_it(
    runaway_db: Path,
) -> None:
    async with served(runaway_db) as client:
        out = await call(client, "correlate_xid", event_id=await xid_id(client, 79), before="1h")
    assert out["event"]["xid"] == 79 and out["gpu"]["index"] == 2
    assert (out["likely_cause"], out["action"]) == ("thermal", "reboot_node")
    evidence = " ".join(out["evidence"])
    assert "temperature" in evidence and "89" in evidence  # its own slowdown temperature
    assert "throttl" in evidence
    metrics = {m["metric"]: m for m in out["metrics"]}
    before = metrics["temperature"]["before"]
    assert before["min"] < 60 and before["max"] >= 89  # it heated past its slowdown
    assert metrics["throttle_thermal"]["before"]["max"] == 1
    nearby = {(n["xid"], n["same_gpu"]) for n in out["nearby_xids"]}
    assert {(62, True), (45, True)} <= nearby
    assert 4242 in {p["pid"] for p in out["processes"]}
    assert [e["state"] for e in out["gpu_events"]] == ["lost"]


async def test_the_45_after_the_79_is_said_to_follow_it(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        out = await call(client, "correlate_xid", event_id=await xid_id(client, 45))
    assert out["likely_cause"] == "follows_other_xid"
    assert any("79" in line for line in out["evidence"])


async def test_correlating_an_unknown_id_or_a_huge_window_is_a_clear_error(
    runaway_db: Path,
) -> None:
    async with served(runaway_db) as client:
        assert "list_xid" in await error(client, "correlate_xid", event_id=999_999)
        assert "at most 24h" in await error(client, "correlate_xid", event_id=1, before="30d")
        assert "greater than or equal to 1" in await error(client, "correlate_xid", event_id=0)


async def test_health_puts_the_lost_gpu_first_with_its_reasons(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        out = await call(client, "get_gpu_health", since="1d")
    worst = out["gpus"][0]
    assert worst["gpu"]["index"] == 2 and worst["status"] == "critical"
    assert worst["score"] < 50
    codes = {f["code"] for f in worst["findings"]}
    assert "gpu_lost" in codes
    assert worst["verdict"]["action"] == "reboot_node"
    assert worst["verdict"]["cause"] == "thermal"
    assert worst["sample"] is None  # a lost GPU has no current readings
    assert out["node_verdict"]["action"] == "reboot_node"
    assert out["node_verdict"]["gpus"] == [worst["pci_bus_id"]]
    assert {g["status"] for g in out["gpus"][1:]} <= {"ok", "warning"}


async def test_an_acknowledgement_is_shown_as_what_cleared_the_fatal_state(
    tmp_path: Path, runaway_db: Path
) -> None:
    db = tmp_path / "acked.db"
    db.write_bytes(runaway_db.read_bytes())
    await record_ack(db, "2", reason="reset after fan swap, INC-1", who="sre", now_ms=10**13)
    async with served(db, now_ms=lambda: 10**13 + 1000) as client:
        out = await call(client, "get_gpu_health", gpu="2", since="400d")
    (gpu,) = out["gpus"]
    messages = " ".join(f["message"] for f in gpu["findings"])
    assert "acknowledged by sre" in messages and "INC-1" in messages


async def test_summary_counts_by_code_and_says_what_is_new(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        out = await call(client, "summarize_xid_events", since="1h")
    assert out["total"] == 3 and out["previous_total"] == 0
    assert {c["xid"] for c in out["new_codes"]} == {62, 79, 45}
    assert [g["pci_bus_id"] for g in out["new_gpus"]] == ["00000000:86:00.0"]
    assert {a["action"] for a in out["by_action"]} >= {"RESTART_BM", "RESET_GPU"}


async def test_processes_on_a_gpu_at_the_time_of_an_xid(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        events = (await call(client, "list_xid_events", since="1d", codes=[62]))["events"]
        out = await call(client, "get_gpu_processes", gpu="2", at=events[0]["ts"])
        now = await call(client, "get_gpu_processes", gpu="0")
    assert [(p["pid"], p["name"]) for p in out["processes"]] == [(4242, "trainer")]
    assert out["processes"][0]["max_used_mib"] >= 60_000
    assert out["at"] == events[0]["ts"]
    assert now["at"] is None
