"""Fleet history from a real Prometheus: a stopped daemon's XIDs and series are still there.

Debian's ``prometheus`` scrapes the three simulated daemons every second, each target labelled
with its node as the ServiceMonitor does; one daemon is then killed. ``xidwatch gateway
--prometheus-url`` answers ``fleet_xid_summary``, ``fleet_metric_trend``, ``fleet_health``
and ``nodes_needing_attention`` for it from its series, and says which nodes came from
Prometheus.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from mcp import Client, StdioServerParameters

from mcp_server.gateway import Fleet, GatewayError, aggregate
from mcp_server.gateway.fanout import FanOutResult, NodeAnswer, NodeFailure
from mcp_server.gateway.history import (
    RECORDED,
    XIDS,
    GpuTrendPoint,
    PrometheusError,
    PrometheusHistory,
    PrometheusSource,
    Sample,
    xid_counts_query,
)
from store.actions import ACTIONS
from tests.gateway.nodes import SPECS, Nodes
from tests.prometheus_server import (
    PrometheusServer,
    query,
    requires_prometheus,
    start_prometheus,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
HISTORY_RULES = REPO / "alerts" / "xidwatch.history.rules.yml"
STOPPED = "node-a"  # thermal-runaway: its GPU fell off the bus (XID 79)
TEMPERATURE = "xidwatch_gpu_temperature_celsius"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prometheus(nodes: Nodes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus that has scraped every daemon's XIDs and a few temperature samples, and
    has seen :data:`STOPPED` go away."""
    with ExitStack() as stack:
        server = start_prometheus(
            stack, tmp_path_factory.mktemp("prometheus"), rule_files=[HISTORY_RULES]
        )
        for spec in SPECS:
            server.scrape(f"{spec.ip}:{nodes.port}", node=spec.name)
        _wait_for_history(server)
        nodes.kill(STOPPED)
        wait_for(
            lambda: not query(server.url, f'xidwatch_start_time_seconds{{node="{STOPPED}"}}'),
            f"{STOPPED}'s series gone stale",
            server.url,
        )
        yield server.url


def _wait_for_history(server: PrometheusServer) -> None:
    want = {spec.name: spec.xids for spec in SPECS}

    def xids() -> bool:
        totals = query(server.url, "sum by (node) (xidwatch_xid_events_total)")
        return {s["metric"]["node"]: int(float(s["value"][1])) for s in totals} == want

    wait_for(xids, f"every node's XIDs in Prometheus ({want})", server.url)
    # every GPU read (not the one that fell off the bus) has three samples: a slope
    short = f"count_over_time({TEMPERATURE}[1m]) < 3 or absent({TEMPERATURE})"
    wait_for(lambda: not query(server.url, short), "three samples of every GPU", server.url)


def _gateway(nodes: Nodes, tmp_path: Path, prometheus: str) -> Client:
    """``xidwatch gateway --stdio`` with every daemon as ``--node`` and ``--prometheus-url``."""
    (tmp_path / "node-token").write_text((nodes.root / "token").read_text())
    args = ["-m", "xidwatch", "--log-level", "warning", "gateway", "--stdio"]
    args += ["--node-token-file", str(tmp_path / "node-token"), "--node-timeout", "2"]
    args += ["--prometheus-url", prometheus]
    for spec in SPECS:
        args += ["--node", f"{spec.name}={nodes.url(spec.name)}"]
    return Client(StdioServerParameters(command=sys.executable, args=args))


async def _ask(
    nodes: Nodes, tmp_path: Path, prometheus: str, tool: str, args: dict[str, Any]
) -> dict[str, Any]:
    """One fleet tool's structured answer through the gateway, which must not be an error."""
    async with _gateway(nodes, tmp_path, prometheus) as client:
        answer = await client.call_tool(tool, args)
    assert not answer.is_error, answer.content
    return answer.structured_content or {}


