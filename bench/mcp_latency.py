"""MCP: ``tools/call`` latency over streamable HTTP, against the store queries called directly.

What is measured: the real daemon, ``xidwatch run --no-kmsg --no-nvml --listen 127.0.0.1:0``
(as ``python -m xidwatch``, the console script's entry point) started as a subprocess: its own
interpreter, event loop and core, as in production (the HTTP app, the MCP server, the
writer and retention tasks in one loop), serving a store filled here. One
:class:`mcp.Client` session in this process (streamable HTTP; the server is stateless and
answers in JSON) makes every call. A subprocess rather than ``HttpService`` in this process
so that the client's own cost (HTTP, JSON-RPC, result checks) does not run on the server's
loop and GIL, and so that what is measured is the command an operator runs.

The store, in a temporary directory:

- telemetry at default-retention size for 8 GPUs, filled by :func:`bench.query.fill` (raw
  48 h at 10 s through the real writer, 1 m rollups 30 d, 1 h rollups 400 d; its raw-only
  peer store is made too, and not used) with its "now" set to this run's wall clock: the
  daemon and its tools read the wall clock (``since="30d"``, retention at start);
- ``XID_EVENTS`` rows in ``xid_events``, inserted with ``executemany`` and the writer's
  own SQL: clusters of XIDs (a Pareto number of events, most alone, some storms) at
  uniform times over ``XID_SPAN_DAYS`` days (inside the 400-day event retention), on 8
  GPUs (one of them flakier), 7 codes weighted as fleets see them; a cluster's first
  ``FOLD_AFTER`` events are rows of their own and the rest one burst row with an exact
  count, as the writer's flood folding stores them. Row fields come from the real pipeline
  (:class:`watcher.pipeline.XidPipeline` parsing a kernel line per GPU and code).

Calls, each ``CALLS`` times after ``WARMUP`` untimed ones, p50/p99 ms:

- ``get_gpu_snapshot`` (all GPUs; no NVML, so the stored readings);
- ``get_metric_history`` with one GPU per call (the tool takes one ``gpu``), cycling
  through the 8, ``metrics=["temperature"]``, ``since="30d"``, ``buckets=300``;
- ``list_xid_events`` ``since="400d"``, ``limit=100``: the first page; the second page
  (the first page's ``next_cursor``); a page 500,000 rows deep (a cursor at that row).

Peers, in the same rounds (each MCP call followed by its peers): the store function the
tool calls (:func:`store.inventory.latest_samples`, :func:`store.series.metric_series`,
:func:`store.queries.list_xids`) with the same arguments on one open read-only aiosqlite
connection; and the same on a fresh connection per call, opened and closed the way the
tools do (:meth:`mcp_server.deps.ToolDeps.reader`). The client's own share is timed too:
the SDK client checks every result's ``structuredContent`` against the tool's output schema
(jsonschema) inside ``call_tool``; that check is run again on its own after each call. MCP
minus that check minus the fresh-connection peer is what the server's MCP layer (pydantic
models, JSON), uvicorn and the loopback HTTP add.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import aiosqlite
from mcp import Client
from mcp.types import CallToolResult

from bench import query
from bench._common import listening_port, log_like_production, percentile, stop_process, table
from bench.ingest import gpu_infos
from bench.xid_latency import xid_line
from mcp_server.deps import ToolDeps
from store.db import open_reader
from store.flood import MAX_BURST_SPAN_MS
from store.inventory import latest_samples
from store.queries import XidFilter, encode_cursor, list_xids
from store.records import Checkpoint, SourceCursor, XidEvent
from store.series import metric_series
from store.writer import _INSERT_EVENT, _row
from watcher.clock import now_ms
from watcher.kernel.catalog import default_catalog
from watcher.pipeline import XidPipeline
from watcher.records import LogRecord

__all__ = ["main"]

DAY_MS = 86_400_000
XID_EVENTS = 1_000_000
XID_SPAN_DAYS = 399
FOLD_AFTER = 20  # the writer's default flood burst: rows of their own before folding
CODE_WEIGHTS = {31: 30, 13: 25, 43: 18, 45: 12, 94: 8, 119: 4, 48: 3}
GPU_WEIGHTS = (1, 1, 1, 6, 1, 1, 1, 2)
BOOT_MS = 30 * DAY_MS  # a reboot a month: boot ids for the (boot_id, seq) key
CALLS = 200
WARMUP = 8  # a multiple of the 8 GPUs, so history rounds line up
METRIC = "temperature"
HISTORY_SINCE, HISTORY_DAYS, HISTORY_BUCKETS = "30d", 30, 300
LIST_SINCE, LIST_DAYS, PAGE = "400d", 400, 100
DEEP_ROWS = 500_000


# -- the store ----------------------------------------------------------------------------


@contextlib.contextmanager
def query_now(at_ms: int) -> Iterator[None]:
    """:func:`bench.query.fill` fills up to its ``NOW_MS``; make that ``at_ms`` meanwhile."""
    saved = query.NOW_MS
    query.NOW_MS = at_ms
    try:
        yield
    finally:
        query.NOW_MS = saved


def xid_templates() -> dict[tuple[int, int], tuple[object, ...]]:
    """``_INSERT_EVENT`` values per (GPU index, code), as the pipeline makes them from kmsg."""
    events: list[XidEvent | Checkpoint] = []
    infos = gpu_infos(query.GPUS)
    uuids = {g.pci_bus_id: g.uuid for g in infos}
    pipeline = XidPipeline(events.append, default_catalog(), node="bench", gpu_uuids=uuids)
    out = {}
    for g in infos:
        bus = g.pci_bus_id.split(":")[1].lower()
        for code in CODE_WEIGHTS:
            line = xid_line(bus, code, 40_000 + g.index)
            cursor = SourceCursor(SourceCursor.kmsg_key("b"), 0)
            pipeline.handle(LogRecord(line, "kmsg", received_ms=0, ts_ms=0, cursor=cursor))
            event = events.pop()
            if not isinstance(event, XidEvent):
                raise RuntimeError(f"the pipeline did not parse {line!r}")
            out[g.index, code] = _row(event, burst=False)
    return out


def xid_rows(until_ms: int, n: int, seed: int = 7) -> list[tuple[object, ...]]:
    """``n`` rows of clustered XIDs before ``until_ms`` (see the module docstring), by time."""
    rng = random.Random(seed)
    templates = xid_templates()
    codes, code_w = list(CODE_WEIGHTS), list(CODE_WEIGHTS.values())
    since_ms = until_ms - XID_SPAN_DAYS * DAY_MS
    rows: list[tuple[object, ...]] = []
    seq = 0
    while len(rows) < n:
        gpu = rng.choices(range(query.GPUS), GPU_WEIGHTS)[0]
        base = templates[gpu, rng.choices(codes, code_w)[0]]
        events = min(int(rng.paretovariate(1.1)), 5_000)
        ts = rng.randrange(since_ms, until_ms - 2 * MAX_BURST_SPAN_MS)  # bursts end by now
        for _ in range(min(events, FOLD_AFTER, n - len(rows))):
            seq += 1
            received = ts + rng.randrange(1, 50)
            rows.append(
                (ts, ts, received, 1, 0, *base[5:18], f"boot-{ts // BOOT_MS}", seq, *base[20:])
            )
            ts += int(rng.expovariate(1 / 2_000)) + 1
        if events > FOLD_AFTER and len(rows) < n:
            last = min(ts + (events - FOLD_AFTER) * 1_000, ts + MAX_BURST_SPAN_MS - 1)
            rows.append(
                (ts, last, ts + 10, events - FOLD_AFTER, 1, *base[5:18], None, None, *base[20:])
            )
    rows.sort(key=itemgetter(0))
    return rows


@dataclass(frozen=True, slots=True)
class Store:
    path: Path
    telemetry_rows: dict[str, int]
    xid_rows: int
    xid_events: int  # sum(count): burst rows stand for several
    bursts: int
    fill_s: float
    xid_s: float


def fill(tmp: Path) -> Store:
    at = now_ms() // 60_000 * 60_000
    with query_now(at):
        filled = query.fill(tmp)
    started = time.perf_counter()
    rows = xid_rows(at, XID_EVENTS)
    with contextlib.closing(sqlite3.connect(filled.store, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.executemany(_INSERT_EVENT, rows)
        conn.execute("COMMIT")
        n, events, bursts = conn.execute(
            "SELECT count(*), sum(count), sum(burst) FROM xid_events"
        ).fetchone()
    return Store(
        filled.store,
        filled.rows,
        int(n),
        int(events),
        int(bursts),
        filled.seconds,
        time.perf_counter() - started,
    )


# -- the daemon ---------------------------------------------------------------------------


def daemon_command(db: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "xidwatch", "--log-json", "--log-level", "info", "run"),
        *("--db", str(db), "--no-kmsg", "--no-nvml", "--listen", "127.0.0.1:0"),
    ]


@contextlib.contextmanager
def running_daemon(db: Path, log_path: Path) -> Iterator[int]:
    """``xidwatch run`` on ``db`` in a subprocess; yields its HTTP port, SIGTERM at the end."""
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            daemon_command(db), stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
    try:
        yield listening_port(proc, log_path, what="xidwatch run")
    finally:
        stop_process(proc)


# -- measuring ----------------------------------------------------------------------------

Direct = Callable[[aiosqlite.Connection, int], Awaitable[object]]


@dataclass
class Case:
    """One tool call and the store call it makes; ``i`` is the call's number."""

    name: str
    tool: str
    args: Callable[[int], dict[str, Any]]
    direct: Direct
    answer: str = ""
    result_bytes: int = 0
    text_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Row:
    case: Case
    mcp: list[float]
    validate: list[float]  # the client's output-schema check, inside ``mcp``, timed again
    direct: list[float]
    fresh: list[float]


