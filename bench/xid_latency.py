"""XID latency: from a record written to the kmsg device to its row committed in SQLite.

What is measured: the real :class:`watcher.daemon.Daemon` (kmsg source -> pipeline ->
batched :class:`store.writer.StoreWriter`, production defaults: batches of up to 1000
items closed 20 ms after their first, WAL, ``synchronous=NORMAL``) reading an in-memory
:class:`watcher.sim.kmsgdev.MemoryKmsgDevice`. A producer task in the same event loop writes
XID lines and notes ``time.perf_counter()`` per kmsg sequence number; the writer's
``on_commit`` callback notes when each event's transaction committed. Logging is configured
as in production (info, JSON) and rendered into /dev/null.

- steady: ``STEADY_RATE`` XIDs/s for ``STEADY_SECONDS`` s over 8 GPUs and 7 codes ->
  p50/p99/max of write->commit. Peer, in alternating rounds: the same kmsg source and
  pipeline feeding a naive writer that commits every event in its own transaction
  (sqlite3, WAL, ``synchronous=NORMAL``, same schema and indexes), on the loop thread.
- storm: ``STORM_EVENTS`` XIDs written as fast as possible (the producer yields every
  ``STORM_YIELD_EVERY``) -> drain time (first write to last commit), events/s, and lost =
  written minus ``SELECT sum(count) FROM xid_events`` read from the database after the
  daemon stopped (a folded burst row carries an exact count). Once as an identical flood
  (one GPU, one code, default flood folding) and once spread over 8 GPUs x 5 codes with
  folding off (``FloodPolicy(per_minute=0)``).

Each figure is the median over rounds with min and max; the latency percentiles are taken
within a round, then summarised across rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import Spread, fmt_int, log_like_production, percentile, table
from store.db import prepare_store
from store.flood import FloodPolicy
from store.records import Checkpoint, XidEvent
from store.writer import _INSERT_EVENT, StoreWriter, _row
from watcher.clock import now_ms
from watcher.config import DaemonConfig
from watcher.daemon import Daemon, HostFacts
from watcher.kernel.catalog import default_catalog
from watcher.kernel.kmsg import KmsgSource
from watcher.pipeline import XidPipeline
from watcher.sim.kmsgdev import MemoryKmsgDevice

STEADY_RATE = 200
STEADY_SECONDS = 5.0
STEADY_ROUNDS = 3
STORM_EVENTS = 50_000
STORM_ROUNDS = 3
STORM_YIELD_EVERY = 500
DEVICE_CAPACITY = 60_000
SETTLE_S = 0.2
DRAIN_TIMEOUT_S = 60.0

BUSES = ("07", "0f", "47", "4e", "87", "90", "b7", "bd")
MESSAGES = {
    13: "Graphics SM Warp Exception on (GPC 1, TPC 2, SM 0): Out Of Range Address",
    31: "Ch 00000010, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ "
    "0x7f3a_2c000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ",
    43: "Ch 00000008",
    45: "Ch 00000008, Preemptive Channel Removal",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer",
    94: "Contained: SM (0x1). RST: No, D-RST: No",
    119: "Timeout after 6s of waiting for RPC response from GPU1 GSP! Expected function 76",
}
STEADY_CODES = (13, 31, 43, 45, 48, 94, 119)
SPREAD_CODES = (13, 31, 43, 48, 94)


def xid_line(bus: str, code: int, pid: int) -> str:
    return f"NVRM: Xid (PCI:0000:{bus}:00): {code}, pid={pid}, name=python3, {MESSAGES[code]}"


@dataclass
class Probe:
    """Write and commit times per kmsg sequence number; ``done`` once all ``expected`` commit."""

    expected: int
    origin: float = field(default_factory=time.perf_counter)
    written: dict[int, float] = field(default_factory=dict)
    committed: dict[int, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, device: MemoryKmsgDevice, text: str) -> None:
        at = time.perf_counter()
        self.written[device.write(text, ts_usec=int((at - self.origin) * 1e6))] = at

    def on_commit(self, events: Sequence[XidEvent]) -> None:
        at = time.perf_counter()
        for event in events:
            _, seq = event.kernel_record
            if seq is not None:
                self.committed.setdefault(seq, at)
        if len(self.committed) >= self.expected:
            self.done.set()

    def latencies_ms(self) -> list[float]:
        return [(at - self.written[seq]) * 1000 for seq, at in self.committed.items()]

    def drain_s(self) -> float:
        """First write to last commit."""
        return max(self.committed.values()) - min(self.written.values())

    def writing_s(self) -> float:
        """First write to last write: the producer shares the daemon's thread."""
        return max(self.written.values()) - min(self.written.values())


