"""Gateway: a fleet XID summary over 200 nodes, 10 % of them silent; p50/p95 s per round.

What is measured: the gateway's fleet XID summary (every node's ``summarize_xid_events``,
aggregated worst first), asked ``ROUNDS`` times in a row of one gateway process, against
:mod:`bench._fake_nodes` in a process of its own (200 MCP endpoints on loopback, answers
built from the real result models; 10 % accept the connection and never answer, as a hung
node does). Each configuration gets a fresh gateway process, so its breakers start closed
and its peak RSS (``VmHWM``, read from the gateway process's own ``/proc`` entry) is its own:

- ``xidwatch gateway --node NAME=URL ...`` (``python -m xidwatch``, as an operator runs it),
  asked ``fleet_xid_summary`` over MCP: one JSON-RPC ``tools/call`` POST per round to its
  ``/mcp``, the way the gateway itself calls nodes (the SDK client's output-schema check
  would add the client's CPU to the figure);
- the same with the breaker off (``--breaker-failures`` above the number of rounds);
- the same with only the answering nodes: what a fan-out costs when nothing fails;
- :meth:`mcp_server.gateway.fleet.Fleet.xid_summary` called in a worker process, without
  the HTTP server in front: what the MCP layer adds;
- one more gateway, as it runs in a cluster: it finds the answering nodes through the
  Kubernetes API (``--kubeconfig`` to the tests' API server, :mod:`tests.kube_api`, listing
  one ready daemon pod per node, its port named ``http``), so the Kubernetes client is
  loaded, and asks each fleet tool in turn (``fleet_xid_summary``, ``fleet_health``,
  ``nodes_needing_attention``, ``fleet_inventory``, three times each): what each costs,
  how large its answer is, and the gateway's peak RSS after all of them;
- how the gateway reaches the answers, three more gateways asked the XID summary each
  round: the answering nodes found through that API and reached at their pod IPs
  (``--via direct``) or through its pod proxy (``--via api-proxy``, the answer saying so),
  and every node (silent ones too) with ``--prometheus-url`` to a real Prometheus whose TSDB
  holds the fleet's XID counters as scraping it would have left them
  (:mod:`bench._fleet_history`, loaded by promtool): it answers from PromQL, asking no
  node; Prometheus's own CPU per question comes from its ``process_cpu_seconds_total``.

The gateway process's CPU time per round comes from its ``/proc/PID/stat``.

Then the fleet grows: for each ``--nodes`` count (default 200, 1,000 and 5,000) a fresh fake
fleet where every node answers and a fresh gateway over MCP asked the XID summary each
round: p50/p95 s per question and the gateway's CPU per node answer, the figure that says
how large a fleet one gateway core can serve. The configurations above run at the first
count only.

Rounds are split by what happened to the silent nodes: they *time out* (each holds a
concurrency slot for the whole per-node timeout) until their breakers open after
``breaker_threshold`` failures; then they are *refused* at once. The per-node timeout is
set and printed: the rounds it bounds take about that long, whatever its value.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
from mcp import Client

from bench._common import listening_port, log_like_production, percentile, stop_process, table
from bench._fleet_history import SCRAPE_MS, SPAN_MS, fleet_families
from bench._prometheus_tsdb import (
    create_blocks,
    missing_tools,
    prometheus_serving,
    write_openmetrics,
)
from mcp_server.gateway.discovery import DEFAULT_NAMESPACE
from mcp_server.gateway.fanout import CallPolicy
from mcp_server.gateway.fleet import Fleet

__all__ = ["main"]

Namespace = argparse.Namespace

NODES, SILENT, ROUNDS, NODE_TIMEOUT_S = (200, 1_000, 5_000), 0.1, 10, 2.0
QUICK_NODES, QUICK_ROUNDS, QUICK_TIMEOUT_S = (20,), 5, 0.5
CONCURRENCY = 32
SINCE = "24h"
START_TIMEOUT_S = 60.0
FLEET_TOOL = "fleet_xid_summary"  # the gateway's MCP tool over Fleet.xid_summary
# Every fleet tool with its arguments, for the memory run; each asked EVERY_TOOL_ROUNDS times.
FLEET_TOOLS: dict[str, dict[str, Any]] = {
    FLEET_TOOL: {"since": SINCE},
    "fleet_health": {"since": SINCE},
    "nodes_needing_attention": {"since": SINCE},
    "fleet_inventory": {},
}
EVERY_TOOL_ROUNDS = 3
FAKE_TOOLS = ("list_gpus", "get_gpu_health", "summarize_xid_events")
BREAKER_OFF = 100  # the CLI's highest --breaker-failures: never reached in these rounds
FLEET_BLOCK_HOURS = 18  # the largest block Prometheus compacts to at its default 15 d retention


@dataclass(frozen=True, slots=True)
class FakeNodeRef:
    name: str
    url: str
    silent: bool


@dataclass(frozen=True, slots=True)
class Round:
    seconds: float
    cpu_s: float | None  # the gateway process's CPU time (user + system) in the round
    answered: int
    failed: int
    reasons: dict[str, int]
    tool: str = FLEET_TOOL
    answer_kib: float | None = None  # the structured answer as compact JSON (MCP runs only)
    transport: str | None = None  # how the gateway says it reached the nodes
    from_prometheus: int | None = None  # nodes answered from Prometheus (--prometheus-url)

    @property
    def phase(self) -> str:
        if self.reasons.get("timeout"):
            return "time out"
        if self.reasons.get("breaker_open"):
            return "refused (breaker open)"
        return "none" if not self.failed else "other failures"


@dataclass
class Run:
    label: str
    answering: int
    silent: int
    breaker: str
    rounds: list[Round] = field(default_factory=list)
    start_rss_kib: int | None = None
    peak_rss_kib: int | None = None


# -- the fake nodes -----------------------------------------------------------------------


@contextlib.contextmanager
def fake_nodes(nodes: int, silent: float) -> Iterator[list[FakeNodeRef]]:
    """:mod:`bench._fake_nodes` in a subprocess; yields its nodes, SIGTERM at the end."""
    command = [sys.executable, "-m", "bench._fake_nodes", "--nodes", str(nodes)]
    proc = subprocess.Popen(
        [*command, "--silent", str(silent)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        line = _first_line(proc, START_TIMEOUT_S)
        described = json.loads(line)
        yield [FakeNodeRef(n["name"], n["url"], n["silent"]) for n in described["nodes"]]
    finally:
        stop_process(proc)


@contextlib.contextmanager
def kube_api(nodes: Sequence[FakeNodeRef], tmp: Path) -> Iterator[Path]:
    """An API server listing one ready daemon pod per node; yields a kubeconfig for it."""
    from tests.gateway.nodes import LABELS
    from tests.kube_api import KubeApiServer

    with KubeApiServer() as kube:
        for node in nodes:
            url = urlsplit(node.url)
            pod, port = f"xidwatch-{node.name}", {"http": url.port or 80}
            kube.add_pod(
                pod,
                DEFAULT_NAMESPACE,
                node=node.name,
                labels=LABELS,
                ports=port,
                pod_ip=url.hostname,
            )
        yield kube.kubeconfig(tmp / "kubeconfig")


def _first_line(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise RuntimeError(f"{proc.args!r} printed nothing in {timeout_s:.0f} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{proc.args!r} exited with {proc.wait()}")
    return line


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux); None elsewhere."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def proc_status_kib(pid: int | str, key: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` of a process in KiB (Linux); None where /proc has no answer."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return None


# -- the in-process fleet (a worker process) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    nodes: dict[str, str]
    rounds: int
    node_timeout_s: float
    breaker_threshold: int
    concurrency: int


async def _worker_rounds(spec: WorkerSpec) -> dict[str, Any]:
    policy = CallPolicy(
        concurrency=spec.concurrency,
        node_timeout_s=spec.node_timeout_s,
        breaker_threshold=spec.breaker_threshold,
    )
    rounds = []
    async with Fleet.static(spec.nodes, policy=policy) as fleet:
        start_rss = proc_status_kib("self", "VmRSS")
        for _ in range(spec.rounds):
            t0, cpu0 = time.perf_counter(), time.process_time()
            summary = await fleet.xid_summary(SINCE)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            rounds.append(_round(seconds, cpu, summary.model_dump(mode="json")))
    peak = proc_status_kib("self", "VmHWM")
    if peak is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return {"rounds": rounds, "start_rss_kib": start_rss, "peak_rss_kib": peak}


def _round(seconds: float, cpu_s: float | None, answer: dict[str, Any]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for failure in answer["nodes_failed"]:
        reasons[failure["reason"]] = reasons.get(failure["reason"], 0) + 1
    recorded = answer.get("from_prometheus")
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,
        "answered": answer["nodes_answered"],
        "failed": len(answer["nodes_failed"]),
        "reasons": reasons,
        "transport": answer.get("transport"),
        "from_prometheus": None if recorded is None else len(recorded),
    }


def worker_main(spec_path: str) -> None:
    """``--worker SPEC``: run the rounds in this process, print the result as JSON."""
    log_like_production()
    raw = json.loads(Path(spec_path).read_text())
    result = asyncio.run(_worker_rounds(WorkerSpec(**raw)))
    print(json.dumps(result), flush=True)


def run_worker(label: str, nodes: Sequence[FakeNodeRef], spec: WorkerSpec, tmp: Path) -> Run:
    path = tmp / "worker.json"
    path.write_text(json.dumps(dataclasses.asdict(spec)))
    out = subprocess.run(
        [sys.executable, "-m", "bench.gateway_fanout", "--worker", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    run = _run(label, nodes, spec.nodes, f"after {spec.breaker_threshold}")
    run.rounds = [Round(**r) for r in result["rounds"]]
    run.start_rss_kib, run.peak_rss_kib = result["start_rss_kib"], result["peak_rss_kib"]
    return run


def _run(label: str, all_nodes: Sequence[FakeNodeRef], asked: dict[str, str], breaker: str) -> Run:
    silent = sum(1 for n in all_nodes if n.name in asked and n.silent)
    return Run(label, len(asked) - silent, silent, breaker)


# -- the gateway over MCP -----------------------------------------------------------------


def gateway_command(
    nodes: dict[str, str],
    node_timeout_s: float,
    breaker: int,
    kubeconfig: Path | None = None,
    *,
    via: str = "direct",
    extra: Sequence[str] = (),
) -> list[str]:
    """``xidwatch gateway`` naming ``nodes`` with ``--node``, or finding them via ``kubeconfig``
    and reaching them ``via`` the pod IPs (``direct``, the default inside a cluster) or the
    API server's pod proxy (``api-proxy``); ``extra`` options after."""
    if kubeconfig is None:
        specs = [arg for name, url in nodes.items() for arg in ("--node", f"{name}={url}")]
    else:
        specs = ["--kubeconfig", str(kubeconfig), "--via", via]
    return [
        *(sys.executable, "-m", "xidwatch", "--log-json", "--log-level", "info", "gateway"),
        *("--listen", "127.0.0.1:0", "--node-timeout", f"{node_timeout_s:g}"),
        *("--concurrency", str(CONCURRENCY), "--breaker-failures", str(breaker), *specs),
        *extra,
    ]


