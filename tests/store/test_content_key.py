"""Replay is idempotent by content: a kernel record is stored once, whatever capture, line
ending or overlap it arrives in, on its own row or folded into a burst."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from store.db import prepare_store
from store.flood import FloodPolicy
from store.schema import SCHEMA_VERSION, record_key
from watcher.replayer import replay_captures

BOOT_MS = 1_700_000_000_000
GPUS = ("0000:3b:00", "0000:86:00", "0000:af:00")


def _lines(n: int) -> list[str]:
    """``n`` dmesg lines: a flood of XID 13 on one GPU (folded) among XIDs on the others."""
    out = []
    for i in range(n):
        gpu, code = (GPUS[0], 13) if i % 3 else (GPUS[1 + i % 2], 31 + i % 5)
        out.append(
            f"[{100 + i:6d}.{i * 1000:06d}] NVRM: Xid (PCI:{gpu}): {code}, pid={i}, "
            f"name=train, Graphics Exception {i}"
        )
    return out


def _capture(path: Path, lines: list[str], *, newline: str = "\n") -> Path:
    path.write_bytes("".join(line + newline for line in lines).encode())
    return path


async def _replay(db: Path, *captures: Path, flood: FloodPolicy | None = None) -> None:
    await replay_captures(list(captures), db, boot_wall_ms=BOOT_MS, flood=flood)


def _total(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT coalesce(sum(count), 0) FROM xid_events").fetchone()[0])


async def test_a_capture_then_a_longer_one_containing_it_stores_the_overlap_once(
    tmp_path: Path, db_path: Path
) -> None:
    lines = _lines(120)
    await _replay(db_path, _capture(tmp_path / "one.log", lines[:83]))
    assert _total(db_path) == 83
    await _replay(db_path, _capture(tmp_path / "longer.log", lines))
    assert _total(db_path) == 120
    with closing(sqlite3.connect(db_path)) as conn:  # the flood was folded, exactly
        assert conn.execute("SELECT count(*) FROM xid_events WHERE burst = 1").fetchone()[0] > 0


async def test_the_same_capture_with_crlf_endings_or_trailing_blanks_adds_nothing(
    tmp_path: Path, db_path: Path
) -> None:
    lines = _lines(83)
    await _replay(db_path, _capture(tmp_path / "one.log", lines))
    await _replay(db_path, _capture(tmp_path / "crlf.log", lines, newline="\r\n"))
    await _replay(db_path, _capture(tmp_path / "blanks.log", lines, newline=" \t\n"))
    assert _total(db_path) == 83


async def test_a_shorter_capture_after_a_longer_one_adds_nothing(
    tmp_path: Path, db_path: Path
) -> None:
    lines = _lines(60)
    await _replay(db_path, _capture(tmp_path / "all.log", lines))
    await _replay(db_path, _capture(tmp_path / "middle.log", lines[20:40]))
    await _replay(
        db_path, _capture(tmp_path / "both.log", lines), _capture(tmp_path / "again.log", lines)
    )
    assert _total(db_path) == 60


async def test_identical_lines_at_the_same_millisecond_are_each_counted_once(
    tmp_path: Path, db_path: Path
) -> None:
    line = "[  200.000100] NVRM: Xid (PCI:0000:3b:00): 13, pid=7, name=train, Graphics Exception"
    twice = _capture(tmp_path / "twice.log", [line, line])
    await _replay(db_path, twice, flood=FloodPolicy(per_minute=0))
    assert _total(db_path) == 2
    await _replay(db_path, _capture(tmp_path / "twice-crlf.log", [line, line], newline="\r\n"))
    assert _total(db_path) == 2


async def test_a_store_from_before_content_keys_gets_them_and_a_replay_adds_nothing(
    tmp_path: Path, db_path: Path
) -> None:
    lines = _lines(30)
    no_folding = FloodPolicy(per_minute=0)
    await _replay(db_path, _capture(tmp_path / "one.log", lines), flood=no_folding)
    _downgrade_to_v4(db_path)
    prepare_store(db_path)  # migrates: keys for the rows already there
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM xid_keys").fetchone() == (30,)
    await _replay(db_path, _capture(tmp_path / "crlf.log", lines, newline="\r\n"), flood=no_folding)
    assert _total(db_path) == 30


def _downgrade_to_v4(db: Path) -> None:
    """The store as xidwatch left it before migration 5 (no content keys)."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.executescript(
            """
            DROP TABLE xid_keys;
            PRAGMA user_version = 4;
            """
        )
    assert SCHEMA_VERSION == 5


async def test_keys_older_than_every_kept_event_are_let_go(tmp_path: Path, db_path: Path) -> None:
    lines = _lines(90)
    await _replay(db_path, _capture(tmp_path / "one.log", lines))
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        assert conn.execute("SELECT count(*) FROM xid_keys").fetchone() == (90,)
        conn.execute("DELETE FROM xid_events")  # as retention does, past its horizon
    later = [
        f"[{300 + i:6d}.000000] NVRM: Xid (PCI:0000:3b:00): 48, pid={i}, DBE" for i in range(3)
    ]
    await _replay(db_path, _capture(tmp_path / "later.log", later))
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM xid_keys").fetchone() == (3,)


def test_the_content_lookup_and_the_pruning_use_their_indexes(db_path: Path) -> None:
    prepare_store(db_path)
    with closing(sqlite3.connect(db_path)) as conn:
        for sql, args in (
            ("SELECT content_key FROM xid_keys WHERE content_key IN (?, ?)", (b"a", b"b")),
            ("DELETE FROM xid_keys WHERE ts_ms < (SELECT min(ts_ms) FROM xid_events)", ()),
        ):
            plan = " | ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            assert "SEARCH" in plan and "SCAN" not in plan, (sql, plan)


def test_a_record_key_ignores_line_endings_and_trailing_blanks_but_not_the_text() -> None:
    key = record_key(None, None, 5, "NVRM: Xid 13\n  detail")
    assert record_key(None, None, 5, "NVRM: Xid 13 \r\n  detail\r\n") == key
    assert record_key(None, None, 5, "NVRM: Xid 13\n detail") != key
    assert record_key(None, None, 6, "NVRM: Xid 13\n  detail") != key
    assert record_key(None, None, 5, "NVRM: Xid 13\n  detail", 1) != key
    # kmsg: the boot and sequence number name the record; its derived wall time does not
    assert record_key("b1", 9, 5, "x") == record_key("b1", 9, 7, "x") != record_key("b2", 9, 5, "x")
