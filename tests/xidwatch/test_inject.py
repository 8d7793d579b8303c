"""``xidwatch inject``: what it writes, when it refuses, and the real /dev/kmsg end to end."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KMSG, RealKmsgWriter
from tests.waiting import wait_until_async
from watcher.config import DaemonConfig
from watcher.daemon import Daemon
from watcher.kernel.injection import injected_id
from watcher.kernel.kmsg import OsKmsgDevice, kmsg_source_key, parse_kmsg_record
from watcher.kernel.parser import parse_xid
from xidwatch.inject import InjectRefusedError, write_xid


def _write(tmp_path: Path, **kwargs: object) -> Path:
    target = tmp_path / "kmsg"
    target.touch()
    kwargs.setdefault("euid", lambda: 0)
    kwargs.setdefault("nvidia_markers", ())
    write_xid(kwargs.pop("code", 13), kwargs.pop("gpu", "0000:3b:00.0"), kmsg_path=target, **kwargs)  # type: ignore[arg-type]
    return target


def test_writes_a_tagged_driver_shaped_line_then_a_flush_record(tmp_path: Path) -> None:
    target = tmp_path / "kmsg"
    target.touch()
    done = write_xid(
        79, "3b:00", kmsg_path=target, euid=lambda: 0, nvidia_markers=(), new_id=lambda: "ab" * 16
    )
    first, second = target.read_text().splitlines()
    assert first == f"<4>{done.line}"
    parsed = parse_xid(done.line)
    assert parsed is not None
    assert (parsed.xid, parsed.pci_bus_id, parsed.process) == (
        79,
        "00000000:3B:00.0",
        "xidwatch-inject",
    )
    assert injected_id(done.line) == done.id == "ab" * 16
    assert second.startswith("<4>") and parse_xid(second) is None and injected_id(second) is None


def test_refuses_unless_root(tmp_path: Path) -> None:
    with pytest.raises(InjectRefusedError, match="only root may write"):
        _write(tmp_path, euid=lambda: 1000)
    assert (tmp_path / "kmsg").read_text() == ""


def test_on_a_node_with_an_nvidia_driver_it_needs_yes(tmp_path: Path) -> None:
    marker = tmp_path / "nvidiactl"
    marker.touch()
    with pytest.raises(InjectRefusedError, match=r"NVIDIA driver .*Pass --yes"):
        _write(tmp_path, nvidia_markers=(marker,))
    written = _write(tmp_path, nvidia_markers=(marker,), confirmed=True)
    assert len(written.read_text().splitlines()) == 2


def test_refuses_when_the_kernel_drops_user_space_writes(tmp_path: Path) -> None:
    setting = tmp_path / "printk_devkmsg"
    setting.write_text("off\n")
    devnull = Path(os.devnull)  # a character device, like /dev/kmsg
    with pytest.raises(InjectRefusedError, match="printk_devkmsg is off"):
        write_xid(
            13,
            "3b:00",
            kmsg_path=devnull,
            euid=lambda: 0,
            nvidia_markers=(),
            printk_devkmsg=setting,
        )
    setting.write_text("ratelimit\n")
    write_xid(
        13, "3b:00", kmsg_path=devnull, euid=lambda: 0, nvidia_markers=(), printk_devkmsg=setting
    )


def test_a_malformed_gpu_is_refused_with_the_expected_shape(tmp_path: Path) -> None:
    with pytest.raises(InjectRefusedError, match="give a PCI bus id"):
        _write(tmp_path, gpu="gpu0")


def test_the_command_prints_the_id_and_the_line(tmp_path: Path) -> None:
    target = tmp_path / "kmsg"
    target.touch()
    out = subprocess.run(
        [sys.executable, "-m", "xidwatch", "inject", "--kmsg-path", str(target), "--xid", "31"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if os.geteuid() != 0:
        assert out.returncode == 2 and "only root may write" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    m = re.search(r"id ([0-9a-f]{32})", out.stdout)
    assert m is not None and m[1] in target.read_text()
    assert "XID 31 on 00000000:00:00.0" in out.stdout  # the default: no real GPU's address


def _seq_of(tag: str) -> int:
    """The sequence number of the /dev/kmsg record carrying ``tag``."""
    device = OsKmsgDevice(KMSG)
    try:
        found = None
        while True:
            try:
                data = device.read(8192)
            except BlockingIOError:
                break
            except OSError:
                continue  # EPIPE: overwritten records; reading goes on
            record = parse_kmsg_record(data)
            if record is not None and tag in record.text:
                found = record.seq
    finally:
        device.close()
    assert found is not None, f"{tag} is not in /dev/kmsg"
    return found


async def _read_past(db_path: Path, seq: int, *, accept_injected: bool) -> None:
    """Run the daemon on the real /dev/kmsg until it has handled the record ``seq``."""
    daemon = Daemon(
        DaemonConfig(
            db_path=db_path, nvml=False, accept_injected=accept_injected, checkpoint_interval_s=0.05
        )
    )
    key = kmsg_source_key(daemon.host.boot_id)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_until_async(lambda: (daemon.writer.watermark(key) or -1) >= seq, 30)
    finally:
        stop.set()
        await task


@pytest.mark.root
@pytest.mark.slow
async def test_real_kmsg_injection_is_stored_marked_only_with_accept_injected(
    tmp_path: Path, real_kmsg: RealKmsgWriter
) -> None:
    real_kmsg.write(real_kmsg.xid_line(31, 1))  # an ordinary user-space record: never stored
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "xidwatch",
            "inject",
            "--yes",
            "--xid",
            "13",
            "--gpu",
            "0000:e7:00.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    m = re.search(r"id ([0-9a-f]{32})", out.stdout)
    assert m is not None
    seq = _seq_of(m[1])
    accepted, ignored = tmp_path / "accepted.db", tmp_path / "ignored.db"
    await _read_past(accepted, seq, accept_injected=True)
    await _read_past(ignored, seq, accept_injected=False)
    mine = f"raw LIKE '%{m[1]}%'"
    with sqlite3.connect(accepted) as conn:
        rows = conn.execute(f"SELECT xid, pci_bus_id, injected FROM xid_events WHERE {mine}")
        assert rows.fetchall() == [(13, "00000000:E7:00.0", 1)]
        forged = conn.execute("SELECT count(*) FROM xid_events WHERE process = ?", (real_kmsg.tag,))
        assert forged.fetchone() == (0,)
    with sqlite3.connect(ignored) as conn:
        assert conn.execute(f"SELECT count(*) FROM xid_events WHERE {mine}").fetchone() == (0,)
