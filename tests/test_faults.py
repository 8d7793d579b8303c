"""Faults the daemon survives, each proven on the real daemon (in-process or `xidwatch run`).

Disk full while running, a corrupt store at start, NVML going away mid-run (driver
unloaded, a GPU falling off the bus), and SIGTERM in the middle of an XID flood. Abuse of
the MCP port is in ``test_mcp_abuse.py``; a SIGKILL mid-stream in ``test_exactly_once.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, closing, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import aiosqlite
import pytest
from structlog.testing import capture_logs

from store.db import prepare_store
from store.flood import FloodPolicy
from tests.waiting import wait_until, wait_until_async
from watcher.config import DaemonConfig, SimulationSpec
from watcher.daemon import Daemon

FULL = 1  # PRAGMA max_page_count is raised to at least the current page count: "no more pages"
ROOMY = 1_073_741_823
PAGE = 4096  # SQLite's default page size, which the store keeps


def xid_line(n: int, code: int = 13, pci: str = "0000:3b:00") -> str:
    """A kern.log line whose pid (``n``) tells the lines apart in the store."""
    stamp = f"Nov 24 02:{n // 60 % 60:02d}:{n % 60:02d}"
    return f"{stamp} node kernel: NVRM: Xid (PCI:{pci}): {code}, pid={n}, name=job, event {n}\n"


def append(path: Path, lines: Sequence[str]) -> None:
    with path.open("a") as f:
        f.write("".join(lines))


def stored_pids(db: Path) -> list[int]:
    """The pid of every stored XID, one per row, with folded bursts expanded by count."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT pid, count FROM xid_events ORDER BY pid").fetchall()
    return [pid for pid, count in rows for _ in range(count)]


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    await wait_until_async(condition, timeout_s, message=f"waiting for {what}")


def config_db(tmp_path: Path) -> Path:
    return tmp_path / "xidwatch.db"


def daemon_config(tmp_path: Path, log_file: Path) -> DaemonConfig:
    """Two simulated GPUs sampled every 50 ms, XIDs from a tailed file, folding off."""
    return DaemonConfig(
        db_path=config_db(tmp_path),
        node="fault-node",
        kmsg=False,
        log_files=(log_file,),
        log_files_from_start=True,
        simulate=SimulationSpec(2),
        sample_interval_s=0.05,
        checkpoint_interval_s=0.05,
        flood=FloodPolicy(per_minute=0),
    )


