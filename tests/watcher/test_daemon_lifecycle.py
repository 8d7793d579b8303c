"""The daemon runs whole or not at all: start-up failures end it, shutdown says what it lost."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import aiosqlite
import pytest
from structlog.testing import capture_logs

from mcp_server.http_settings import HttpSettings
from store.errors import XidwatchError
from store.flood import FloodPolicy
from tests.waiting import wait_until_async
from watcher.config import DaemonConfig, KubernetesConfig
from watcher.daemon import Daemon
from watcher.errors import SourceError
from xidwatch.serving import http_service

FULL = 1  # PRAGMA max_page_count is raised to at least the current page count: "no more pages"


def _line(n: int) -> str:
    return f"Nov 24 02:14:{n % 60:02d} node kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid={n}, x\n"


def _config(tmp_path: Path, *log_files: Path, **kw: object) -> DaemonConfig:
    return DaemonConfig(
        db_path=tmp_path / "xidwatch.db",
        node="test-node",
        kmsg=False,
        nvml=False,
        kubernetes=KubernetesConfig(enabled=False),
        log_files=log_files,
        log_files_from_start=True,
        checkpoint_interval_s=0.05,
        flood=FloodPolicy(per_minute=0),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (here: a listening socket) already holds."""
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


async def test_a_port_that_cannot_be_bound_ends_start_up_before_anything_is_read(
    tmp_path: Path, taken_port: int
) -> None:
    log = tmp_path / "kern.log"
    log.write_text(_line(1))
    daemon = Daemon(_config(tmp_path, log))
    service = http_service(daemon, HttpSettings("127.0.0.1", taken_port))
    async with asyncio.timeout(30):  # before: ran on for good, without /metrics or probes
        with pytest.raises(XidwatchError, match=rf"cannot serve HTTP on 127\.0\.0\.1:{taken_port}"):
            await daemon.run(asyncio.Event(), services=[service])
    assert daemon.sources == [] and not daemon.ready.is_set()
    assert daemon.writer.stats.events_stored == 0


async def test_an_address_not_on_this_host_ends_start_up(tmp_path: Path) -> None:
    daemon = Daemon(_config(tmp_path))
    service = http_service(daemon, HttpSettings("192.0.2.1", 0))  # TEST-NET-1
    async with asyncio.timeout(30):
        with pytest.raises(XidwatchError, match=r"cannot serve HTTP on 192\.0\.2\.1"):
            await daemon.run(asyncio.Event(), services=[service])


async def test_a_log_file_that_cannot_be_followed_ends_start_up(tmp_path: Path) -> None:
    daemon = Daemon(_config(tmp_path, tmp_path / "missing" / "kern.log"))
    async with asyncio.timeout(30):
        with pytest.raises(SourceError, match="--log-file"):
            await daemon.run(asyncio.Event())
    assert not (tmp_path / "missing").exists()


async def test_the_http_port_is_up_before_the_daemon_says_it_started(tmp_path: Path) -> None:
    daemon = Daemon(_config(tmp_path))
    service = http_service(daemon, HttpSettings("127.0.0.1", 0))
    assert daemon.readiness() == {"daemon": "starting"}  # /readyz: not ready while starting
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop, services=[service]))
    await asyncio.wait_for(daemon.ready.wait(), 30)
    assert service.bound_port  # bound before ready
    assert all(problem is None for problem in daemon.readiness().values())
    stop.set()
    await asyncio.wait_for(task, 30)


async def _set_max_pages(conn: aiosqlite.Connection, pages: int) -> int:
    async with conn.execute(f"PRAGMA max_page_count = {pages}") as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_sigterm_on_a_full_disk_says_how_many_xids_are_queued_and_where_they_come_back(
    tmp_path: Path,
) -> None:
    log = tmp_path / "kern.log"
    log.write_text("".join(_line(n) for n in range(5)))
    daemon = Daemon(_config(tmp_path, log, shutdown_timeout_s=1.0))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await wait_until_async(lambda: daemon.writer.stats.events_stored == 5)
    await daemon.writer.exclusive(lambda conn: _set_max_pages(conn, FULL))
    with log.open("a") as f:  # more than the pages' free room holds
        f.write("".join(_line(n) for n in range(5, 400)))
    await wait_until_async(lambda: daemon.writer.failing is not None)
    with capture_logs() as logs:
        stop.set()  # SIGTERM
        await asyncio.wait_for(task, 15)
    (warning,) = [e for e in logs if e["event"] == "xids_not_stored"]
    stored = daemon.writer.stats.events_stored
    assert warning["log_level"] == "warning" and warning["queued"] == 400 - stored > 0
    assert "re-read from /dev/kmsg" in warning["hint"] and "full" in str(warning["error"])


async def test_a_clean_stop_says_nothing_about_lost_xids(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text("".join(_line(n) for n in range(3)))
    daemon = Daemon(_config(tmp_path, log))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await wait_until_async(lambda: daemon.writer.stats.events_stored == 3)
    with capture_logs() as logs:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert not [e for e in logs if e["event"] == "xids_not_stored"]
    assert daemon.xids_not_stored == 0
