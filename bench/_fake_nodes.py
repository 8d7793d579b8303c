"""Many cheap node daemons for the gateway fan-out benchmark: one process, N MCP endpoints.

Each fake node listens on its own loopback port and speaks MCP streamable HTTP the way
``xidwatch run`` does (stateless, JSON responses, no session id): ``initialize``,
``notifications/initialized`` (202), ``ping``, ``tools/list`` (the real server's own list)
and ``tools/call`` for ``list_gpus``, ``get_gpu_health`` and ``summarize_xid_events``.
Answers are built once at start from the real result models and the real pure logic
(:func:`store.health.assess_gpu`, :func:`store.xid_summary.compare_windows`), so their shape
cannot drift from a real node's; arguments are accepted and ignored (every answer is for
the last 24 h). Each node has 8 GPUs and its own readings; some have XIDs (13 spread over
a job's GPUs, 48 with 63, 79 with the GPU lost). A fraction of the nodes are silent: they
accept the connection, read the request and never answer, as a hung node does, so only
the caller's timeout ends the call. No SQLite, no uvicorn: a raw asyncio HTTP/1.1 loop.

Not a benchmark itself (hence the ``_``: ``python -m bench`` skips it).
``python -m bench._fake_nodes --nodes 200 --silent 0.1`` prints one JSON line (``event``
``fake_nodes_listening`` with every node's name, URL and whether it is silent) and serves
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import BaseModel

from bench.ingest import H100_TOTAL, gpu_infos
from mcp_server.deps import ToolDeps
from mcp_server.models import GpuModel, HealthResult
from mcp_server.server import INSTRUCTIONS, build_server
from mcp_server.tools_gpu import GpuListResult
from mcp_server.tools_xid import XidSummaryResult
from store.actions import action_rank
from store.coverage import Coverage
from store.health import HealthReport, NodeFacts, assess_gpu, judge_from_xids, node_verdict
from store.records import GpuInfo, GpuSample, InventoryGpu, StoredXid, XidSummary, XidSummaryRow
from store.xid_summary import compare_windows
from watcher.clock import now_ms as wall_now_ms
from watcher.kernel.catalog import XidCatalog, default_catalog

__all__ = ["FakeFleet", "FakeNode", "node_answers"]

GPUS = 8
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
BOOT_ID = "6f1c2a44-0d5e-4b8e-9a77-3c1d2e4f5a6b"


# -- answers ------------------------------------------------------------------------------


def _gpus(node: int) -> list[GpuInfo]:
    return list(gpu_infos(GPUS, node=node))


def _sample(rng: random.Random, gpu: GpuInfo, ts_ms: int) -> GpuSample:
    util = rng.choice((0, 0, rng.randint(40, 100), rng.randint(85, 100)))
    return GpuSample(
        uuid=gpu.uuid,
        ts_ms=ts_ms,
        temperature_c=32 + int(util * 0.45) + rng.randint(0, 6),
        power_w=round(70 + util * 5.8 + rng.uniform(0, 20), 1),
        power_limit_w=700.0,
        sm_clock_mhz=1980 if util else 345,
        memory_clock_mhz=2619,
        gpu_util_pct=util,
        memory_util_pct=util // 2,
        memory_used_bytes=(rng.randint(20, 78) * 2**30) if util else 0,
        memory_total_bytes=H100_TOTAL,
        ecc_corrected_volatile=rng.choice((0, 0, 0, rng.randint(1, 40))),
        ecc_uncorrected_volatile=0,
        ecc_corrected_aggregate=rng.randint(0, 200),
        ecc_uncorrected_aggregate=0,
        remapped_rows_corrected=0,
        remapped_rows_uncorrected=0,
        remap_pending=False,
        remap_failure=False,
        clocks_event_reasons=0,
        pcie_replays=rng.choice((0, 0, 0, rng.randint(1, 5))),
        nvlink_active=18,
        nvlink_errors=0,
        process_count=1 if util else 0,
    )


@dataclass
class _XidMaker:
    node: str
    catalog: XidCatalog
    gpus: Sequence[GpuInfo]
    out: list[StoredXid] = field(default_factory=list)

    def add(self, gpu: int, code: int, ts_ms: int, process: str | None = "python") -> None:
        info, g = self.catalog.lookup(code), self.gpus[gpu]
        bus = g.pci_bus_id.split(":", 1)[1].lower()
        message = f"{info.title}; pid=4242, name={process}" if process else info.title
        self.out.append(
            StoredXid(
                id=len(self.out) + 1,
                ts_ms=ts_ms,
                last_ts_ms=ts_ms,
                received_ms=ts_ms + 3,
                count=1,
                burst=False,
                node=self.node,
                kind="xid",
                xid=code,
                pci_bus_id=g.pci_bus_id,
                gpu_uuid=g.uuid,
                mig_gi=None,
                mig_ci=None,
                pid=4242 if process else None,
                process=process,
                message=message,
                raw=f"NVRM: Xid (PCI:{bus}): {code}, {message}",
                source="kmsg",
                action=info.immediate_action,
                boot_id=BOOT_ID,
                seq=1000 + len(self.out),
            )
        )


def _xids(rng: random.Random, maker: _XidMaker, now_ms: int) -> None:
    """Some nodes' XIDs over the last two days: most nodes have none."""
    roll = rng.random()

    def when(days: float) -> int:
        return now_ms - rng.randint(60_000, int(days * DAY_MS))

    if roll < 0.12:  # an application fault spread over the GPUs of one job
        t = when(2)
        for g in rng.sample(range(GPUS), rng.randint(2, 4)):
            maker.add(g, 13, t + g * 40)
    elif roll < 0.18:  # a double-bit ECC error, and the row remap it causes
        g, t = rng.randrange(GPUS), when(1)
        maker.add(g, 48, t)
        maker.add(g, 63, t + 1_000, process=None)
    elif roll < 0.22:  # a GPU fell off the bus
        maker.add(rng.randrange(GPUS), 79, when(1), process=None)
    if rng.random() < 0.08:  # a job that keeps faulting on one GPU
        g, t = rng.randrange(GPUS), when(2)
        for k in range(rng.randint(3, 6)):
            maker.add(g, 31, t + k * 90_000)