@asynccontextmanager
async def running(config: DaemonConfig) -> AsyncIterator[tuple[Daemon, asyncio.Task[None]]]:
    """The real daemon running in this loop; stopped (and its failure raised) on exit."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([task, ready], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        await task  # it failed to start: raise why
    assert daemon.ready.is_set(), "the daemon did not start in 15 s"
    try:
        yield daemon, task
    finally:
        stop.set()
        await asyncio.wait_for(task, config.shutdown_timeout_s)


async def _set_max_pages(conn: aiosqlite.Connection, pages: int) -> int:
    async with conn.execute(f"PRAGMA max_page_count = {pages}") as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# -- disk full -------------------------------------------------------------------------------


@pytest.mark.slow  # the writer's backoff sets the pace
async def test_a_full_disk_sheds_samples_keeps_every_xid_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "kern.log"
    append(log_file, [xid_line(n) for n in range(50)])
    async with running(daemon_config(tmp_path, log_file)) as (daemon, task):
        writer = daemon.writer
        await until(
            lambda: writer.stats.events_stored == 50 and writer.stats.samples_stored >= 4,
            "the first XIDs and samples",
        )
        assert writer.stats.samples_shed == 0
        await writer.exclusive(lambda conn: _set_max_pages(conn, FULL))
        await until(lambda: writer.failing is not None, "a commit to fail on the full disk")
        append(log_file, [xid_line(n) for n in range(50, 250)])  # arriving while full
        await until(lambda: daemon.pipeline.stats.events == 250, "the XIDs written while full")
        retries = writer.stats.commit_retries
        await until(lambda: writer.stats.commit_retries >= retries + 2, "more retries")

        assert not task.done()
        problem = daemon.readiness()["writer"]
        assert problem is not None and "full" in problem, problem
        assert writer.stats.samples_shed > 0
        assert writer.stats.events_stored == 50  # the rest wait in memory, not dropped

        await writer.exclusive(lambda conn: _set_max_pages(conn, ROOMY))
        await until(lambda: writer.stats.events_stored == 250, "the held XIDs to be stored")
        samples = writer.stats.samples_stored
        await until(lambda: writer.stats.samples_stored >= samples + 4, "samples to resume")
        assert writer.failing is None
        assert all(problem is None for problem in daemon.readiness().values())
    assert stored_pids(config_db(tmp_path)) == list(range(250))


# -- NVML going away mid-run -----------------------------------------------------------------


async def test_an_unloaded_driver_is_counted_and_logged_once_while_xids_keep_being_stored(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "kern.log"
    log_file.touch()
    with capture_logs() as logs:
        async with running(daemon_config(tmp_path, log_file)) as (daemon, task):
            sampler, sim = daemon.sampler, daemon.simulation
            assert sampler is not None and sim is not None
            await until(lambda: sampler.stats.ticks >= 2, "the first ticks")
            sim.fleet.driver_loaded = False  # `rmmod nvidia` under a running daemon
            ticks = sampler.stats.ticks
            await until(lambda: sampler.stats.ticks >= ticks + 5, "ticks without a driver")
            append(log_file, [xid_line(n) for n in range(30)])
            await until(lambda: daemon.writer.stats.events_stored == 30, "XIDs without NVML")

            assert not task.done()
            assert sampler.stats.nvml_errors["0:temperature"] >= 5  # counted every tick
            assert sampler.stats.nvml_errors["1:temperature"] >= 5
            failed = [e for e in logs if e["event"] == "nvml_call_failed"]
            assert failed and len(failed) == len({(e["gpu"], e["call"]) for e in failed})
            assert all("Driver Not Loaded" in e["error"] for e in failed)
            events = daemon.nvml_events
            assert events is not None
            await until(lambda: events.errors >= 2, "the XID event wait to fail (500 ms waits)")

            sim.fleet.driver_loaded = True
            back_ms = daemon.host.now_ms()
            await until(
                lambda: all(
                    s.ts_ms > back_ms and s.temperature_c is not None
                    for s in sampler.latest.values()
                ),
                "real readings from both GPUs once the driver is back",
            )
            assert len(sampler.latest) == 2
    said = [e["event"] for e in logs]
    assert said.count("nvml_call_failed") == len(failed)  # not repeated after the checks
    assert said.count("nvml_event_wait_failed") == 1
    assert stored_pids(config_db(tmp_path)) == list(range(30))


async def test_a_gpu_fallen_off_the_bus_is_marked_lost_while_the_rest_keep_recording(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "kern.log"
    log_file.touch()
    with capture_logs() as logs:
        async with running(daemon_config(tmp_path, log_file)) as (daemon, task):
            sampler, sim = daemon.sampler, daemon.simulation
            assert sampler is not None and sim is not None
            healthy, falling = sim.fleet.gpus
            await until(lambda: sampler.stats.ticks >= 2, "the first ticks")
            falling.fall_off_bus()
            kernel_pci = falling.pci_bus_id[4:].rpartition(".")[0].lower()  # as the driver prints
            append(log_file, [xid_line(1, code=79, pci=kernel_pci)])
            await until(lambda: sampler.lost_uuids == {falling.uuid}, "the GPU to be marked lost")
            lost_at = sampler.latest[healthy.uuid].ts_ms
            await until(
                lambda: sampler.latest[healthy.uuid].ts_ms > lost_at + 200,
                "the healthy GPU to keep being sampled",
            )
            await until(lambda: daemon.writer.stats.events_stored == 1, "the XID 79")
            await until(lambda: daemon.writer.stats.gpu_state_events == 1, "the lost state")
            assert not task.done()
            assert [e["event"] for e in logs].count("gpu_lost") == 1

            falling.recover()
            await until(lambda: sampler.stats.gpus_recovered == 1, "the GPU to be picked up")
            await until(lambda: daemon.writer.stats.gpu_state_events == 2, "the recovered state")
            back = sampler.latest[falling.uuid].ts_ms
            await until(
                lambda: sampler.latest[falling.uuid].ts_ms > back, "samples from the reset GPU"
            )
    db = config_db(tmp_path)
    with closing(sqlite3.connect(db)) as conn:
        states = conn.execute(
            "SELECT g.uuid, e.state FROM gpu_events e JOIN gpus g ON g.id = e.gpu ORDER BY e.id"
        ).fetchall()
        xids = conn.execute("SELECT xid, gpu_uuid FROM xid_events").fetchall()
        lost_since = conn.execute("SELECT lost_since_ms FROM gpus WHERE uuid = ?", (falling.uuid,))
        assert lost_since.fetchone() == (None,)
    assert states == [(falling.uuid, "lost"), (falling.uuid, "recovered")]
    assert xids == [(79, falling.uuid)]


async def test_an_unloaded_driver_records_no_made_up_readings(tmp_path: Path) -> None:
    log_file = tmp_path / "kern.log"
    log_file.touch()
    async with running(daemon_config(tmp_path, log_file)) as (daemon, _):
        sampler, sim = daemon.sampler, daemon.simulation
        assert sampler is not None and sim is not None
        await until(lambda: sampler.stats.ticks >= 2, "the first ticks")
        sim.fleet.driver_loaded = False
        ticks = sampler.stats.ticks
        await until(lambda: sampler.stats.ticks >= ticks + 3, "ticks without a driver")
        sim.fleet.driver_loaded = True
    with closing(sqlite3.connect(config_db(tmp_path))) as conn:
        during = conn.execute(
            "SELECT nvlink_active, nvlink_errors FROM samples WHERE temp_c IS NULL"
        ).fetchall()
    assert during and set(during) == {(None, None)}


# -- `xidwatch run` as a subprocess ----------------------------------------------------------


class DaemonProcess:
    """``xidwatch run`` on a tailed file, no NVML, no HTTP; its JSON logs go to ``logs``."""

    def __init__(self, db: Path, log_file: Path, args: Sequence[str], logs: IO[bytes]) -> None:
        self.db = db
        self._logs = logs
        argv = [sys.executable, "-m", "xidwatch", "--log-json", "run", "--db", str(db)]
        argv += ["--no-kmsg", "--no-nvml", "--no-http", "--log-file", str(log_file)]
        argv += ["--log-file-from-start", *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=logs)

    def logs(self) -> list[dict[str, Any]]:
        # pread, not seek + read: the daemon writes through the same open file, so moving
        # its offset would put the daemon's next bytes over the start of the log.
        fd = self._logs.fileno()
        lines = os.pread(fd, os.fstat(fd).st_size, 0).splitlines()
        return [json.loads(line) for line in lines if line.startswith(b"{")]

    def wait_for_log(self, event: str, timeout_s: float = 30) -> dict[str, Any]:
        def logged() -> dict[str, Any] | None:
            found = [e for e in self.logs() if e.get("event") == event]
            assert found or self.proc.poll() is None, self.logs()
            return found[0] if found else None

        return wait_until(logged, timeout_s, message=lambda: f"no {event} log line: {self.logs()}")

    def terminate(self, timeout_s: float) -> tuple[int, float]:
        """SIGTERM; the exit status and how long the daemon took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout_s)
        return rc, time.monotonic() - started


