"""How many bytes (and roughly tokens) each MCP tool answers on the demo store.

An assistant reads every byte of an answer as tokens, so answer size is a cost like
latency. The store is the demo's: the bundled sample capture replayed, then the real daemon
playing thermal-runaway on four simulated H100s. Each tool is asked what an assistant
typically asks; the figure is the text block's size (the structured copy is the same JSON).
``tests/mcp_server/test_answer_size.py`` runs this and fails when an answer passes its budget.

Run: ``python -m bench.answer_size``
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mcp import Client

from mcp_server.deps import ToolDeps
from mcp_server.server import build_server
from tests.daemons import run_scenario
from watcher.config import SimulationSpec
from watcher.replayer import replay_captures

__all__ = ["ASKS", "Size", "answer_sizes", "build_demo_store", "main"]

BYTES_PER_TOKEN = 3.5  # JSON with many short keys and numbers, for a BPE tokenizer


@dataclass(frozen=True, slots=True)
class Ask:
    """A typical question: the tool, its arguments (some read from the store first)."""

    tool: str
    args: Callable[[Client], Awaitable[dict[str, Any]]]
    budget: int  # bytes an answer may take before the test fails


async def _fixed(args: dict[str, Any]) -> dict[str, Any]:
    return args


def _const(**args: Any) -> Callable[[Client], Awaitable[dict[str, Any]]]:
    return lambda _client: _fixed(args)


async def _the_79(client: Client) -> dict[str, Any]:
    page = await client.call_tool("list_xid_events", {"codes": [79], "limit": 1})
    return {"event_id": page.structured_content["events"][0]["id"]}


ASKS: tuple[Ask, ...] = (
    Ask("list_gpus", _const(), 4_000),
    Ask("get_gpu_snapshot", _const(), 6_000),
    Ask("get_gpu_health", _const(since="7d"), 12_000),
    Ask("get_gpu_health", _const(gpu="2"), 5_000),
    Ask("get_metric_history", _const(metrics=["temperature"], gpu="2", since="2m"), 6_000),
    Ask(
        "get_metric_history", _const(metrics=["temperature", "power"], gpu="2", since="1h"), 25_000
    ),
    Ask("get_metric_trend", _const(metric="temperature", gpu="2", since="1h"), 5_000),
    Ask("list_xid_events", _const(since="400d", limit=20), 20_000),
    Ask("summarize_xid_events", _const(since="400d"), 12_000),
    Ask("explain_xid", _const(code=79), 3_000),
    Ask("correlate_xid", _the_79, 10_000),
    Ask("get_gpu_processes", _const(), 4_000),
)


def build_demo_store(path: Path) -> Path:
    """The demo's store: the sample capture replayed, then thermal-runaway played live."""
    sample = resources.files("watcher.kernel").joinpath("data/sample-kern.log")
    with resources.as_file(sample) as sample_path:
        asyncio.run(replay_captures([sample_path], path, node="gpu-node-17"))
    asyncio.run(run_scenario(path, SimulationSpec(4, scenario="thermal-runaway", speed=100)))
    return path


@dataclass(frozen=True, slots=True)
class Size:
    tool: str
    args: dict[str, Any]
    bytes: int
    budget: int


async def answer_sizes(db: Path) -> list[Size]:
    """Each typical question's answer size, in ASKS order."""
    out = []
    async with Client(build_server(ToolDeps(db_path=db, node="demo-node"))) as client:
        for ask in ASKS:
            args = await ask.args(client)
            result = await client.call_tool(ask.tool, args)
            assert not result.is_error, (ask.tool, result.content)
            text = "".join(getattr(c, "text", "") for c in result.content)
            out.append(Size(ask.tool, args, len(text.encode()), ask.budget))
    return out


def main() -> None:
    """Print the table; exit 1 naming every answer over its budget (the test runs this)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = build_demo_store(Path(tmp) / "xidwatch.db")
        sizes = asyncio.run(answer_sizes(db))
    print("MCP answer sizes on the demo store (bytes of the JSON text; tokens ~ bytes / 3.5)")
    print(f"{'tool':<22} {'arguments':<52} {'bytes':>7} {'~tokens':>8} {'budget':>7}")
    for s in sizes:
        args = ", ".join(f"{k}={v}" for k, v in s.args.items()) or "-"
        tokens = round(s.bytes / BYTES_PER_TOKEN)
        print(f"{s.tool:<22} {args:<52} {s.bytes:>7} {tokens:>8} {s.budget:>7}")
    over = [f"{s.tool} ({s.bytes} > {s.budget} bytes)" for s in sizes if s.bytes > s.budget]
    if over:
        sys.exit(f"over budget: {', '.join(over)}")


if __name__ == "__main__":
    main()