def _summary_rows(xids: Sequence[StoredXid]) -> XidSummary:
    grouped: dict[tuple[str, int, str | None, str], list[StoredXid]] = {}
    for x in xids:
        grouped.setdefault((x.kind, x.xid, x.pci_bus_id, x.action), []).append(x)
    rows = [
        XidSummaryRow(
            kind=xs[0].kind,
            xid=xs[0].xid,
            pci_bus_id=xs[0].pci_bus_id,
            action=xs[0].action,
            count=sum(x.count for x in xs),
            rows=len(xs),
            first_ts_ms=min(x.ts_ms for x in xs),
            last_ts_ms=max(x.last_ts_ms for x in xs),
        )
        for xs in grouped.values()
    ]
    rows.sort(key=lambda r: (-r.count, r.xid, r.pci_bus_id or ""))
    return XidSummary(None, None, sum(r.count for r in rows), tuple(rows))


def node_answers(
    index: int, name: str, *, now_ms: int, catalog: XidCatalog, seed: int = 1
) -> dict[str, BaseModel]:
    """Node ``index``'s answers to the three tools, as the real tools' result models."""
    rng = random.Random(seed * 1_000_003 + index)
    infos = _gpus(index)
    maker = _XidMaker(name, catalog, infos)
    _xids(rng, maker, now_ms)
    lost = {x.pci_bus_id for x in maker.out if x.xid == 79}
    inventory = [
        InventoryGpu(
            info=g,
            first_seen_ms=now_ms - 90 * DAY_MS,
            last_seen_ms=now_ms - (HOUR_MS if g.pci_bus_id in lost else 5_000),
            lost_since_ms=now_ms - HOUR_MS if g.pci_bus_id in lost else None,
        )
        for g in infos
    ]
    samples = {g.info.uuid: _sample(rng, g.info, g.last_seen_ms) for g in inventory}
    since_ms = now_ms - DAY_MS
    recent = [x for x in maker.out if x.ts_ms >= since_ms]
    facts = NodeFacts(now_ms=now_ms, xids=tuple(recent), current_boot_id=BOOT_ID, node=name)
    facts = replace(facts, judged=judge_from_xids(facts, inventory))
    health = [
        assess_gpu(g.info.pci_bus_id, facts, gpu=g, sample=samples[g.info.uuid]) for g in inventory
    ]
    health.sort(key=lambda h: (-action_rank(h.verdict.action), h.score, h.pci_bus_id))
    before = [x for x in maker.out if since_ms - DAY_MS <= x.ts_ms < since_ms]
    window = compare_windows(
        _summary_rows(recent), _summary_rows(before), since_ms=since_ms, until_ms=now_ms
    )
    return {
        "list_gpus": GpuListResult(node=name, gpus=[GpuModel.from_inventory(g) for g in inventory]),
        "get_gpu_health": HealthResult.from_report(
            HealthReport(name, since_ms, tuple(health), node_verdict(health), _coverage(recent))
        ),
        "summarize_xid_events": XidSummaryResult.from_summary(window),
    }


def _coverage(xids: Sequence[StoredXid]) -> Coverage:
    """What a node's store covers: 90 days of samples to the last few seconds, its XIDs."""
    now = wall_now_ms()
    first, last = (xids[0].ts_ms, xids[-1].ts_ms) if xids else (None, None)
    return Coverage(now - 90 * DAY_MS, now - 5_000, now - 5_000, first, last)


def _call_result(model: BaseModel) -> bytes:
    """A ``CallToolResult`` as :func:`mcp_server.results.compact` makes it, as JSON."""
    text = model.model_dump_json()
    return json.dumps(
        {
            "content": [{"text": text, "type": "text"}],
            "isError": False,
            "structuredContent": model.model_dump(mode="json"),
        },
        separators=(",", ":"),
    ).encode()


# -- the HTTP side ------------------------------------------------------------------------