@requires_prometheus
async def test_a_stopped_nodes_xids_are_in_the_fleet_summary_from_prometheus(
    nodes: Nodes, prometheus: str, tmp_path: Path
) -> None:
    args = {"since": "1h", "limit": 500}
    summary = await _ask(nodes, tmp_path, prometheus, "fleet_xid_summary", args)
    totals = {n["node"]: n["total"] for n in summary["by_node"]}
    assert totals == {spec.name: spec.xids for spec in SPECS}
    assert summary["from_prometheus"] == [spec.name for spec in SPECS]
    assert summary["nodes_failed"] == [] and summary["prometheus_error"] is None
    stopped = [r for r in summary["rows"] if r["node"] == STOPPED]
    assert {(r["xid"], r["tier"]) for r in stopped} >= {(79, "node")}
    assert all(r["first_ts"] is None and r["last_ts"] is None for r in stopped)


@requires_prometheus
async def test_a_stopped_nodes_gpus_are_in_the_metric_trend_marked_down(
    nodes: Nodes, prometheus: str, tmp_path: Path
) -> None:
    args = {"metric": TEMPERATURE, "since": "1h", "limit": 500}
    trend = await _ask(nodes, tmp_path, prometheus, "fleet_metric_trend", args)
    gpus = query(prometheus, f"count(last_over_time({TEMPERATURE}[1h]))")[0]["value"][1]
    assert (trend["gpus_total"], trend["nodes"], trend["series"]) == (int(gpus), 3, TEMPERATURE)
    assert trend["nodes_down_now"] == [STOPPED]
    by_gpu = {(g["node"], g["gpu"]): g for g in trend["highest"]}
    assert len(by_gpu) == trend["gpus_total"]
    assert {node for (node, _), g in by_gpu.items() if not g["node_up"]} == {STOPPED}
    selector = f'xidwatch_gpu_slowdown_temperature_celsius{{node="{STOPPED}", gpu="0"}}'
    slowdown = query(prometheus, f"last_over_time({selector}[1h])")
    stopped = by_gpu[(STOPPED, "0")]
    assert stopped["threshold"] == float(slowdown[0]["value"][1])
    assert stopped["headroom"] == pytest.approx(stopped["threshold"] - stopped["last"])
    peaks = [g["peak"] for g in trend["highest"]]
    assert peaks == sorted(peaks, reverse=True)
    headrooms = [g["headroom"] for g in trend["nearest_threshold"]]
    assert headrooms == sorted(headrooms) and len(headrooms) == trend["gpus_total"]


@requires_prometheus
async def test_per_node_tools_answer_for_a_stopped_node_from_prometheus_saying_so(
    nodes: Nodes, prometheus: str, tmp_path: Path
) -> None:
    async with _gateway(nodes, tmp_path, prometheus) as client:
        xids = await client.call_tool("list_xid_events", {"node": STOPPED, "since": "1h"})
        health = await client.call_tool("get_gpu_health", {"node": STOPPED})
        live = await client.call_tool("get_gpu_health", {"node": "node-b"})
    events: dict[str, Any] = xids.structured_content or {}
    assert (events["source"], events["node_error"].split(":")[0]) == ("prometheus", "refused")
    assert events["result"]["total"] == next(s.xids for s in SPECS if s.name == STOPPED)
    assert 79 in {r["xid"] for r in events["result"]["rows"]}
    assert "pids" in events["result"]["missing"]
    verdict: dict[str, Any] = health.structured_content or {}
    assert not health.is_error, health.content
    assert verdict["source"] == "prometheus" and "findings" in verdict["result"]["missing"]
    exported = query(
        prometheus, f'last_over_time(xidwatch_node_verdict_action{{node="{STOPPED}"}}[1h])'
    )
    assert verdict["result"]["node_verdict"] in [
        {"action": s["metric"]["action"], "cause": s["metric"]["cause"]} for s in exported
    ]
    assert any(g["lost"] for g in verdict["result"]["gpus"])
    assert (live.structured_content or {})["source"] == "node"


def _exported(prometheus: str, node: str) -> set[tuple[str, str, str]]:
    """(PCI id, action, cause) of every GPU verdict ``node``'s daemon exported in the hour."""
    selector = f'xidwatch_gpu_verdict_action{{node="{node}"}}'
    return {
        (m["pci_bus_id"], m["action"], m["cause"])
        for m in (s["metric"] for s in query(prometheus, f"last_over_time({selector}[1h])"))
    }