Producer = Callable[[MemoryKmsgDevice, Probe], Awaitable[None]]


async def steady(device: MemoryKmsgDevice, probe: Probe) -> None:
    """``STEADY_RATE`` XIDs/s on a fixed schedule, round-robin over GPUs and codes."""
    started = time.perf_counter()
    for i in range(probe.expected):
        delay = started + i / STEADY_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        code = STEADY_CODES[(i // len(BUSES)) % len(STEADY_CODES)]
        probe.write(device, xid_line(BUSES[i % len(BUSES)], code, 30_000 + i % 97))


async def identical_storm(device: MemoryKmsgDevice, probe: Probe) -> None:
    """The same line (one GPU, one code) as fast as the producer can write it."""
    line = xid_line(BUSES[0], 31, 31_000)
    for i in range(probe.expected):
        probe.write(device, line)
        if i % STORM_YIELD_EVERY == STORM_YIELD_EVERY - 1:
            await asyncio.sleep(0)


async def spread_storm(device: MemoryKmsgDevice, probe: Probe) -> None:
    """8 GPUs x 5 codes, round-robin, as fast as the producer can write."""
    lines = [xid_line(bus, code, 31_000) for code in SPREAD_CODES for bus in BUSES]
    for i in range(probe.expected):
        probe.write(device, lines[i % len(lines)])
        if i % STORM_YIELD_EVERY == STORM_YIELD_EVERY - 1:
            await asyncio.sleep(0)


async def produce_and_wait(device: MemoryKmsgDevice, probe: Probe, produce: Producer) -> None:
    await asyncio.sleep(SETTLE_S)  # let the source open the device and go idle
    await produce(device, probe)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(probe.done.wait(), DRAIN_TIMEOUT_S)


async def run_daemon(db: Path, flood: FloodPolicy, produce: Producer, expected: int) -> Probe:
    """The real daemon on a fresh store, fed by ``produce``; stopped once all committed."""
    device = MemoryKmsgDevice(DEVICE_CAPACITY)
    probe = Probe(expected)
    host = HostFacts(boot_id="bench", boot_wall_ms=lambda: 0, open_kmsg=device.reopen)
    daemon = Daemon(DaemonConfig(db_path=db, node="bench", flood=flood), host=host)
    daemon.writer._on_commit = probe.on_commit
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await daemon.ready.wait()
        await produce_and_wait(device, probe, produce)
    finally:
        stop.set()
        await task
        device.dispose()
    return probe


class NaiveWriter:
    """The peer: one transaction per event, committed synchronously on the loop thread."""

    def __init__(self, db: Path, probe: Probe) -> None:
        prepare_store(db)  # the same schema and indexes as xidwatch's store
        self._conn = sqlite3.connect(db, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._probe = probe

    def put(self, item: XidEvent | Checkpoint) -> None:
        if isinstance(item, XidEvent):
            self._conn.execute("BEGIN")
            self._conn.execute(_INSERT_EVENT, _row(item, burst=False))
            self._conn.execute("COMMIT")
            self._probe.on_commit([item])

    def close(self) -> None:
        self._conn.close()


async def run_naive(db: Path, produce: Producer, expected: int) -> Probe:
    """The same kmsg source and pipeline, feeding :class:`NaiveWriter`."""
    device = MemoryKmsgDevice(DEVICE_CAPACITY)
    probe = Probe(expected)
    writer = NaiveWriter(db, probe)
    pipeline = XidPipeline(writer.put, default_catalog(), node="bench")
    source = KmsgSource(device.reopen, boot_id="bench", boot_wall_ms=lambda: 0, now_ms=now_ms)
    task = asyncio.create_task(source.run(pipeline.handle))
    try:
        await produce_and_wait(device, probe, produce)
    finally:
        source.stop()
        await task
        writer.close()
        device.dispose()
    return probe


def stored_count(db: Path) -> tuple[int, int]:
    """``sum(count)`` and the number of rows in ``xid_events``."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        query = "SELECT coalesce(sum(count), 0), count(*) FROM xid_events"
        total, rows = conn.execute(query).fetchone()
        return int(total), int(rows)


@dataclass
class LatencyRounds:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    worst: list[float] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)

    def add(self, probe: Probe) -> None:
        latencies = probe.latencies_ms()
        self.p50.append(percentile(latencies, 50))
        self.p99.append(percentile(latencies, 99))
        self.worst.append(max(latencies, default=float("nan")))
        self.committed.append(len(latencies))


@dataclass
class StormRounds:
    drain_s: list[float] = field(default_factory=list)
    writing_s: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def add(self, probe: Probe, db: Path) -> None:
        total, rows = stored_count(db)
        drain = probe.drain_s()
        self.drain_s.append(drain)
        self.writing_s.append(probe.writing_s())
        self.rate.append(STORM_EVENTS / drain)
        self.p99_ms.append(percentile(probe.latencies_ms(), 99))
        self.lost.append(STORM_EVENTS - total)
        self.rows.append(rows)


async def measure_steady(tmp: Path) -> tuple[LatencyRounds, LatencyRounds]:
    """Alternating rounds of the daemon and the naive writer at the same steady rate."""
    ours, naive = LatencyRounds(), LatencyRounds()
    events = int(STEADY_RATE * STEADY_SECONDS)
    for r in range(STEADY_ROUNDS):
        ours.add(await run_daemon(tmp / f"steady-{r}.db", FloodPolicy(), steady, events))
        naive.add(await run_naive(tmp / f"naive-{r}.db", steady, events))
    return ours, naive


async def measure_storms(tmp: Path) -> dict[str, StormRounds]:
    kinds: dict[str, tuple[FloodPolicy, Producer]] = {
        "identical: 1 GPU x 1 code, folding on": (
            FloodPolicy(),
            identical_storm,
        ),
        "spread: 8 GPUs x 5 codes, folding off": (
            FloodPolicy(per_minute=0),
            spread_storm,
        ),
    }
    results = {name: StormRounds() for name in kinds}
    for r in range(STORM_ROUNDS):
        for i, (name, (flood, produce)) in enumerate(kinds.items()):
            db = tmp / f"storm-{r}-{i}.db"
            results[name].add(await run_daemon(db, flood, produce, STORM_EVENTS), db)
    return results


def two_dp(values: Sequence[float]) -> str:
    """``median [min .. max]`` with two decimals (ms or s)."""
    return Spread.of(values).show("{:.2f}")


def writer_defaults() -> str:
    params = inspect.signature(StoreWriter).parameters
    return ", ".join(f"{k}={params[k].default}" for k in ("batch_max", "flush_interval_s"))


def report_steady(ours: LatencyRounds, naive: LatencyRounds) -> None:
    events = int(STEADY_RATE * STEADY_SECONDS)
    print(
        f"steady: {STEADY_RATE} XIDs/s for {STEADY_SECONDS:g} s ({events:,} events) over "
        f"{len(BUSES)} GPUs x {len(STEADY_CODES)} codes, {STEADY_ROUNDS} alternating rounds; "
        "write -> commit ms, median [min .. max] across rounds"
    )
    rows = [
        [name, two_dp(r.p50), two_dp(r.p99), two_dp(r.worst), f"{min(r.committed):,}"]
        for name, r in (
            ("xidwatch Daemon (batched StoreWriter)", ours),
            ("naive: 1 transaction/event (WAL, sync=NORMAL)", naive),
        )
    ]
    print(table(["writer", "p50 ms", "p99 ms", "max ms", "committed (min)"], rows))


def report_storms(results: dict[str, StormRounds]) -> None:
    print(
        f"\nstorm: {STORM_EVENTS:,} XIDs written as fast as possible into the daemon, "
        f"{STORM_ROUNDS} rounds, median [min .. max]; lost = {STORM_EVENTS:,} - "
        "SELECT sum(count) FROM xid_events"
    )
    rows = []
    for name, r in results.items():
        rate = Spread.of(r.rate)
        rows.append(
            [
                name,
                two_dp(r.drain_s),
                f"{fmt_int(rate.median)} [{fmt_int(rate.low)} .. {fmt_int(rate.high)}]",
                two_dp(r.writing_s),
                two_dp(r.p99_ms),
                f"{max(r.lost):,}",
                f"{min(r.rows):,}" if min(r.rows) == max(r.rows) else f"{min(r.rows):,}..",
            ]
        )
    headers = ["storm", "drain s", "events/s", "writing s", "p99 ms", "lost (max)", "rows"]
    print(table(headers, rows))
    print(
        "drain = first write to last commit; writing = first to last write (the producer "
        "runs in the daemon's event loop, so its own cost is inside drain); rows = rows in "
        "xid_events (a folded burst is one row with its count)"
    )


async def measure_all() -> tuple[LatencyRounds, LatencyRounds, dict[str, StormRounds]]:
    with tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp:
        ours, naive = await measure_steady(Path(tmp))
        storms = await measure_storms(Path(tmp))
    return ours, naive, storms


def main() -> None:
    log_like_production()
    print(
        "xid latency: kmsg write -> SQLite commit through the real daemon "
        f"(StoreWriter {writer_defaults()}; WAL, synchronous=NORMAL)"
    )
    ours, naive, storms = asyncio.run(measure_all())
    report_steady(ours, naive)
    report_storms(storms)


if __name__ == "__main__":
    main()