async def check_fake_answers(node: FakeNodeRef) -> None:
    """The SDK client checks each answer against the real tool's output schema: no drift."""
    async with Client(node.url) as client:
        for tool in FAKE_TOOLS:
            result = await client.call_tool(tool, {})
            if result.is_error or result.structured_content is None:
                raise RuntimeError(f"fake node {node.name}: {tool} failed: {result.content}")


async def _mcp_rounds(port: int, pid: int, tools: Sequence[str]) -> list[Round]:
    """One round per entry of ``tools``: that fleet tool asked once, timed from outside."""
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"Accept": "application/json, text/event-stream"}
    out = []
    async with httpx2.AsyncClient(timeout=600) as http:
        for i, tool in enumerate(tools):
            body = {
                "jsonrpc": "2.0",
                "id": i + 1,
                "method": "tools/call",
                "params": {"name": tool, "arguments": FLEET_TOOLS[tool]},
            }
            t0, cpu0 = time.perf_counter(), proc_cpu_s(pid)
            response = await http.post(url, json=body, headers=headers)
            seconds, cpu1 = time.perf_counter() - t0, proc_cpu_s(pid)
            cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
            response.raise_for_status()
            result = response.json()["result"]
            if result.get("isError") or "structuredContent" not in result:
                raise RuntimeError(f"{tool} failed: {result.get('content')}")
            answer = result["structuredContent"]
            kib = len(json.dumps(answer, separators=(",", ":"))) / 1024
            out.append(Round(**_round(seconds, cpu, answer), tool=tool, answer_kib=kib))
    return out