@requires_prometheus
async def test_fleet_health_lists_a_stopped_nodes_gpus_as_prometheus_last_had_them(
    nodes: Nodes, prometheus: str, tmp_path: Path
) -> None:
    args = {"since": "1h", "limit": 500}
    health = await _ask(nodes, tmp_path, prometheus, "fleet_health", args)
    assert (health["from_prometheus"], health["prometheus_error"]) == ([STOPPED], None)
    assert [(f["node"], f["reason"]) for f in health["nodes_failed"]] == [(STOPPED, "refused")]
    stopped = [g for g in health["gpus"] if g["node"] == STOPPED]
    assert stopped and all(g["score"] is None and g["findings"] == [] for g in stopped)
    verdicts = {(g["pci_bus_id"], g["verdict"]["action"], g["verdict"]["cause"]) for g in stopped}
    assert verdicts <= _exported(prometheus, STOPPED)
    (lost,) = [g for g in stopped if "lost" in g["verdict"]["because"]]
    assert (lost["status"], lost["verdict"]["action"]) == ("critical", "reboot_node")
    ranks = [ACTIONS.index(g["verdict"]["action"]) for g in health["gpus"]]
    assert ranks == sorted(ranks, reverse=True)  # worst first, answered or from Prometheus
    live = [g for g in health["gpus"] if g["node"] != STOPPED]
    assert live and all(isinstance(g["score"], int) for g in live)


@requires_prometheus
async def test_a_stopped_node_that_fell_off_the_bus_needs_attention_from_prometheus(
    nodes: Nodes, prometheus: str, tmp_path: Path
) -> None:
    args = {"since": "1h"}
    attention = await _ask(nodes, tmp_path, prometheus, "nodes_needing_attention", args)
    assert (attention["from_prometheus"], attention["prometheus_error"]) == ([STOPPED], None)
    assert [f["node"] for f in attention["nodes_failed"]] == [STOPPED]
    (entry,) = [n for n in attention["nodes"] if n["node"] == STOPPED]
    assert entry["status"] == "critical"
    assert entry["reasons"][0].startswith("not answering: refused: ")
    assert entry["reasons"][1].startswith("last known state from Prometheus")
    assert "pids" in entry["reasons"][1]
    assert {(x["xid"], x["needs"], x["last_ts"]) for x in entry["fatal_xids"]} >= {
        (79, "reboot_node", None)
    }
    assert "reboot_node" in {g["verdict"]["action"] for g in entry["gpus"]}
    assert any(r.startswith("XID 79 (reboot_node) x1 on ") for r in entry["reasons"])


async def test_a_node_prometheus_never_saw_or_a_failing_prometheus_leaves_plain_failures(
    nodes: Nodes, prometheus: str
) -> None:
    token = (nodes.root / "token").read_text().strip()
    down = {STOPPED: nodes.url(STOPPED), "ghost": "http://127.0.0.1:9"}
    for url, seen in ((prometheus, [STOPPED]), ("http://127.0.0.1:9", [])):
        history = PrometheusHistory(PrometheusSource(url, timeout_s=5))
        async with Fleet.static(down, token=token, history=history) as fleet:
            health = await fleet.health("1h")
            attention = await fleet.needing_attention("1h")
        for answer in (health, attention):
            assert answer.from_prometheus == seen
            assert (answer.prometheus_error is None) == bool(seen)
            assert [f.node for f in answer.nodes_failed] == sorted(down)
        ghost = next(n for n in attention.nodes if n.node == "ghost")
        assert ghost.status == "unreachable" and len(ghost.reasons) == 1
        assert {g.node for g in health.gpus} == set(seen)
    async with Fleet.static(down, token=token) as fleet:  # without Prometheus: as before
        attention = await fleet.needing_attention("1h")
    assert attention.from_prometheus is None and attention.prometheus_error is None
    assert {n.status for n in attention.nodes} == {"unreachable"}


class _CountingHistory(PrometheusHistory):
    """The real client, counting the queries it sends."""

    sent: list[str]

    async def query(self, promql: str, at_ms: int) -> list[Sample]:
        self.sent.append(promql)
        return await super().query(promql, at_ms)