@contextmanager
def daemon_process(db: Path, log_file: Path, *args: str) -> Iterator[DaemonProcess]:
    # Logs go to a file: an unread pipe would fill up and block the daemon.
    with tempfile.TemporaryFile() as logs:
        daemon = DaemonProcess(db, log_file, args, logs)
        try:
            yield daemon
        finally:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
            daemon.proc.wait(10)


def _stored_count(db: Path) -> int:
    try:
        return len(stored_pids(db))
    except sqlite3.DatabaseError:
        return 0  # not created, migrated or moved aside yet


def wait_for_count(db: Path, count: int, timeout_s: float = 30) -> None:
    wait_until(
        lambda: _stored_count(db) >= count, timeout_s, message=f"waiting for {count} stored XIDs"
    )


# -- corrupt store at start ------------------------------------------------------------------


def _garbage(db: Path) -> bytes:
    db.write_bytes(b"this is not a database\n" * 4096)
    return db.read_bytes()


def _torn_pages(db: Path) -> bytes:
    """A real store whose b-tree pages were overwritten (a torn write, a bad sector)."""
    prepare_store(db)
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        rows = [(f"file:/var/log/kern.log:{i}", i, 1) for i in range(3000)]
        conn.executemany("INSERT INTO watermarks VALUES (?, ?, ?)", rows)
    assert not Path(f"{db}-wal").exists()  # all in the main file, which is then damaged
    with db.open("r+b") as f:
        f.seek(3 * 4096)
        f.write(bytes(range(256)) * 64)
    return db.read_bytes()


