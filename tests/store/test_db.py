"""Opening the store: migrations, read-only readers, and a corrupt file moved aside."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from store.db import open_reader, prepare_store
from store.errors import CorruptStoreError, StoreError
from store.schema import SCHEMA_VERSION


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


def test_a_corrupt_file_is_moved_aside_loudly_and_a_fresh_store_started(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database" * 500)
    with capture_logs() as logs:
        prepare_store(db_path, now_s=1234)
    aside = db_path.with_name("xidwatch.db.corrupt-1234")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["store_corrupt_moved_aside"]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_store_from_a_newer_xidwatch_is_refused_not_moved(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this xidwatch"):
        prepare_store(db_path)
    assert db_path.exists()


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
    with pytest.raises(CorruptStoreError, match="not a readable xidwatch store"):
        await open_reader(garbage)
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