@dataclass
class FakeNode:
    """One node's endpoint: its answers as JSON bytes, or silence."""

    name: str
    silent: bool
    results: dict[str, bytes]
    tools_list: bytes
    port: int = 0
    requests: int = 0
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: HTTP/1.1 keep-alive, Content-Length bodies only."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, headers = _parse_head(head)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests += 1
                if self.silent:
                    continue  # read and never answer: the caller's timeout ends it
                status, payload = self._answer(method, target, headers, body)
                writer.write(_response(status, payload))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if target.split("?", 1)[0] in ("/healthz", "/readyz") and method == "GET":
            return 200, b'{"ready":true}'
        if target.split("?", 1)[0] != "/mcp":
            return 404, b'{"error":"not found"}'
        if method != "POST":
            return 405, b'{"error":"this MCP endpoint is stateless: send requests with POST"}'
        if "application/json" not in headers.get("accept", ""):
            return 406, _error(None, -32600, "Not Acceptable: Client must accept application/json")
        try:
            message = json.loads(body)
            method_name, request_id = message["method"], message.get("id")
        except (ValueError, KeyError, TypeError):
            return 400, _error(None, -32700, "Parse error")
        if request_id is None:
            return 202, b""  # a notification (notifications/initialized)
        return 200, self._rpc(method_name, request_id, message.get("params") or {})

    def _rpc(self, method: str, request_id: Any, params: dict[str, Any]) -> bytes:
        if method == "tools/call":
            name = params.get("name")
            cached = self.results.get(name) if isinstance(name, str) else None
            if cached is None:
                text = json.dumps(f"Unknown tool: {name}")
                cached = f'{{"content":[{{"text":{text},"type":"text"}}],"isError":true}}'.encode()
            return _result(request_id, cached)
        if method == "tools/list":
            return _result(request_id, self.tools_list)
        if method == "ping":
            return _result(request_id, b"{}")
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
            result = {
                "capabilities": {
                    "prompts": {"listChanged": False},
                    "resources": {"listChanged": False, "subscribe": False},
                    "tools": {"listChanged": False},
                },
                "instructions": INSTRUCTIONS,
                "protocolVersion": version,
                "serverInfo": {"name": "xidwatch", "version": "0.2.0"},
            }
            return _result(request_id, json.dumps(result).encode())
        return _error(request_id, -32601, "Method not found", data=method)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return method, target, headers


_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}
_REASONS |= {405: "Method Not Allowed", 406: "Not Acceptable"}


def _response(status: int, payload: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"date: {formatdate(usegmt=True)}\r\n"
        "server: xidwatch-fake-node\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def _result(request_id: Any, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (json.dumps(request_id).encode(), result)


def _error(request_id: Any, code: int, message: str, data: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


async def _tools_list() -> bytes:
    """The real node server's ``tools/list`` result (building it opens no store)."""
    server = build_server(ToolDeps(db_path=Path("/nonexistent/xidwatch.db")))
    tools = [
        t.model_dump(mode="json", by_alias=True, exclude_none=True)
        for t in await server.list_tools()
    ]
    return json.dumps({"tools": tools}, separators=(",", ":")).encode()


class FakeFleet:
    """``nodes`` fake node endpoints on loopback; ``silent`` of them never answer."""

    def __init__(self, nodes: int = 200, silent: float = 0.1, seed: int = 1) -> None:
        self.count, self.silent, self.seed = nodes, silent, seed
        self.nodes: list[FakeNode] = []

    async def start(self, now_ms: int | None = None) -> None:
        now = wall_now_ms() if now_ms is None else now_ms
        catalog, tools_list = default_catalog(), await _tools_list()
        rng = random.Random(self.seed)
        silent = set(rng.sample(range(self.count), round(self.count * self.silent)))
        for i in range(self.count):
            name = f"gpu-node-{i:03d}"
            answers = node_answers(i, name, now_ms=now, catalog=catalog, seed=self.seed)
            results = {tool: _call_result(model) for tool, model in answers.items()}
            node = FakeNode(name, i in silent, results, tools_list)
            node.server = await asyncio.start_server(node.serve, "127.0.0.1", 0, backlog=512)
            node.port = node.server.sockets[0].getsockname()[1]
            self.nodes.append(node)

    async def stop(self) -> None:
        for node in self.nodes:
            if node.server is not None:
                node.server.close()
        for node in self.nodes:
            if node.server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.server.wait_closed(), 1)

    def describe(self) -> dict[str, Any]:
        """The line the command prints once listening."""
        return {
            "event": "fake_nodes_listening",
            "nodes": [{"name": n.name, "url": n.url, "silent": n.silent} for n in self.nodes],
        }


async def _serve(nodes: int, silent: float, seed: int) -> None:
    fleet = FakeFleet(nodes, silent, seed)
    await fleet.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps(fleet.describe()), flush=True)
    await stop.wait()
    await fleet.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._fake_nodes", description=__doc__)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--silent", type=float, default=0.1, help="share that never answers")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.nodes, args.silent, args.seed))


if __name__ == "__main__":
    main()
