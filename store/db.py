"""Opening the store file: WAL, migrations, read-only readers, and corrupt-file recovery.

The writer opens with :func:`open_for_writing` (one per process); everything else reads
through :func:`open_reader`, which cannot write even by mistake (``mode=ro``).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import aiosqlite
import structlog

from store.errors import CorruptStoreError, StoreError
from store.schema import migrate

__all__ = ["open_for_writing", "open_reader", "prepare_store"]

log = structlog.get_logger("store")

_INCREMENTAL = 2  # PRAGMA auto_vacuum value
_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
)


def prepare_store(path: Path, *, now_s: float | None = None) -> None:
    """Create or migrate the store at ``path``; move a corrupt file aside and start fresh.

    Called once before the writer starts. A corrupt file never causes a crash loop: it is
    renamed to ``<name>.corrupt-<unix time>`` (with its -wal and -shm) and logged loudly.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _open_and_migrate(path).close()
    except sqlite3.DatabaseError as e:
        if "newer than this xidwatch" in str(e):
            raise StoreError(str(e)) from e
        if not _is_corruption(e):
            # A full disk or a lock held elsewhere: the file is fine, and moving it aside
            # would lose its history (and, on a full disk, fail again on the fresh one).
            raise StoreError(
                f"cannot open the store {path} ({e}); it is left as it is: free disk space, "
                "or stop whatever holds it locked, then start again"
            ) from e
        aside = _move_aside(path, now_s if now_s is not None else time.time())
        log.error("store_corrupt_moved_aside", path=str(path), moved_to=str(aside), error=str(e))
        _open_and_migrate(path).close()


class _QuickCheckFailed(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage."""


_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)


def _is_corruption(e: sqlite3.DatabaseError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return isinstance(e, _QuickCheckFailed) or (code is not None and code & 0xFF in _CORRUPT_CODES)


def _open_and_migrate(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        # Check before anything writes: a damaged file is moved aside exactly as found.
        check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise _QuickCheckFailed(f"quick_check: {check}")
        conn.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")  # takes effect on a new file only
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        _ensure_incremental_vacuum(conn)
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _ensure_incremental_vacuum(conn: sqlite3.Connection) -> None:
    """Turn on incremental auto-vacuum, so retention can hand pages back while running.

    Free on a new file; a file made before it was turned on is rebuilt once (VACUUM).
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
        return
    conn.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
    if conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
        log.info("store_enabling_incremental_vacuum")
        conn.execute("VACUUM")


def _move_aside(path: Path, now_s: float) -> Path:
    aside = path.with_name(f"{path.name}.corrupt-{int(now_s)}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.rename(Path(f"{aside}{suffix}"))
    return aside


async def open_for_writing(path: Path) -> aiosqlite.Connection:
    """The writer's connection: autocommit off by hand (explicit BEGIN), WAL on."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in _PRAGMAS:
        await conn.execute(pragma)
    return conn


async def open_reader(path: Path) -> aiosqlite.Connection:
    """A read-only connection; fails with a clear error if there is no store at ``path``."""
    if not path.exists():
        raise StoreError(
            f"no xidwatch store at {path}: start `xidwatch run --db {path}` or "
            f"`xidwatch replay FILE --db {path}` first"
        )
    conn = await aiosqlite.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        version = (await (await conn.execute("PRAGMA user_version")).fetchone() or (0,))[0]
    except sqlite3.DatabaseError as e:
        await (
            conn.close()
        )  # an unclosed aiosqlite connection keeps its thread, and the process, alive
        raise CorruptStoreError(
            f"{path} is not a readable xidwatch store ({e}); the daemon moves a corrupt "
            "file aside at start, or point --db at the right file"
        ) from e
    if version == 0:
        await conn.close()
        raise StoreError(f"{path} is an empty or foreign SQLite file, not an xidwatch store")
    conn.row_factory = sqlite3.Row
    return conn