@requires_prometheus
async def test_many_nodes_health_takes_six_queries_each_node_read_at_its_own_last_scrape(
    prometheus: str,
) -> None:
    history = _CountingHistory(PrometheusSource(prometheus))
    history.sent = []
    now_ms = round(time.time() * 1000)
    names = [spec.name for spec in SPECS]
    try:
        found = await history.health(now_ms - 3_600_000, now_ms, nodes=[*names, "ghost"])
    finally:
        await history.aclose()
    assert sorted(found) == names and len(history.sent) == 6
    for node, answer in found.items():
        verdicts = {
            (g["pci_bus_id"], g["verdict"]["action"], g["verdict"]["cause"]) for g in answer["gpus"]
        }
        assert len(verdicts) == 4 and verdicts <= _exported(prometheus, node), node
    assert found[STOPPED]["as_of"] < min(found[n]["as_of"] for n in names if n != STOPPED)


async def test_without_prometheus_answering_the_nodes_are_asked_and_told_why(
    nodes: Nodes,
) -> None:
    history = PrometheusHistory(PrometheusSource("http://127.0.0.1:9", timeout_s=2))
    live = {spec.name: nodes.url(spec.name) for spec in SPECS if spec.name != STOPPED}
    token = (nodes.root / "token").read_text().strip()
    async with Fleet.static(live, token=token, history=history) as fleet:
        summary = await fleet.xid_summary("1h")
    assert summary.prometheus_error and "127.0.0.1:9" in summary.prometheus_error
    assert summary.from_prometheus == []
    assert {n.node for n in summary.by_node} == set(live)


async def test_fleet_metric_trend_without_prometheus_says_which_flag_to_give() -> None:
    fleet = Fleet.static({"node-a": "http://127.0.0.1:9"})
    try:
        with pytest.raises(GatewayError, match="--prometheus-url"):
            await fleet.metric_trend(TEMPERATURE, "1h")
    finally:
        await fleet.aclose()


def test_half_a_basic_auth_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "xidwatch", "gateway", "--node", "n=http://127.0.0.1:9"),
            *("--prometheus-url", "http://127.0.0.1:9", "--prometheus-user", "sre"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "xidwatch: error: --prometheus-user and --prometheus-password-file go together"
    )