@pytest.mark.slow
def test_a_corrupt_store_is_moved_aside_loudly_and_the_daemon_records_into_a_fresh_one(
    tmp_path: Path,
) -> None:
    db, log_file = tmp_path / "xidwatch.db", tmp_path / "kern.log"
    damaged = _torn_pages(db)
    append(log_file, [xid_line(n) for n in range(20)])
    with daemon_process(db, log_file) as daemon:
        daemon.wait_for_log("daemon_started")  # only then is the store the fresh one
        wait_for_count(db, 20)
        rc, _ = daemon.terminate(30)
        assert rc == 0, daemon.logs()
        errors = [e for e in daemon.logs() if e["level"] in ("error", "critical")]
    assert [e["event"] for e in errors] == ["store_corrupt_moved_aside"]
    aside = Path(errors[0]["moved_to"])
    assert aside.parent == tmp_path and aside.name.startswith("xidwatch.db.corrupt-")
    kept = aside.read_bytes()  # kept for a post-mortem: every page as found
    assert len(kept) == len(damaged) and kept[PAGE:] == damaged[PAGE:]
    assert errors[0]["error"]
    assert stored_pids(db) == list(range(20))


def _cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "xidwatch", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.mark.slow
def test_a_file_that_is_not_a_store_is_refused_by_run_and_replay_and_left_as_it_is(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "kern.log"
    append(log_file, [xid_line(n) for n in range(3)])
    for name, make in (("xidwatch.yaml", _yaml_config), ("garbage.db", _garbage)):
        target = tmp_path / name
        before = make(target)
        replayed = _cli("replay", str(log_file), "--db", str(target))
        with daemon_process(target, log_file) as daemon:
            rc = daemon.proc.wait(30)
            said = [e["event"] for e in daemon.logs()]
        assert replayed.returncode != 0 and rc != 0, (replayed, said)
        assert "not a SQLite database" in replayed.stderr
        assert len(replayed.stderr.strip().splitlines()) == 1, replayed.stderr
        assert "store_corrupt_moved_aside" not in said
        assert target.read_bytes() == before
    assert _asides(tmp_path) == []


def _yaml_config(path: Path) -> bytes:
    path.write_text("db: /var/lib/xidwatch/xidwatch.db\nsample_interval_s: 5\n")
    return path.read_bytes()


@pytest.mark.slow
def test_a_second_daemon_on_a_store_refuses_at_once_and_nothing_is_counted_twice(
    tmp_path: Path,
) -> None:
    """Two `xidwatch run` on one store (by mistake, or a DaemonSet rollout's overlap)."""
    db, log_file = tmp_path / "xidwatch.db", tmp_path / "kern.log"
    append(log_file, [xid_line(n) for n in range(100)])
    with daemon_process(db, log_file, "--flood-per-minute", "0") as first:
        first.wait_for_log("daemon_started")
        wait_for_count(db, 100)
        started = time.monotonic()
        second = _cli(
            "run", "--db", str(db), "--no-kmsg", "--no-nvml", "--no-http",
            "--log-file", str(log_file), "--log-file-from-start",
        )  # fmt: skip
        took_s = time.monotonic() - started
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.proc.pid}" in lines[0], second.stderr
        assert took_s < 20  # at once: no waiting on the holder
        listed = _cli("xids", "--db", str(db), "--json")  # readers work beside the writer
        assert listed.returncode == 0, listed.stderr
        append(log_file, [xid_line(n) for n in range(100, 300)])
        wait_for_count(db, 300)
        assert first.terminate(30)[0] == 0, first.logs()
    assert stored_pids(db) == list(range(300))


def test_a_corrupt_store_is_moved_aside_byte_for_byte_as_found(tmp_path: Path) -> None:
    db = tmp_path / "xidwatch.db"
    damaged = _torn_pages(db)
    with capture_logs():
        prepare_store(db, now_s=1234)
    assert db.with_name("xidwatch.db.corrupt-1234").read_bytes() == damaged


def _store_with_history(db: Path) -> None:
    """A healthy store holding a row the daemon never writes: proof it is the same file."""
    prepare_store(db)
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("INSERT INTO watermarks VALUES ('history:last-month', 42, 1)")


