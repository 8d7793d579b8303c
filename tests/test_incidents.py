"""The incident library: each file in tests/incidents/ plays a story on simulated GPUs through
the real daemon, then asks the MCP tools as an assistant would, and checks every GPU's and
the node's verdict: cause, action and status (and confidence where the story is about it).

GPUs the file does not list must come out as ``others`` says. ``correlate_xid`` on the XID
behind each verdict must name the same cause: one judgement, wherever it is asked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from store.actions import ACTIONS, CAUSES
from tests.daemons import run_scenario
from tests.mcp_server.helpers import served
from watcher.config import SimulationSpec

INCIDENTS = sorted((Path(__file__).parent / "incidents").glob("*.yaml"))


@pytest.fixture(params=INCIDENTS, ids=[p.stem for p in INCIDENTS])
def incident(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    data = yaml.safe_load(request.param.read_text())
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(data["scenario"]))
    db = tmp_path / "xidwatch.db"
    spec = SimulationSpec(data["scenario"]["gpus"], scenario=str(scenario), speed=100)
    asyncio.run(run_scenario(db, spec))
    return data["expect"], db


def test_incident_library_covers_every_rule_and_its_neighbours() -> None:
    assert len(INCIDENTS) >= 12
    actions = set()
    causes = set()
    for path in INCIDENTS:
        expect = yaml.safe_load(path.read_text())["expect"]
        for gpu in expect.get("gpus", {}).values():
            actions.add(gpu["action"])
            causes.add(gpu.get("cause"))
    assert actions == set(ACTIONS) - {"none"}  # every action some GPU needs
    assert set(CAUSES) - causes <= {"none", "unknown", "follows_other_xid"}


async def test_the_verdicts_are_what_the_incident_calls_for(
    incident: tuple[dict[str, Any], Path],
) -> None:
    expect, db = incident
    async with served(db) as client:
        health = await _call(client, "get_gpu_health", since="1d")
        by_index = {g["gpu"]["index"]: g for g in health["gpus"] if g["gpu"]}
        for index, gpu in sorted(by_index.items()):
            want = expect.get("gpus", {}).get(index, expect["others"])
            v = gpu["verdict"]
            got = {"cause": v["cause"], "action": v["action"], "status": gpu["status"]}
            got["confidence"] = v["confidence"]
            assert {k: got[k] for k in want} == want, (index, v, gpu["findings"])
            if v["xid_ids"] and v["xid_ids"][-1] > 0:
                c = await _call(client, "correlate_xid", event_id=v["xid_ids"][-1])
                assert c["likely_cause"] == v["cause"], (index, c["evidence"])
    node = health["node_verdict"]
    wanted_gpus = {by_index[i]["pci_bus_id"] for i in expect["node"]["gpus"]}
    assert (node["action"], set(node["gpus"])) == (expect["node"]["action"], wanted_gpus)


async def _call(client: Any, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    out: dict[str, Any] = result.structured_content
    return out