def run_gateway(
    label: str,
    nodes: Sequence[FakeNodeRef],
    asked: dict[str, str],
    breaker: int,
    args: Namespace,
    tmp: Path,
    tools: Sequence[str] | None = None,
    kubeconfig: Path | None = None,
    *,
    via: str = "direct",
    extra: Sequence[str] = (),
) -> Run:
    """A fresh ``xidwatch gateway`` asked ``tools`` in turn (default: the XID summary, each
    of ``args.rounds``); with ``kubeconfig`` it discovers ``asked`` through that API and
    reaches them ``via`` the pod IPs or the pod proxy; ``extra``: more gateway options."""
    run = _run(label, nodes, asked, "off" if breaker == BREAKER_OFF else f"after {breaker}")
    log_path = tmp / "gateway.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            gateway_command(asked, args.node_timeout, breaker, kubeconfig, via=via, extra=extra),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        port = listening_port(proc, log_path, what="xidwatch gateway")
        run.start_rss_kib = proc_status_kib(proc.pid, "VmRSS")
        run.rounds = asyncio.run(_mcp_rounds(port, proc.pid, tools or [FLEET_TOOL] * args.rounds))
        run.peak_rss_kib = proc_status_kib(proc.pid, "VmHWM")
    finally:
        stop_process(proc)
    return run


