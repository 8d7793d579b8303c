"""One writer per store: a second writing process fails at once, naming the holder's pid.

"Another process" is played by a second open file description on the lock file (``flock``
locks belong to it, so this process conflicts with it exactly as another process would);
one test uses a real second process.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from store.acks import record_ack
from store.db import StoreLockedError, lock_path, open_reader, prepare_store
from store.writer import StoreWriter
from tests.store.helpers import event
from watcher.replayer import replay_captures

XID_LINE = "[  100.000000] NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=job, GPU has fallen off\n"


@contextmanager
def held_by(db: Path, pid: int, host: str = "node-a") -> Iterator[None]:
    """The writer lock as another process holds it: flocked, its pid and host inside."""
    fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{pid} {host}\n".encode())
        yield
    finally:
        os.close(fd)


def _lock_is_free(db: Path) -> bool:
    fd = os.open(lock_path(db), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


async def test_a_second_writer_fails_at_once_naming_the_holders_pid(db_path: Path) -> None:
    prepare_store(db_path)
    with held_by(db_path, 4242):
        with pytest.raises(StoreLockedError, match=r"pid 4242 on node-a") as refused:
            prepare_store(db_path)
        assert "\n" not in str(refused.value)
        writer = StoreWriter(db_path)
        with pytest.raises(StoreLockedError, match="pid 4242"):
            await writer.open()
        with pytest.raises(StoreLockedError, match="pid 4242"):
            await replay_captures([_capture(db_path.parent)], db_path, boot_wall_ms=0)
    assert _lock_is_free(db_path)  # the refused writers left nothing held


async def test_readers_and_acks_work_beside_the_writer(db_path: Path) -> None:
    prepare_store(db_path)
    writer = StoreWriter(db_path)
    await writer.open()
    try:
        assert not _lock_is_free(db_path)
        writer.put(event(1))
        await writer.close()
        await writer.run()
        conn = await open_reader(db_path)
        try:
            async with conn.execute("SELECT count(*) FROM xid_events") as cur:
                assert tuple(await cur.fetchone() or ()) == (1,)
        finally:
            await conn.close()
        ack = await record_ack(db_path, "0000:3b:00.0", reason="reseated", who="sre", now_ms=5)
        assert ack.pci_bus_id == "00000000:3B:00.0"
    finally:
        await writer.aclose_connection()
    assert _lock_is_free(db_path)


async def test_the_lock_file_names_this_process_while_it_writes(db_path: Path) -> None:
    prepare_store(db_path)
    writer = StoreWriter(db_path)
    await writer.open()
    try:
        assert lock_path(db_path).read_text().split()[0] == str(os.getpid())
    finally:
        await writer.aclose_connection()


def _capture(directory: Path) -> Path:
    capture = directory / "one.log"
    capture.write_text(XID_LINE)
    return capture


_HOLDER = """
import sys
from pathlib import Path
from store.db import acquire_writer_lock
lock = acquire_writer_lock(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


def test_a_writer_in_another_process_blocks_this_one_until_it_exits(db_path: Path) -> None:
    prepare_store(db_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert holder.stdin is not None and holder.stdout is not None
    with closing(holder.stdin), closing(holder.stdout):
        try:
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(StoreLockedError, match=f"pid {holder.pid} on "):
                prepare_store(db_path)
        finally:
            holder.stdin.close()
            holder.wait(10)
    prepare_store(db_path)  # the kernel dropped the lock with its holder
