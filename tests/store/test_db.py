"""Opening the store: migrations, read-only readers, a corrupt store moved aside, and
every other file (not SQLite, another program's database, a newer store) refused as found."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from store.acks import record_ack
from store.db import (
    ForeignFileError,
    NewerStoreError,
    open_for_writing,
    open_reader,
    prepare_store,
)
from store.errors import CorruptStoreError, StoreError
from store.schema import APPLICATION_ID, SCHEMA_VERSION


def test_a_new_store_is_migrated_to_the_current_version_in_wal_mode(db_path: Path) -> None:
    prepare_store(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_preparing_twice_keeps_the_data(db_path: Path) -> None:
    prepare_store(db_path)
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO watermarks VALUES ('k', 1, 1)")
    prepare_store(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM watermarks").fetchone() == (1,)


def _damage_pages(db: Path) -> bytes:
    """Overwrite b-tree pages past page 1 (a torn write): the header still says whose it is."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        rows = [(f"k{i}", i, 1) for i in range(3000)]
        conn.executemany("INSERT INTO watermarks VALUES (?, ?, ?)", rows)
    with db.open("r+b") as f:
        f.seek(3 * 4096)
        f.write(bytes(range(256)) * 64)
    return db.read_bytes()


def test_a_corrupt_store_is_moved_aside_loudly_and_a_fresh_store_started(db_path: Path) -> None:
    prepare_store(db_path)
    damaged = _damage_pages(db_path)
    with capture_logs() as logs:
        prepare_store(db_path, now_s=1234)
    assert db_path.with_name("xidwatch.db.corrupt-1234").read_bytes() == damaged
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["store_corrupt_moved_aside"]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_store_is_marked_as_ours_by_its_application_id(db_path: Path) -> None:
    prepare_store(db_path)
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)


def test_a_store_from_before_the_marker_is_known_by_version_and_tables_and_marked(
    db_path: Path,
) -> None:
    prepare_store(db_path)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("PRAGMA application_id = 0")
        conn.execute("INSERT INTO watermarks VALUES ('history', 42, 1)")
    prepare_store(db_path)
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert conn.execute("SELECT position FROM watermarks").fetchall() == [(42,)]


def test_a_damaged_store_from_before_the_marker_is_still_moved_aside(db_path: Path) -> None:
    prepare_store(db_path)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("PRAGMA application_id = 0")
    _damage_pages(db_path)
    with capture_logs():
        prepare_store(db_path, now_s=1234)
    assert db_path.with_name("xidwatch.db.corrupt-1234").exists()


def _yaml(path: Path) -> bytes:
    path.write_text("db: /var/lib/xidwatch/xidwatch.db\nlisten: 0.0.0.0:9402\n" * 50)
    return path.read_bytes()


def _foreign_sqlite(path: Path) -> bytes:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO accounts VALUES (1, 'alice')")
    return path.read_bytes()


def _other_programs_database(path: Path) -> bytes:
    """Marked by another program, with tables named like ours."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA application_id = 1234")
        conn.execute("PRAGMA user_version = 2")
        conn.execute("CREATE TABLE xid_events (x)")
        conn.execute("CREATE TABLE watermarks (x)")
    return path.read_bytes()


def _damaged_foreign_sqlite(path: Path) -> bytes:
    _foreign_sqlite(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executemany("INSERT INTO accounts (name) VALUES (?)", [("x" * 200,)] * 200)
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 8192)
    return path.read_bytes()


_NOT_OURS = pytest.mark.parametrize(
    "make",
    [_yaml, _foreign_sqlite, _other_programs_database, _damaged_foreign_sqlite],
    ids=["yaml", "foreign-sqlite", "other-application-id", "damaged-foreign-sqlite"],
)


@_NOT_OURS
def test_a_file_that_is_not_our_store_is_refused_and_left_byte_for_byte(
    tmp_path: Path, make: Callable[[Path], bytes]
) -> None:
    target = tmp_path / "xidwatch.yaml"
    before = make(target)
    with capture_logs() as logs, pytest.raises(ForeignFileError, match="not an xidwatch store"):
        prepare_store(target, now_s=1234)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xidwatch.yaml"]  # nothing beside it
    assert [e["event"] for e in logs] == []


@_NOT_OURS
async def test_readers_and_writers_refuse_a_file_that_is_not_our_store(
    tmp_path: Path, make: Callable[[Path], bytes]
) -> None:
    target = tmp_path / "xidwatch.yaml"
    before = make(target)
    for open_ in (open_reader, open_for_writing):
        with pytest.raises(StoreError, match=r"not an xidwatch store|not a readable xidwatch"):
            await open_(target)
    assert target.read_bytes() == before


async def test_a_directory_is_refused_by_every_open(tmp_path: Path) -> None:
    with pytest.raises(ForeignFileError, match="is a directory"):
        prepare_store(tmp_path)
    for open_ in (open_reader, open_for_writing):
        with pytest.raises(ForeignFileError, match="is a directory"):
            await open_(tmp_path)


def _newer_store(db: Path) -> None:
    prepare_store(db)
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def test_a_store_from_a_newer_xidwatch_is_refused_not_moved(db_path: Path) -> None:
    _newer_store(db_path)
    before = db_path.read_bytes()
    with pytest.raises(NewerStoreError, match="newer than this xidwatch"):
        prepare_store(db_path)
    assert db_path.read_bytes() == before


async def _ack(db: Path) -> object:
    return await record_ack(db, "0000:3b:00.0", reason="reseated", who="sre", now_ms=1)


async def _read(db: Path) -> object:
    return await open_reader(db)


async def _write(db: Path) -> object:
    return await open_for_writing(db)


@pytest.mark.parametrize("open_", [_read, _write, _ack], ids=["reader", "writer", "ack"])
async def test_a_store_from_a_newer_xidwatch_is_refused_by_every_command(
    db_path: Path, open_: Callable[[Path], Awaitable[object]]
) -> None:
    _newer_store(db_path)
    before = _sqlite_threads()
    with pytest.raises(NewerStoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        await open_(db_path)
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM acks").fetchone() == (0,)
    for thread in _sqlite_threads() - before:  # the refused connection's thread ends
        thread.join(5)
        assert not thread.is_alive()


async def test_a_reader_cannot_write(db_path: Path) -> None:
    prepare_store(db_path)
    conn = await open_reader(db_path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await conn.execute("INSERT INTO watermarks VALUES ('k', 1, 1)")
    await conn.close()


async def test_a_reader_explains_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="xidwatch run --db"):
        await open_reader(tmp_path / "missing.db")


def _sqlite_threads() -> set[threading.Thread]:
    """aiosqlite's per-connection threads (an unclosed one keeps the process from exiting)."""
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def test_a_reader_explains_a_corrupt_or_foreign_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00junk" * 2000)
    before = _sqlite_threads()
    with pytest.raises(ForeignFileError, match="not a SQLite database"):
        await open_reader(garbage)
    torn = tmp_path / "torn.db"
    prepare_store(torn)
    with torn.open("r+b") as f:  # page 1 past its header: the schema itself is damaged
        f.seek(100)
        f.write(b"\xff" * 3996)
    with pytest.raises(CorruptStoreError, match="not a readable xidwatch store"):
        await open_reader(torn)
    for thread in _sqlite_threads() - before:  # the failed connection's thread ends
        thread.join(5)
        assert not thread.is_alive()
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).close()
    foreign.write_bytes(foreign.read_bytes() or b"")
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an xidwatch store"):
        await open_reader(foreign)