def run_scale(count: int, args: Namespace, tmp: Path) -> Run:
    """``count`` fake nodes, all answering, behind a fresh gateway asked ``args.rounds`` times."""
    with fake_nodes(count, 0.0) as nodes:
        asked = {n.name: n.url for n in nodes}
        breaker = CallPolicy().breaker_threshold
        return run_gateway(f"{count:,} nodes", nodes, asked, breaker, args, tmp)


def run_prometheus(
    nodes: Sequence[FakeNodeRef], breaker: int, args: Namespace, tmp: Path
) -> tuple[list[Run], str]:
    """Every node (silent ones too) behind a gateway with ``--prometheus-url``, over a real
    Prometheus holding the fleet's XID counters (:mod:`bench._fleet_history`); the run (none
    where Prometheus is missing) and a line on what was loaded."""
    if (missing := missing_tools()) is not None:
        return [], f"Prometheus run skipped: {missing}"
    started = time.perf_counter()
    root, text = tmp / "prometheus", tmp / "fleet.om"
    families = fleet_families([(n.name, n.silent) for n in nodes], round(time.time() * 1000))
    samples = write_openmetrics(text, families)
    create_blocks(text, root / "tsdb", block_hours=FLEET_BLOCK_HOURS)
    text.unlink()
    loaded = (
        f"Prometheus: {samples:,} samples ({SPAN_MS / 3_600_000:.2f} h of every daemon's "
        f"xidwatch_start_time_seconds and XID counters at a {SCRAPE_MS // 1000} s scrape) "
        f"loaded by promtool in {time.perf_counter() - started:.0f} s"
    )
    every = {n.name: n.url for n in nodes}
    with prometheus_serving(root) as url:
        label = "Prometheus (--prometheus-url), every node listed"
        extra = ["--prometheus-url", url]
        cpu0 = _process_cpu_s(url)
        run = run_gateway(label, nodes, every, breaker, args, tmp, extra=extra)
        cpu = (_process_cpu_s(url) - cpu0) / max(1, len(run.rounds))
    return [run], f"{loaded}; Prometheus's own CPU {cpu:.3f} s per question"


def _process_cpu_s(url: str) -> float:
    """Prometheus's ``process_cpu_seconds_total``, from its own ``/metrics``."""
    for line in httpx2.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    raise RuntimeError(f"{url}/metrics has no process_cpu_seconds_total")


# -- report -------------------------------------------------------------------------------


