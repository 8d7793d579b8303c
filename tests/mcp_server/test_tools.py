"""Every tool through a real MCP client, in process: answers, output schemas and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server import tools
from mcp_server.deps import ToolDeps
from mcp_server.server import build_server
from mcp_server.tools_gpu import list_gpus
from mcp_server.tools_xid import explain_xid
from store.records import GpuInfo, GpuSample, SampleBatch
from tests.mcp_server.helpers import served
from tests.store.helpers import event, write_all
from watcher.kernel.catalog import default_catalog

TOOLS = {
    "list_gpus",
    "get_gpu_snapshot",
    "get_gpu_health",
    "get_metric_history",
    "get_metric_trend",
    "list_xid_events",
    "summarize_xid_events",
    "explain_xid",
    "correlate_xid",
    "get_gpu_processes",
}


async def call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content
    out = result.structured_content
    assert isinstance(out, dict)
    return out


async def error(client: Client, name: str, **args: Any) -> str:
    result = await client.call_tool(name, args)
    assert result.is_error, result.structured_content
    text = result.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in text
    return text


async def test_every_tool_is_listed_read_only_with_a_description_and_output_schema(
    runaway_db: Path,
) -> None:
    async with served(runaway_db) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and len(tool.description) > 40, tool.name
            assert tool.output_schema is not None, tool.name
            assert tool.annotations is not None and tool.annotations.read_only_hint, tool.name
            assert tool.annotations.destructive_hint is False


async def test_the_server_serves_exactly_the_tool_list_with_each_tools_own_parameters(
    runaway_db: Path,
) -> None:
    async with served(runaway_db) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert [t.__name__ for t in tools.TOOLS] == list(listed)
    for tool in tools.TOOLS:
        schema = listed[tool.__name__].input_schema
        assert list(schema.get("properties", {})) == [p.name for p in tools.parameters(tool)]
        assert listed[tool.__name__].description == tools.description(tool)


async def test_a_tool_is_a_function_a_test_calls_with_its_dependency(runaway_db: Path) -> None:
    result = await list_gpus(ToolDeps(db_path=runaway_db, node="direct"))
    assert result.structured_content is not None
    assert result.structured_content["node"] == "direct"
    assert len(result.structured_content["gpus"]) == 4
    explained = await explain_xid(default_catalog(), code=79)
    assert explained.structured_content is not None
    assert explained.structured_content["mnemonic"] == "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"


def test_binding_a_tool_without_its_dependency_says_which_it_needs() -> None:
    with pytest.raises(TypeError, match="list_gpus needs a ToolDeps"):
        tools.bind(list_gpus, ())


async def test_list_gpus_gives_identity_limits_and_lost_state(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        out = await call(client, "list_gpus")
        assert out["node"] == "sim-node"
        gpus = out["gpus"]
        assert [g["index"] for g in gpus] == [0, 1, 2, 3]
        assert all(g["slowdown_temp_c"] == 89 and g["power_limit_max_w"] == 700 for g in gpus)
        assert [g["lost"] for g in gpus] == [False, False, True, False]
        assert gpus[2]["lost_since"].endswith("Z")


async def test_snapshot_from_the_store_says_so_and_how_old(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        out = await call(client, "get_gpu_snapshot")
        assert len(out["gpus"]) == 4
        hot = out["gpus"][2]
        assert hot["source"] == "stored" and hot["age_s"] >= 0
        assert hot["sample"]["temperature_c"] >= 89
        assert "hw_slowdown" in hot["sample"]["throttle_reasons"]


async def test_snapshot_prefers_live_readings_when_the_server_has_them(runaway_db: Path) -> None:
    async def live() -> dict[str, GpuSample]:
        async with served(runaway_db) as c:
            gpus = (await call(c, "list_gpus"))["gpus"]
        return {gpus[0]["uuid"]: GpuSample(gpus[0]["uuid"], 1, temperature_c=42)}

    async with served(runaway_db, live=live, now_ms=lambda: 1001) as c:
        out = await call(c, "get_gpu_snapshot", gpu="0")
    (snap,) = out["gpus"]
    assert (snap["source"], snap["age_s"], snap["sample"]["temperature_c"]) == ("live", 1.0, 42)


async def test_metric_history_buckets_several_metrics_for_one_gpu(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        out = await call(
            client,
            "get_metric_history",
            gpu="2",
            metrics=["temperature", "throttle_thermal"],
            since="1h",
            buckets=10,
        )
        temp, throttle = out["series"]
        assert (temp["metric"], temp["unit"], throttle["metric"]) == (
            "temperature",
            "°C",
            "throttle_thermal",
        )
        filled = [b for b in temp["buckets"] if b["count"]]
        assert filled and max(b["max"] for b in filled) >= 89
        assert all(b["min"] <= b["avg"] <= b["max"] for b in filled)


async def test_trend_projects_the_time_to_the_gpus_own_slowdown(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        out = await call(
            client,
            "get_metric_trend",
            metric="temperature",
            since="1h",
            threshold_from="slowdown_temp",
        )
        trends = {t["gpu"]: t for t in out["trends"]}
        assert trends[0]["threshold"] == 89 and trends[0]["threshold_source"].startswith("slowdown")
        assert {"slope_per_hour", "change", "r_squared", "confidence", "reason"} <= set(trends[0])


async def test_list_xid_events_filters_and_pages_with_a_cursor(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        first = await call(client, "list_xid_events", since="1d", limit=2)
        assert [e["xid"] for e in first["events"]] == [45, 79]
        assert first["next_cursor"]
        rest = await call(
            client, "list_xid_events", since="1d", limit=2, cursor=first["next_cursor"]
        )
        assert [e["xid"] for e in rest["events"]] == [62] and rest["next_cursor"] is None
        fatal = await call(client, "list_xid_events", since="1d", actions=["restart_bm"])
        assert [e["xid"] for e in fatal["events"]] == [79]
        assert fatal["events"][0]["immediate_action"] == "RESTART_BM"
        on_gpu = await call(client, "list_xid_events", since="1d", gpus=["0000:86:00"], codes=[62])
        assert [(e["xid"], e["pci_bus_id"]) for e in on_gpu["events"]] == [(62, "00000000:86:00.0")]


async def test_explain_xid_gives_the_catalog_entry_and_unknown_codes_explicitly(
    runaway_db: Path,
) -> None:
    async with served(runaway_db) as client:
        known = await call(client, "explain_xid", code=48)
        assert known["known"] and known["mnemonic"] == "ROBUST_CHANNEL_GPU_ECC_DBE"
        assert known["immediate_action_text"]
        unknown = await call(client, "explain_xid", code=9999)
        assert unknown["known"] is False and unknown["immediate_action"] == "UNKNOWN"


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("get_metric_history", {"gpu": "9", "metrics": ["temperature"]}, "Known GPUs: 0"),
        ("get_metric_history", {"gpu": "0", "metrics": ["heat"]}, "'temperature'"),
        ("get_metric_history", {"gpu": "0", "metrics": ["power"] * 9}, "at most 8"),
        ("get_metric_history", {"gpu": "0", "metrics": ["power"], "since": "900d"}, "at most 800"),
        ("get_metric_history", {"gpu": "0", "metrics": ["power"], "buckets": 10**9}, "1000"),
        ("get_metric_history", {"gpu": "x" * 10_000, "metrics": ["power"]}, "at most 100"),
        (
            "get_metric_trend",
            {"metric": "power", "threshold": 1, "threshold_from": "power_limit"},
            "not both",
        ),
        ("list_xid_events", {"since": "yesterday"}, "since: 'yesterday'"),
        ("list_xid_events", {"cursor": "garbage"}, "bad cursor"),
        ("list_xid_events", {"limit": 0}, "greater than or equal to 1"),
        ("list_xid_events", {"limit": 100_000}, "less than or equal to 1000"),
        ("list_xid_events", {"gpus": ["not-a-pci"]}, "PCI bus id"),
        ("list_xid_events", {"gpus": ["\u0661"]}, "GPU '\u0661' matches no GPU"),
        ("summarize_xid_events", {"gpus": ["7"]}, "Known GPUs: 0 (00000000:18:00.0)"),
        ("list_xid_events", {"since": "1h", "until": "2h"}, "is after until ("),
        ("summarize_xid_events", {"since": "1h", "until": "2h"}, "is after until ("),
        (
            "list_xid_events",
            {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "since (2026-01-01T00:00:00.000Z) is the same instant as until",
        ),
        ("get_gpu_processes", {"at": "0001-01-01T00:00:00Z"}, "is before 1970-01-01"),
        ("get_gpu_snapshot", {"gpu": "\u0661"}, "matches no GPU"),
        ("list_xid_events", {"codes": list(range(100))}, "at most 32"),
        ("explain_xid", {"code": -1}, "greater than or equal to 0"),
    ],
)
async def test_bad_arguments_get_an_error_that_says_what_is_valid(
    runaway_db: Path, tool: str, args: dict[str, Any], message: str
) -> None:
    async with served(runaway_db) as client:
        assert message in await error(client, tool, **args)


async def test_the_catalog_resources_serve_the_whole_catalog_and_one_entry(
    runaway_db: Path,
) -> None:
    async with served(runaway_db) as client:
        import json

        whole = await client.read_resource("xid://catalog")
        entries = json.loads(whole.contents[0].text)["entries"]  # type: ignore[union-attr]
        assert len(entries) >= 162 and entries[78]["code"] == 79
        one = await client.read_resource("xid://catalog/79")
        assert json.loads(one.contents[0].text)["title"] == "GPU has fallen off the bus"  # type: ignore[union-attr]


async def test_prompts_name_the_tools_to_call(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert prompts == {"triage_xid", "node_health_check", "weekly_trend_review"}
        triage = await client.get_prompt("triage_xid", {"xid": "79", "gpu": "2"})
        text = triage.messages[0].content.text  # type: ignore[union-attr]
        assert "explain_xid" in text and "correlate_xid" in text


@pytest.mark.parametrize(
    "gpu", ["2", "uuid", "uuid-prefix", "0000:86:00.0", "00000000:86:00.0", "86:00.0", "86:00"]
)
async def test_xid_tools_name_a_gpu_the_way_every_other_tool_does(
    runaway_db: Path, gpu: str
) -> None:
    async with served(runaway_db) as client:
        if gpu.startswith("uuid"):  # GPU 2's UUID, or a unique prefix of it
            uuid = (await call(client, "get_gpu_snapshot", gpu="2"))["gpus"][0]["gpu"]["uuid"]
            gpu = uuid if gpu == "uuid" else uuid[:13]
        listed = await call(client, "list_xid_events", since="1d", gpus=[gpu])
        summary = await call(client, "summarize_xid_events", since="1d", gpus=[gpu])
        health = await call(client, "get_gpu_health", gpu=gpu)
    assert [e["xid"] for e in listed["events"]] == [45, 79, 62]
    assert {e["pci_bus_id"] for e in listed["events"]} == {"00000000:86:00.0"}
    assert summary["total"] == 3
    assert [g["pci_bus_id"] for g in summary["by_gpu"]] == ["00000000:86:00.0"]
    assert [g["pci_bus_id"] for g in health["gpus"]] == ["00000000:86:00.0"]


async def test_the_triage_prompt_leads_into_a_call_that_works(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        triage = await client.get_prompt("triage_xid", {"xid": "79", "gpu": "2"})
        text = triage.messages[0].content.text  # type: ignore[union-attr]
        assert "list_xid_events(codes=[79], since='7d', gpus=['2'])" in text
        out = await call(client, "list_xid_events", codes=[79], since="7d", gpus=["2"])
    assert [e["xid"] for e in out["events"]] == [79]


@pytest.fixture
async def kernel_only_db(db_path: Path) -> Path:
    """A store with one sampled GPU and XIDs on a PCI id NVML never listed."""
    gpu = GpuInfo("GPU-aaaa0000-h100", 0, "NVIDIA H100", "00000000:3B:00.0")
    pcis = ("00000000:3B:00.0", "00000000:D8:00.0")
    xids = [event(n, xid=79, gpu=pci) for n, pci in enumerate(pcis)]
    await write_all(db_path, [SampleBatch(1_700_000_000_000, gpus=(gpu,)), *xids])
    return db_path


@pytest.mark.parametrize("gpu", ["0000:d8:00", "00000000:D8:00.0", "d8:00.0"])
async def test_a_gpu_known_only_from_kernel_lines_is_named_by_its_pci_id(
    kernel_only_db: Path, gpu: str
) -> None:
    async with served(kernel_only_db, now_ms=lambda: 1_700_000_100_000) as client:
        listed = await call(client, "list_xid_events", since="1d", gpus=[gpu])
        summary = await call(client, "summarize_xid_events", since="1d", gpus=[gpu])
        procs = await call(client, "get_gpu_processes", gpu=gpu)
        history = await error(client, "get_metric_history", gpu=gpu, metrics=["power"])
    assert [e["pci_bus_id"] for e in listed["events"]] == ["00000000:D8:00.0"]
    assert summary["total"] == 1
    assert procs["processes"] == [] and "known only from XID lines" in procs["notes"][0]
    assert "known only from kernel XID lines" in history


async def test_every_result_names_the_node_the_store_recorded_when_none_is_given(
    runaway_db: Path,
) -> None:
    async with Client(build_server(ToolDeps(db_path=runaway_db))) as client:
        listed = await call(client, "list_gpus")
        snapshot = await call(client, "get_gpu_snapshot")
        events = await call(client, "list_xid_events", since="1d")
    assert listed["node"] == snapshot["node"] == "sim-node"
    assert {e["node"] for e in events["events"]} == {"sim-node"}


async def test_a_store_with_no_named_events_reports_the_host_name(kernel_only_db: Path) -> None:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(kernel_only_db)) as conn, conn:
        conn.execute("UPDATE xid_events SET node = ''")
    deps = ToolDeps(db_path=kernel_only_db, hostname=lambda: "gpu-node-7")
    async with Client(build_server(deps)) as client:
        assert (await call(client, "list_gpus"))["node"] == "gpu-node-7"
    named = ToolDeps(db_path=kernel_only_db, node="given", hostname=lambda: "gpu-node-7")
    async with Client(build_server(named)) as client:
        assert (await call(client, "get_gpu_snapshot"))["node"] == "given"


async def test_processes_of_a_lost_gpu_are_not_running(runaway_db: Path) -> None:
    async with served(runaway_db) as client:
        (lost,) = [g for g in (await call(client, "list_gpus"))["gpus"] if g["lost"]]
        now = await call(client, "get_gpu_processes", gpu=str(lost["index"]))
        healthy = await call(client, "get_gpu_processes", gpu="0")
    (trainer,) = now["processes"]
    assert trainer["running"] is False
    assert trainer["ended_ts_ms"] is not None and trainer["ended_ts_ms"] >= trainer["last_ts_ms"]
    assert now["notes"] == [
        f"GPU {lost['index']} ({lost['pci_bus_id']}) was lost at {lost['lost_since']}: "
        "its processes ended then"
    ]
    assert all(p["running"] for p in healthy["processes"]) and healthy["notes"] == []


async def test_server_info_carries_the_installed_package_version(runaway_db: Path) -> None:
    import importlib.metadata

    async with served(runaway_db) as client:
        info = client.server_info
    assert info is not None and info.name == "xidwatch"
    assert info.version == importlib.metadata.version("k8s-gpu-mcp-server")