def history_gpu(i: int) -> int:
    return i % query.GPUS


async def snapshot_direct(conn: aiosqlite.Connection, i: int) -> object:
    return await latest_samples(conn, [])


async def history_direct(conn: aiosqlite.Connection, i: int) -> object:
    now = now_ms()
    return await metric_series(
        conn,
        METRIC,
        since_ms=now - HISTORY_DAYS * DAY_MS,
        until_ms=now,
        buckets=HISTORY_BUCKETS,
        now_ms=now,
        gpus=[str(history_gpu(i))],
    )


def list_direct(cursor: str | None) -> Direct:
    async def run(conn: aiosqlite.Connection, i: int) -> object:
        filters = XidFilter(since_ms=now_ms() - LIST_DAYS * DAY_MS)
        return await list_xids(conn, filters, limit=PAGE, cursor=cursor)

    return run


def list_args(cursor: str | None) -> Callable[[int], dict[str, Any]]:
    def args(i: int) -> dict[str, Any]:
        given: dict[str, Any] = {"since": LIST_SINCE, "limit": PAGE}
        return given | ({"cursor": cursor} if cursor else {})

    return args


def deep_cursor(db: Path) -> str:
    """A cursor just past the ``DEEP_ROWS``-th row, newest first."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        ts, row_id = conn.execute(
            "SELECT ts_ms, id FROM xid_events ORDER BY ts_ms DESC, id DESC LIMIT 1 OFFSET ?",
            (DEEP_ROWS - 1,),
        ).fetchone()
    return encode_cursor(int(ts), int(row_id))


async def call(client: Client, case: Case, i: int) -> CallToolResult:
    result = await client.call_tool(case.tool, case.args(i))
    if result.is_error or result.structured_content is None:
        raise RuntimeError(f"{case.tool} failed: {result.content}")
    return result


def describe(answer: dict[str, Any]) -> str:
    if "gpus" in answer:
        sources = {g["source"] for g in answer["gpus"]}
        return f"{len(answer['gpus'])} GPUs, {'/'.join(sorted(sources))}"
    if "series" in answer:
        s = answer["series"][0]
        return f"1 GPU, tier {s['tier']}, {len(s['buckets'])} buckets"
    more = "next_cursor" if answer["next_cursor"] else "last page"
    return f"{len(answer['events'])} events, {more}"


async def measure_case(client: Client, db: Path, conn: aiosqlite.Connection, case: Case) -> Row:
    deps = ToolDeps(db_path=db)
    row = Row(case, [], [], [], [])
    for i in range(WARMUP + CALLS):
        t0 = time.perf_counter()
        result = await call(client, case, i)
        t1 = time.perf_counter()
        await client.session.validate_tool_result(case.tool, result)
        t2 = time.perf_counter()
        await case.direct(conn, i)
        t3 = time.perf_counter()
        async with deps.reader() as fresh:
            await case.direct(fresh, i)
        t4 = time.perf_counter()
        if i < WARMUP:
            case.answer = describe(result.structured_content or {})
            case.result_bytes = len(result.model_dump_json(by_alias=True, exclude_none=True))
            case.text_bytes = sum(len(c.text.encode()) for c in result.content if c.type == "text")
            continue
        for values, (a, b) in zip(
            (row.mcp, row.validate, row.direct, row.fresh),
            ((t0, t1), (t1, t2), (t2, t3), (t3, t4)),
            strict=True,
        ):
            values.append((b - a) * 1000)
    return row


async def measure(db: Path, port: int) -> list[Row]:
    async with Client(f"http://127.0.0.1:{port}/mcp") as client:
        first = await client.call_tool("list_xid_events", list_args(None)(0))
        second = (first.structured_content or {}).get("next_cursor")
        if not isinstance(second, str):
            raise RuntimeError(f"list_xid_events gave no next_cursor: {first.content}")
        deep = deep_cursor(db)
        cases = [
            Case("get_gpu_snapshot, all GPUs", "get_gpu_snapshot", lambda i: {}, snapshot_direct),
            Case(
                f"get_metric_history, {HISTORY_SINCE}, {HISTORY_BUCKETS} buckets",
                "get_metric_history",
                lambda i: {
                    "gpu": str(history_gpu(i)),
                    "metrics": [METRIC],
                    "since": HISTORY_SINCE,
                    "buckets": HISTORY_BUCKETS,
                },
                history_direct,
            ),
            Case(
                "list_xid_events, first page", "list_xid_events", list_args(None), list_direct(None)
            ),
            Case(
                "  second page (cursor)", "list_xid_events", list_args(second), list_direct(second)
            ),
            Case(
                f"  page {DEEP_ROWS // PAGE + 1:,} ({DEEP_ROWS:,} rows deep)",
                "list_xid_events",
                list_args(deep),
                list_direct(deep),
            ),
        ]
        conn = await open_reader(db)
        try:
            return [await measure_case(client, db, conn, case) for case in cases]
        finally:
            await conn.close()


def ms(values: list[float], q: float = 50) -> str:
    return f"{percentile(values, q):.2f}"


def per_node(values: list[float]) -> list[float]:
    """Sums of consecutive groups of ``GPUS`` calls: one history call per GPU, the whole node."""
    return [sum(values[k : k + query.GPUS]) for k in range(0, len(values), query.GPUS)]


def report(store: Store, rows: list[Row], wall_s: float) -> None:
    t = store.telemetry_rows
    print(
        f"store: {query.GPUS} GPUs; telemetry by bench.query.fill ending now (samples "
        f"{t['samples']:,}, rollup_1m {t['rollup_1m']:,}, rollup_1h {t['rollup_1h']:,} rows; "
        f"{store.fill_s:.0f} s); xid_events {store.xid_rows:,} rows ({store.bursts:,} burst "
        f"rows, {store.xid_events:,} events) over {XID_SPAN_DAYS} d, {len(CODE_WEIGHTS)} codes, "
        f"inserted in {store.xid_s:.1f} s"
    )
    print(
        "server: `xidwatch run --no-kmsg --no-nvml --listen 127.0.0.1:0` (subprocess); "
        f"one mcp.Client session over streamable HTTP; {CALLS} calls per row after {WARMUP} "
        f"warm-up; history: one GPU per call, cycling over the {query.GPUS}, metric "
        f"{METRIC!r}; peers in the same rounds: the store function on one open read-only "
        "aiosqlite connection (direct) and on a fresh one per call as the tools open it (fresh)"
    )
    body = []
    for r in rows:
        added = [m - v - f for m, v, f in zip(r.mcp, r.validate, r.fresh, strict=True)]
        body.append(
            [
                r.case.name,
                r.case.answer,
                f"{r.case.result_bytes / 1024:.1f}",
                f"{r.case.text_bytes / 1024:.1f}",
                ms(r.mcp),
                ms(r.mcp, 99),
                ms(r.validate),
                ms(added),
                ms(r.fresh),
                ms(r.direct),
                ms(r.direct, 99),
                f"{percentile(r.mcp, 50) / percentile(r.direct, 50):.0f}x",
            ]
        )
    headers = [
        "tools/call",
        "answer",
        "KiB",
        "text KiB",
        "MCP p50",
        "MCP p99",
        "client check",
        "server+HTTP",
        "fresh p50",
        "direct p50",
        "direct p99",
        "MCP/direct",
    ]
    print(table(headers, body))
    print(
        "ms; KiB = the CallToolResult as JSON (text content and structuredContent); text KiB "
        "= its text block (the answer as indented JSON), what a model reads; "
        "client check = the SDK client's jsonschema check of structuredContent against the "
        "tool's output schema (inside MCP, timed again on its own); server+HTTP = MCP - "
        "client check - fresh, per call, p50: what the MCP server, pydantic, JSON and HTTP add"
    )
    history = next(r for r in rows if r.case.tool == "get_metric_history")
    node, node_direct = per_node(history.mcp), per_node(history.direct)
    print(
        f"30 d of all {query.GPUS} GPUs = {query.GPUS} history calls in a row: p50 {ms(node)} "
        f"ms, max {max(node):.2f} ms over {len(node)} rounds (direct {ms(node_direct)} ms, max "
        f"{max(node_direct):.2f}), {history.case.result_bytes * query.GPUS / 1024:.0f} KiB; "
        f"measuring took {wall_s:.0f} s"
    )


def main() -> None:
    log_like_production()
    print("mcp latency: tools/call over HTTP to the real daemon, against the store calls direct")
    with tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp:
        store = fill(Path(tmp))
        started = time.perf_counter()
        with running_daemon(store.path, Path(tmp) / "daemon.log") as port:
            rows = asyncio.run(measure(store.path, port))
        report(store, rows, time.perf_counter() - started)


if __name__ == "__main__":
    main()