def report_reach(runs: Sequence[Run], loaded: str) -> None:
    """The XID summary by how the gateway reaches the nodes' answers."""
    body = []
    for run in runs:
        recorded = sorted({r.from_prometheus for r in run.rounds if r.from_prometheus})
        body.append(
            [
                run.label,
                f"{run.answering} + {run.silent}",
                *_question_cells(run.rounds),
                ", ".join(sorted({r.transport or "-" for r in run.rounds})),
                ", ".join(map(str, recorded)) or "0",
            ]
        )
    headers = ["reached through", "nodes ok + silent", "rounds", "p50 s", "p95 s", "CPU s"]
    headers += ["CPU ms / answer", "answered / failed", "transport", "from Prometheus"]
    print(
        "\nfleet XID summary by how the gateway reaches the nodes: pod IPs or the pod proxy "
        "(nodes found through the API), or Prometheus"
    )
    print(table(headers, body))
    print(
        "transport = what the answer says; from Prometheus = nodes answered from its series "
        "(one PromQL query, no fan-out); CPU = the gateway process only (the loopback API "
        f"server and Prometheus run beside it); {loaded}"
    )


def report(runs: Sequence[Run], args: Namespace, wall_s: float) -> None:
    body = []
    for run in runs:
        phases: dict[str, list[Round]] = {}
        for r in run.rounds:
            phases.setdefault(r.phase, []).append(r)
        first = True
        for phase, rounds in phases.items():
            seconds = [r.seconds for r in rounds]
            nodes = f"{run.answering} + {run.silent}" if first else ""
            body.append(
                [
                    run.label if first else "",
                    nodes,
                    run.breaker if first else "",
                    phase,
                    f"{len(rounds)}",
                    f"{percentile(seconds, 50):.3f}",
                    f"{percentile(seconds, 95):.3f}",
                    _cpu(rounds),
                    _cpu_per_answer(rounds),
                    _answered(rounds),
                    _mib(run.start_rss_kib) if first else "",
                    _mib(run.peak_rss_kib) if first else "",
                ]
            )
            first = False
    headers = [
        "gateway",
        "nodes ok + silent",
        "breaker",
        "silent nodes",
        "rounds",
        "p50 s",
        "p95 s",
        "CPU s",
        "CPU ms / answer",
        "answered / failed",
        "RSS MiB",
        "peak RSS MiB",
    ]
    print(table(headers, body))
    print(
        f"s per fleet XID summary (since={SINCE!r}); per-node timeout {args.node_timeout:g} s "
        f"(retries inside it), concurrency {CONCURRENCY}; breaker: opens after that many "
        f"failures in a row (the default), off = --breaker-failures {BREAKER_OFF}, never "
        "reached here; p95 is nearest-rank (with a few rounds, the slowest); CPU s = the "
        "gateway process's CPU time in a round (user + system), p50; "
        "RSS MiB = the gateway process once started, peak = its VmHWM after the rounds; "
        f"measuring took {wall_s:.0f} s"
    )


def report_every_tool(run: Run) -> None:
    """Each fleet tool's cost, and the gateway's memory after answering all of them."""
    body = []
    for tool in FLEET_TOOLS:
        rounds = [r for r in run.rounds if r.tool == tool]
        seconds = [r.seconds for r in rounds]
        kib = max(r.answer_kib or 0.0 for r in rounds)
        p50 = f"{percentile(seconds, 50):.3f}"
        body.append([tool, f"{len(rounds)}", p50, _cpu(rounds), f"{kib:,.0f}", _answered(rounds)])
    headers = ["fleet tool", "rounds", "p50 s", "CPU s", "answer KiB", "answered / failed"]
    print(f"\n{run.label}: {run.answering} answering nodes, each tool in turn")
    print(table(headers, body))
    print(
        f"gateway RSS {_mib(run.start_rss_kib)} MiB once started, peak {_mib(run.peak_rss_kib)}"
        " MiB (VmHWM) after every tool; answer KiB = the structured answer as compact JSON"
    )


def report_scale(runs: Sequence[Run]) -> None:
    """The XID summary as the fleet grows: wall time and the gateway's CPU per node answer."""
    body = []
    for run in runs:
        body.append([run.label, *_question_cells(run.rounds), _mib(run.peak_rss_kib)])
    headers = ["fleet size", "rounds", "p50 s", "p95 s", "CPU s", "CPU ms / answer"]
    print("\nfleet XID summary as the fleet grows, every node answering, gateway over MCP")
    print(table([*headers, "answered / failed", "peak RSS MiB"], body))
    print(
        "CPU ms / answer = the gateway process's CPU time in a round over the nodes that "
        "answered it, p50 (HTTP, JSON, validation and aggregation together)"
    )