def _history(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        query = "SELECT position FROM watermarks WHERE source_key = 'history:last-month'"
        return conn.execute(query).fetchall()


def _asides(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.corrupt-*"))


@pytest.mark.slow
def test_a_store_locked_by_another_process_at_start_is_never_moved_aside(
    tmp_path: Path,
) -> None:
    db, log_file = tmp_path / "xidwatch.db", tmp_path / "kern.log"
    _store_with_history(db)
    append(log_file, [xid_line(n) for n in range(5)])
    with daemon_process(db, log_file) as daemon:
        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")  # a sqlite3 shell, a backup, the old pod's writer
            # Longer than the 5 s busy_timeout; it may wait, or refuse to start: either is fine.
            with suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(7)
            said = [e["event"] for e in daemon.logs()]
            assert "store_corrupt_moved_aside" not in said
            assert _asides(tmp_path) == []
        _run_until_stored(daemon, db, log_file, 5)
    assert _history(db) == [(42,)]


def _run_until_stored(daemon: DaemonProcess, db: Path, log_file: Path, count: int) -> None:
    """The daemon (or, if it refused to start, a new one) stores ``count`` XIDs; exit 0."""
    # It may still be giving up on the lock (its busy timeout outlived the holder): wait for
    # either outcome, not for a count a daemon on its way out will never store.
    wait_until(lambda: _stored_count(db) >= count or daemon.proc.poll() is not None)
    if daemon.proc.poll() is None:
        assert daemon.terminate(30)[0] == 0, daemon.logs()
        return
    with daemon_process(db, log_file) as again:
        wait_for_count(db, count)
        assert again.terminate(30)[0] == 0, again.logs()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real ENOSPC, not a per-connection page limit."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"needs root and mount for a tiny tmpfs: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: the disk is full
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_a_full_disk_at_start_never_moves_the_store_aside(tmp_path: Path, tiny_disk: Path) -> None:
    db, log_file = tiny_disk / "xidwatch.db", tmp_path / "kern.log"
    _store_with_history(db)
    append(log_file, [xid_line(n) for n in range(5)])
    filler = _fill(tiny_disk)
    with daemon_process(db, log_file) as daemon:
        with suppress(subprocess.TimeoutExpired):
            daemon.proc.wait(2)  # it may wait for space, or refuse to start: either is fine
        said = [e["event"] for e in daemon.logs()]
        assert "store_corrupt_moved_aside" not in said
        assert _asides(tiny_disk) == []
        filler.unlink()  # space returns
        _run_until_stored(daemon, db, log_file, 5)
    assert _history(db) == [(42,)]
    assert stored_pids(db) == list(range(5))


# -- SIGTERM during a flood ------------------------------------------------------------------

FLOOD_LINES = 30_000


@pytest.mark.slow
def test_sigterm_during_a_flood_drains_every_line_already_written_and_exits_zero(
    tmp_path: Path,
) -> None:
    db, log_file = tmp_path / "xidwatch.db", tmp_path / "kern.log"
    log_file.touch()
    bound_s = DaemonConfig(db_path=db).shutdown_timeout_s
    with daemon_process(db, log_file, "--flood-per-minute", "0") as daemon:
        daemon.wait_for_log("logfile_following")
        for start in range(0, FLOOD_LINES, 1000):  # a storm, written as fast as it goes
            append(log_file, [xid_line(n) for n in range(start, start + 1000)])
        wait_for_count(db, 1)
        behind = FLOOD_LINES - len(stored_pids(db))
        rc, took_s = daemon.terminate(bound_s)
        logs = daemon.logs()
    print(f"SIGTERM with {behind} of {FLOOD_LINES} lines not yet stored; exited in {took_s:.2f} s")
    assert rc == 0, logs
    assert took_s < bound_s
    assert [e["event"] for e in logs if e["level"] in ("error", "critical")] == []
    assert stored_pids(db) == list(range(FLOOD_LINES))


@pytest.mark.slow
def test_sigterm_stores_the_lines_written_just_before_it(tmp_path: Path) -> None:
    db, log_file = tmp_path / "xidwatch.db", tmp_path / "kern.log"
    log_file.touch()
    with daemon_process(db, log_file, "--flood-per-minute", "0") as daemon:
        daemon.wait_for_log("logfile_following")
        append(log_file, [xid_line(n) for n in range(1000)])
        wait_for_count(db, 1000)
        append(log_file, [xid_line(n) for n in range(1000, 2000)])  # then SIGTERM at once
        rc, _ = daemon.terminate(DaemonConfig(db_path=db).shutdown_timeout_s)
    assert rc == 0
    assert stored_pids(db) == list(range(2000))
