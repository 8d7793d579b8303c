"""Gateway: one node call's CPU, the gateway's own HTTP client against httpx2, side by side.

A fleet question is one ``tools/call`` POST per node, so the gateway's CPU per node answer
is what bounds the fleet one gateway core can serve (``bench.gateway_fanout``). This
measures that call alone, in this process, against :mod:`bench._fake_nodes` (one process
of its own serving ``--nodes`` MCP endpoints on loopback, every one answering
``summarize_xid_events`` with a real summary, 685 B):

- :class:`mcp_server.gateway.client.NodeClient` over
  :class:`~mcp_server.gateway.connections.ConnectionPool`, the gateway's client;
- the peer: ``httpx2.AsyncClient.post`` with a pool of ``CONCURRENCY`` connections, the
  MCP SDK's client and the gateway's own until it was replaced, sending the same bytes and
  reading the same JSON-RPC answer (``json.loads``, the structured content taken out).

Each is asked two ways, ``CONCURRENCY`` calls at a time as the fan-out makes them:

- *every node once*: each call to another node, so each opens a connection (what a fleet
  question does with pod IPs: every node is its own origin);
- *the same nodes again*: ``CONCURRENCY`` nodes asked over and over, so connections are
  kept (what the pod proxy gives: one origin, the API server).

The figure is this process's CPU time (``time.process_time``: user + system) per call,
the median of ``--repeats`` passes [min .. max]; the fake nodes' CPU is their own process's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx2

from bench._common import Spread, table
from bench.gateway_fanout import fake_nodes
from mcp_server.gateway.client import NodeClient
from mcp_server.gateway.connections import ConnectionPool
from mcp_server.gateway.fanout import CallPolicy

__all__ = ["main"]

NODES, REPEATS, CALLS_KEPT = 1_000, 5, 2_000
QUICK_NODES, QUICK_REPEATS, QUICK_CALLS_KEPT = 40, 2, 80
CONCURRENCY = CallPolicy().concurrency
TOOL, ARGS = "summarize_xid_events", {"since": "24h"}
TIMEOUT_S = 10.0

Call = Callable[[str], Awaitable[dict[str, Any]]]


async def _pass(call: Call, urls: Sequence[str]) -> float:
    """CPU seconds per call for calling every URL in ``urls``, ``CONCURRENCY`` at a time."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(url: str) -> None:
        async with limit:
            answer = await call(url)
        assert "rows" in answer, answer

    start = time.process_time()
    await asyncio.gather(*(one(url) for url in urls))
    return (time.process_time() - start) / len(urls)


async def _ours(plan: Sequence[Sequence[str]]) -> list[float]:
    pool = ConnectionPool()
    client = NodeClient(pool)
    try:

        async def call(url: str) -> dict[str, Any]:
            return await client.call_tool(url, TOOL, ARGS, timeout_s=TIMEOUT_S)

        return [await _pass(call, urls) for urls in plan]
    finally:
        await pool.aclose()


async def _httpx2(plan: Sequence[Sequence[str]]) -> list[float]:
    limits = httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    ids = iter(range(1, 10**9))
    async with httpx2.AsyncClient(limits=limits, follow_redirects=False) as http:

        async def call(url: str) -> dict[str, Any]:
            request = {"jsonrpc": "2.0", "id": next(ids), "method": "tools/call"}
            request["params"] = {"name": TOOL, "arguments": ARGS}
            response = await http.post(
                url, content=json.dumps(request).encode(), headers=headers, timeout=TIMEOUT_S
            )
            response.raise_for_status()
            structured: dict[str, Any] = json.loads(response.content)["result"]["structuredContent"]
            return structured

        return [await _pass(call, urls) for urls in plan]


def _plans(urls: Sequence[str], args: argparse.Namespace) -> dict[str, list[list[str]]]:
    kept = list(urls[:CONCURRENCY])
    again = [kept[i % len(kept)] for i in range(args.calls_kept)]
    return {
        "every node once (a new connection each call)": [list(urls)] * args.repeats,
        f"the same {len(kept)} nodes again (kept connections)": [again] * args.repeats,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.node_call", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 nodes, 2 passes")
    parser.add_argument("--nodes", type=int, default=None, help=f"fake nodes (default {NODES})")
    parser.add_argument("--repeats", type=int, default=None, help=f"passes (default {REPEATS})")
    args = parser.parse_args(argv)
    args.nodes = args.nodes or (QUICK_NODES if args.quick else NODES)
    args.repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    args.calls_kept = QUICK_CALLS_KEPT if args.quick else CALLS_KEPT
    if args.nodes < 1 or args.repeats < 1:
        parser.error("--nodes and --repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    print(
        f"node call: {TOOL} over {args.nodes} fake nodes, {CONCURRENCY} at a time, "
        f"{args.repeats} passes each; CPU ms per call in this process"
    )
    rows = []
    with fake_nodes(args.nodes, 0.0) as nodes:
        urls = [n.url for n in nodes]
        for label, plan in _plans(urls, args).items():
            # interleaved, so a noisy moment on the machine falls on both clients alike
            ours, peer = [], []
            for urls_once in plan:
                ours += asyncio.run(_ours([urls_once]))
                peer += asyncio.run(_httpx2([urls_once]))
            mine = Spread.of([s * 1000 for s in ours])
            theirs = Spread.of([s * 1000 for s in peer])
            rows.append(
                [
                    label,
                    f"{len(plan[0]):,}",
                    mine.show("{:.3f}"),
                    theirs.show("{:.3f}"),
                    f"{theirs.median / mine.median:.1f}x",
                ]
            )
    headers = ["calls", "per pass", "xidwatch NodeClient", "httpx2 (peer)", "peer / ours"]
    print(table(headers, rows))
    print(
        "ms = CPU milliseconds per call in this process, median [min .. max] of the passes "
        f"(each client's passes interleaved); measuring took {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