def _question_cells(rounds: Sequence[Round]) -> list[str]:
    """Rounds, p50 and p95 s, CPU s, CPU ms per node answer, answered / failed."""
    seconds = [r.seconds for r in rounds]
    p50, p95 = percentile(seconds, 50), percentile(seconds, 95)
    cpu = [_cpu(rounds), _cpu_per_answer(rounds), _answered(rounds)]
    return [f"{len(rounds)}", f"{p50:.3f}", f"{p95:.3f}", *cpu]


def _cpu_per_answer(rounds: Sequence[Round]) -> str:
    values = [r.cpu_s / r.answered for r in rounds if r.cpu_s is not None and r.answered]
    return f"{percentile(values, 50) * 1000:.2f}" if values else "n/a"


def _answered(rounds: Sequence[Round]) -> str:
    pairs = sorted({(r.answered, r.failed) for r in rounds})
    return ", ".join(f"{a} / {f}" for a, f in pairs)


def _cpu(rounds: Sequence[Round]) -> str:
    values = [r.cpu_s for r in rounds if r.cpu_s is not None]
    return f"{percentile(values, 50):.2f}" if values else "n/a"


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f}"


def parse_args(argv: Sequence[str] | None) -> Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_fanout")
    parser.add_argument("--quick", action="store_true", help="20 nodes, 5 rounds, 0.5 s timeout")
    parser.add_argument(
        "--nodes", type=int, nargs="+", default=None, help="fleet sizes; the first gets every run"
    )
    parser.add_argument("--silent", type=float, default=SILENT, help="share that never answers")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--node-timeout", type=float, default=None, help="seconds per node")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.nodes = args.nodes or list(QUICK_NODES if args.quick else NODES)
    if min(args.nodes) < 1:
        parser.error(f"--nodes: fleet sizes must be at least 1, got {args.nodes}")
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    args.node_timeout = args.node_timeout or (QUICK_TIMEOUT_S if args.quick else NODE_TIMEOUT_S)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        worker_main(args.worker)
        return
    print(
        f"gateway fan-out: fleet XID summary over {args.nodes[0]} fake nodes, "
        f"{args.silent:.0%} silent, {args.rounds} rounds per gateway process"
    )
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp,
        fake_nodes(args.nodes[0], args.silent) as nodes,
    ):
        asyncio.run(check_fake_answers(next(n for n in nodes if not n.silent)))
        every = {n.name: n.url for n in nodes}
        answering = {n.name: n.url for n in nodes if not n.silent}
        breaker = CallPolicy().breaker_threshold
        runs = [
            run_gateway("xidwatch gateway (MCP)", nodes, every, breaker, args, Path(tmp)),
            run_gateway("  breaker off", nodes, every, BREAKER_OFF, args, Path(tmp)),
            run_gateway("  answering nodes only", nodes, answering, breaker, args, Path(tmp)),
        ]
        spec = WorkerSpec(every, args.rounds, args.node_timeout, breaker, CONCURRENCY)
        runs.append(run_worker("Fleet in-process", nodes, spec, Path(tmp)))
        tools = [tool for tool in FLEET_TOOLS for _ in range(EVERY_TOOL_ROUNDS)]
        live = [n for n in nodes if not n.silent]
        with kube_api(live, Path(tmp)) as kubeconfig:
            label = "every fleet tool, nodes found through the Kubernetes API"
            every_tool = run_gateway(
                label, nodes, answering, breaker, args, Path(tmp), tools, kubeconfig
            )
            reach = [
                run_gateway(
                    f"{name} (--via {via})",
                    nodes,
                    answering,
                    breaker,
                    args,
                    Path(tmp),
                    kubeconfig=kubeconfig,
                    via=via,
                )
                for name, via in (("pod IPs", "direct"), ("API server's pod proxy", "api-proxy"))
            ]
        history, loaded = run_prometheus(nodes, breaker, args, Path(tmp))
        scale = [run_scale(count, args, Path(tmp)) for count in args.nodes]
    report(runs, args, time.perf_counter() - started)
    report_every_tool(every_tool)
    report_reach([*reach, *history], loaded)
    report_scale(scale)


if __name__ == "__main__":
    main()
