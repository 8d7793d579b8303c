"""Exactly-once across a SIGKILL: the daemon restarted mid-stream stores every XID once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import RealKmsgWriter
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


@contextmanager
def daemon(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    # Folding off: these tests count individual rows, and the real ring buffer may already
    # hold a flood of earlier test XIDs. Logs go to a file: an unread pipe would fill up and
    # block the daemon.
    with tempfile.TemporaryFile() as logs:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xidwatch",
                "--log-json",
                "run",
                "--no-http",  # the default port may be taken (a daemon running here)
                "--no-nvml",
                "--flood-per-minute",
                "0",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=logs,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def _wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    wait_until(predicate, timeout_s, message=f"waiting for {what}")


def _count(db: Path, where: str = "1") -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return int(
                conn.execute(
                    f"SELECT coalesce(sum(count), 0) FROM xid_events WHERE {where}"
                ).fetchone()[0]
            )
    except sqlite3.OperationalError:
        return 0  # not migrated yet


def test_file_stream_survives_sigkill_with_no_loss_and_no_duplicate(tmp_path: Path) -> None:
    db, log = tmp_path / "x.db", tmp_path / "kern.log"
    lines = [
        f"Nov 24 02:{n // 60 % 60:02d}:{n % 60:02d} node kernel: "
        f"NVRM: Xid (PCI:0000:3b:00): 13, pid={n}, name=job, event {n}\n"
        for n in range(600)
    ]
    args = (
        "--no-kmsg",
        "--db",
        str(db),
        "--log-file",
        str(log),
        "--log-file-from-start",
    )
    log.write_text("".join(lines[:300]))
    with daemon(*args) as first:
        _wait_for(lambda: _count(db) > 0, "the first events")
        with log.open("a") as f:  # keep writing while it is ingesting, then kill it
            f.write("".join(lines[300:400]))
        first.send_signal(signal.SIGKILL)
    killed_at = _count(db)
    with log.open("a") as f:
        f.write("".join(lines[400:]))
    with daemon(*args) as second:
        _wait_for(lambda: _count(db) >= 600, "all 600 events after restart")
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
    with sqlite3.connect(db) as conn:
        pids = [row[0] for row in conn.execute("SELECT pid FROM xid_events ORDER BY pid")]
    assert pids == list(range(600)), f"killed with {killed_at} stored"


@pytest.mark.root
def test_real_kmsg_stream_survives_sigkill_with_no_loss_and_no_duplicate(
    tmp_path: Path, real_kmsg: RealKmsgWriter
) -> None:
    db = tmp_path / "x.db"
    tagged = f"process = '{real_kmsg.tag}'"
    with daemon("--db", str(db), "--kmsg-any-facility") as first:
        for n in range(4):
            real_kmsg.write(real_kmsg.xid_line(31, n))
        real_kmsg.write("xidwatch test flush")  # the last record becomes readable after this
        _wait_for(lambda: _count(db, tagged) >= 2, "the first tagged XIDs")
        first.send_signal(signal.SIGKILL)
    for n in range(4, 8):  # written while the daemon is down: recovered from the ring buffer
        real_kmsg.write(real_kmsg.xid_line(31, n))
    real_kmsg.write("xidwatch test flush")
    with daemon("--db", str(db), "--kmsg-any-facility") as second:
        _wait_for(lambda: _count(db, tagged) >= 8, "all 8 tagged XIDs after restart")
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            f"SELECT pid, seq FROM xid_events WHERE {tagged} ORDER BY pid"
        ).fetchall()
    assert [pid for pid, _ in rows] == [1000 + n for n in range(8)]
    assert len({seq for _, seq in rows}) == 8
    assert os.geteuid() == 0