class _Recorder(BaseHTTPRequestHandler):
    """A loopback stand-in for the query API: records each request's Authorization header
    and answers an empty vector, or 401 to a request without one."""

    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        auth = self.headers.get("Authorization")
        _Recorder.seen.append(auth)
        body = (
            {"status": "success", "data": {"resultType": "vector", "result": []}}
            if auth
            else {"status": "error", "errorType": "unauthorized", "error": "no credentials"}
        )
        data = json.dumps(body).encode()
        self.send_response(200 if auth else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_the_bearer_token_or_basic_auth_reaches_prometheus_and_a_refusal_says_so(
    recorder: str,
) -> None:
    for source in (
        PrometheusSource(recorder, bearer_token="prom-token"),
        PrometheusSource(recorder, basic_auth=("sre", "secret")),
    ):
        history = PrometheusHistory(source)
        assert await history.query("up", 0) == []
        await history.aclose()
    history = PrometheusHistory(PrometheusSource(recorder))
    refused = f"{recorder}/api/v1/query answered HTTP 401: no credentials"
    with pytest.raises(PrometheusError, match=f"^{re.escape(refused)}$"):
        await history.query("up", 0)
    await history.aclose()
    basic = "Basic " + base64.b64encode(b"sre:secret").decode()
    assert _Recorder.seen == ["Bearer prom-token", basic, None]


def test_the_trend_ranks_rise_peak_and_headroom_and_hours_to_the_limit() -> None:
    def point(node: str, last: float, peak: float, slope: float) -> GpuTrendPoint:
        return GpuTrendPoint(node, {"gpu": "0"}, last, peak, slope, threshold=90.0)

    trend = aggregate.fleet_metric_trend(
        [point("a", 80, 85, 0.0), point("b", 60, 95, 10.0), point("c", 85, 86, -1.0)],
        metric=TEMPERATURE,
        series=TEMPERATURE,
        source="http://prometheus",
        up={"a", "b"},
        since_ms=0,
        until_ms=3_600_000,
        limit=2,
    )
    assert [g.node for g in trend.rising] == ["b", "a"]
    assert [g.node for g in trend.highest] == ["b", "c"]
    assert [g.node for g in trend.nearest_threshold] == ["c", "a"]
    assert trend.nodes_down_now == ["c"] and trend.gpus_total == 3
    by_node = {g.node: g for g in trend.highest + trend.rising}
    assert by_node["b"].hours_to_threshold == 3.0  # 30 degrees at 10 an hour
    assert by_node["a"].hours_to_threshold is None  # flat: never


def test_a_node_known_from_prometheus_is_judged_by_its_last_verdicts_or_stays_a_failure() -> None:
    def gpu(index: int, action: str, *, lost: bool = False) -> dict[str, Any]:
        pci = f"00000000:{index}B:00.0"
        verdict = {"action": action, "cause": "thermal" if lost else "unknown"}
        return {
            "gpu": str(index),
            "pci_bus_id": pci,
            "model": "H100",
            "verdict": verdict,
            "lost": lost,
        }

    failures = tuple(NodeFailure(n, "refused", "down") for n in ("a", "b", "c"))
    as_of = "2026-12-07T21:39:51.028Z"
    recorded = [
        NodeAnswer("a", {"as_of": as_of, "gpus": [gpu(2, "reboot_node", lost=True)]}, 0.0),
        NodeAnswer("b", {"as_of": as_of, "gpus": [gpu(0, "watch"), gpu(1, "none")]}, 0.0),
        NodeAnswer("c", {"as_of": as_of, "gpus": "unreadable"}, 0.0),
    ]
    answer = aggregate.nodes_needing_attention(
        FanOutResult((), failures), FanOutResult((), ()), since_ms=0, recorded=recorded
    )
    by_node = {n.node: n for n in answer.nodes}
    assert [(n.node, n.status) for n in answer.nodes] == [
        ("a", "critical"),
        ("b", "unreachable"),
        ("c", "unreachable"),
    ]
    assert [g.status for g in by_node["b"].gpus] == ["warning"]  # as the node judges "watch"
    assert "GPU was lost" in by_node["a"].reasons[2] and as_of in by_node["a"].reasons[1]
    assert len(by_node["c"].reasons) == 1  # unreadable: the plain failure, nothing added
    assert [f.node for f in answer.nodes_failed] == ["a", "b", "c"]
    health = aggregate.fleet_health(FanOutResult((), failures), since_ms=0, recorded=recorded)
    assert [(g.node, g.status, g.score) for g in health.gpus] == [
        ("a", "critical", None),
        ("b", "warning", None),
        ("b", "ok", None),
    ]


XID_SERIES = (
    # (xid, values a minute apart from t=0, XIDs in the window from 30m to 60m)
    ("13", "1x39 3x20", 2),  # counted before the window, twice more in it
    ("31", "_x44 1x15", 1),  # born in the window: its whole value
    ("43", "5x39 _x2 1x18", 1),  # the daemon restarted (counter from 0), then one XID
    ("45", "4x60", 0),  # nothing new in the window
    ("48", "_x24 1x35", 0),  # born just before the window: nothing in it
)


@pytest.mark.skipif(PROMTOOL is None, reason=requires_prometheus.kwargs["reason"])
def test_the_xid_count_query_counts_born_restarted_and_old_series_raw_or_recorded(
    tmp_path: Path,
) -> None:
    def labels(xid: str) -> str:
        return f'node="n1", pci_bus_id="00000000:18:00.0", kind="xid", xid="{xid}", action="A"'

    case = {
        "rule_files": [str(HISTORY_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"xidwatch_xid_events_total{{{labels(x)}}}", "values": v}
                    for x, v, _ in XID_SERIES
                ],
                "promql_expr_test": [
                    {
                        "expr": xid_counts_query(series, "30m", "node"),
                        "eval_time": "60m",
                        "exp_samples": [
                            {"labels": f"{{{labels(x)}}}", "value": n}
                            for x, _, n in XID_SERIES
                            if n
                        ],
                    }
                    # the same counts from the recorded 5-minute series as from the raw ones
                    for series in ("xidwatch_xid_events_total", RECORDED[XIDS])
                ],
            }
        ],
    }
    (tmp_path / "xids.test.yml").write_text(json.dumps(case))
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "xids.test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_recorded_series_the_gateway_reads_is_recorded_from_its_raw_series() -> None:
    groups = yaml.safe_load(HISTORY_RULES.read_text(encoding="utf-8"))["groups"]
    recorded = {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}
    for raw, name in RECORDED.items():
        assert name in recorded, f"{name} is not recorded by {HISTORY_RULES.name}"
        assert f"({raw}[5m])" in recorded[name], (name, recorded[name])
