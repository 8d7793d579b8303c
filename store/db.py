"""Opening the store file: WAL, migrations, read-only readers, and corrupt-file recovery.

The writer opens with :func:`open_for_writing` (one per process); everything else reads
through :func:`open_reader`, which cannot write even by mistake (``mode=ro``). Every open
checks the file first: only an xidwatch store (its ``application_id``, or for a store from
before it had one, its ``user_version`` and tables) that is not from a newer xidwatch is
used, and only such a store is ever moved aside as corrupt. One process at a time writes a
store: :func:`acquire_writer_lock` holds ``<store>.lock`` (``flock``) for the writer's life.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import structlog

from store.errors import CorruptStoreError, StoreError
from store.schema import APPLICATION_ID, SCHEMA_VERSION, migrate

__all__ = [
    "ForeignFileError",
    "NewerStoreError",
    "StoreLockedError",
    "WriterLock",
    "acquire_writer_lock",
    "lock_path",
    "open_for_writing",
    "open_reader",
    "prepare_store",
]

log = structlog.get_logger("store")

_INCREMENTAL = 2  # PRAGMA auto_vacuum value
_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
)


class StoreLockedError(StoreError):
    """Another process is the store's writer (a daemon, a replay)."""


class ForeignFileError(StoreError):
    """The file is not an xidwatch store; it is left exactly as it is."""


class NewerStoreError(StoreError):
    """The store was written by a newer xidwatch, whose schema this one does not know."""


def prepare_store(path: Path, *, now_s: float | None = None) -> None:
    """Create or migrate the store at ``path``; move a corrupt store aside and start fresh.

    Called once before the writer starts. A corrupt store never causes a crash loop: it is
    renamed to ``<name>.corrupt-<unix time>`` (with its -wal and -shm) and logged loudly.
    A file that is not an xidwatch store (a YAML given as --db, another program's database)
    is refused and never touched, nor is a store another process is writing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ours = _inspect(path)
    with acquire_writer_lock(path):
        try:
            _open_and_migrate(path).close()
        except sqlite3.DatabaseError as e:
            if "newer than this xidwatch" in str(e):
                raise NewerStoreError(str(e)) from e
            if not _is_corruption(e):
                # A full disk or a lock held elsewhere: the file is fine, and moving it aside
                # would lose its history (and, on a full disk, fail again on the fresh one).
                raise StoreError(
                    f"cannot open the store {path} ({e}); it is left as it is: free disk "
                    "space, or stop whatever holds it locked, then start again"
                ) from e
            if not ours:
                raise ForeignFileError(
                    f"{path} cannot be read as a database ({e}) and carries no xidwatch "
                    "schema marker, so it is left as it is: point --db at the store"
                ) from e
            aside = _move_aside(path, now_s if now_s is not None else time.time())
            log.error(
                "store_corrupt_moved_aside", path=str(path), moved_to=str(aside), error=str(e)
            )
            _open_and_migrate(path).close()


# -- what the file is ------------------------------------------------------------------------

_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_TABLES = frozenset({"xid_events", "watermarks"})
_TABLES_SQL = "SELECT name FROM sqlite_schema WHERE type = 'table'"


@dataclass(frozen=True, slots=True)
class _Marker:
    """What a SQLite file says about itself: whose it is, its schema version, its tables."""

    application_id: int
    user_version: int
    tables: frozenset[str]

    @property
    def ours(self) -> bool:
        """Marked ours, or (a store from before the marker) our version and our tables."""
        if self.application_id == APPLICATION_ID:
            return True
        return self.application_id == 0 and self.user_version > 0 and self.tables >= _OUR_TABLES

    @property
    def empty(self) -> bool:
        return self.application_id == 0 and self.user_version == 0 and not self.tables


def _check_marker(path: Path, marker: _Marker, *, empty_ok: bool) -> None:
    """Raise unless ``marker`` is an xidwatch store this xidwatch can read and write."""
    if marker.empty and empty_ok:
        return
    if not marker.ours:
        if marker.application_id not in (0, APPLICATION_ID):
            what = f"another program's SQLite database (application_id {marker.application_id:#x})"
        elif marker.empty:
            what = "an empty SQLite database"
        else:
            listed = ", ".join(sorted(marker.tables)[:4]) or "none"
            what = f"a SQLite database without the xidwatch schema marker (tables: {listed})"
        raise ForeignFileError(
            f"{path} is {what}, not an xidwatch store; it is left as it is: point --db at the store"
        )
    if marker.user_version > SCHEMA_VERSION:
        raise NewerStoreError(
            f"the store {path} has schema version {marker.user_version}, newer than this "
            f"xidwatch understands ({SCHEMA_VERSION}); upgrade xidwatch, or point --db at "
            "another file"
        )


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise ForeignFileError(f"{path} is a directory, not an xidwatch store: give the file")


def _not_sqlite(path: Path) -> ForeignFileError:
    return ForeignFileError(
        f"{path} is not a SQLite database, so not an xidwatch store; it is left as it is: "
        "point --db at the store (xidwatch never moves or changes a file it did not create)"
    )


def _read_header(path: Path) -> bytes:
    """The first 100 bytes, read only where SQLite could not read the file.

    Opening and closing a database file drops every POSIX lock this process's SQLite
    connections hold on it, so a healthy store is only ever read through SQLite.
    """
    try:
        with path.open("rb") as f:
            return f.read(100)
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from e


def _header_marker(head: bytes) -> _Marker:
    """The marker as page 1's header records it (for a file SQLite cannot read further)."""
    return _Marker(
        int.from_bytes(head[68:72], "big"), int.from_bytes(head[60:64], "big"), frozenset()
    )


def _inspect(path: Path) -> bool:
    """Refuse anything but a new file or an xidwatch store; True if it is an existing store.

    Reads only (``mode=ro``): a file that turns out not to be ours is left byte for byte.
    """
    _refuse_directory(path)
    if not path.exists() or path.stat().st_size == 0:
        return False  # new, or an empty file: nothing in it to lose
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = frozenset(str(r[0]) for r in conn.execute(_TABLES_SQL))
        finally:
            conn.close()
        marker = _Marker(int(app_id), int(version), tables)
    except sqlite3.DatabaseError as e:
        if not _is_corruption(e):
            raise StoreError(
                f"cannot open the store {path} ({e}); it is left as it is: free disk space, "
                "or stop whatever holds it locked, then start again"
            ) from e
        head = _read_header(path)
        if not head.startswith(_SQLITE_MAGIC):
            raise _not_sqlite(path) from e
        marker = _header_marker(head)
        if marker.application_id == APPLICATION_ID or (
            marker.application_id == 0 and 0 < marker.user_version <= SCHEMA_VERSION
        ):
            return True  # a damaged store of ours: prepare_store moves it aside
        raise ForeignFileError(
            f"{path} is a damaged SQLite file without the xidwatch schema marker ({e}); "
            "it is left as it is: point --db at the store"
        ) from e
    _check_marker(path, marker, empty_ok=True)
    return not marker.empty


async def _check_connection(conn: aiosqlite.Connection, path: Path, *, writing: bool) -> None:
    """Refuse a connection to anything but an xidwatch store this version understands."""
    try:
        async with conn.execute("PRAGMA application_id") as cur:
            app_id = (await cur.fetchone() or (0,))[0]
        async with conn.execute("PRAGMA user_version") as cur:
            version = (await cur.fetchone() or (0,))[0]
        async with conn.execute(_TABLES_SQL) as cur:
            tables = frozenset([str(r[0]) async for r in cur])
    except sqlite3.DatabaseError as e:
        if not _is_corruption(e):
            raise StoreError(f"cannot open the store {path} ({e})") from e
        if getattr(e, "sqlite_errorcode", 0) & 0xFF == _NOTADB:
            raise _not_sqlite(path) from e
        fix = (
            "restart `xidwatch run` to move it aside"
            if writing
            else "the daemon moves a corrupt store aside at start, or point --db at the right file"
        )
        raise CorruptStoreError(f"{path} is not a readable xidwatch store ({e}); {fix}") from e
    _check_marker(path, _Marker(int(app_id), int(version), tables), empty_ok=False)


# -- one writer per store --------------------------------------------------------------------


@dataclass(slots=True)
class _Held:
    fd: int
    users: int


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


class WriterLock:
    """This process's hold on a store's writer lock; :meth:`release` (or ``with``) ends it.

    The lock is ``flock(LOCK_EX)`` on ``<store>.lock``, which holds the holder's pid and
    host name. The kernel drops it when the holder exits, however it exits. Holds within one
    process are counted (``prepare_store`` and then the writer), so only another process is
    refused.
    """

    def __init__(self, key: str) -> None:
        self._key: str | None = key

    def release(self) -> None:
        """Give the hold back; the lock file stays (it is reused by the next writer)."""
        key, self._key = self._key, None
        if key is None:
            return
        with _held_guard:
            held = _held[key]
            held.users -= 1
            if held.users == 0:
                del _held[key]
                os.close(held.fd)  # closing the descriptor drops the flock

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(path: Path) -> Path:
    """The writer lock file beside the store."""
    return path.with_name(f"{path.name}.lock")


def acquire_writer_lock(path: Path) -> WriterLock:
    """Become the store's one writer, or fail at once naming the process that is."""
    lock = lock_path(path)
    key = os.path.realpath(lock)
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held.users += 1
            return WriterLock(key)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(
                f"cannot create the writer lock {lock}: {e.strerror or e}; the store's "
                "directory must be writable by the daemon"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StoreLockedError(
                f"the store {path} is already being written by {holder} (lock {lock}): "
                "one writer per store; stop that one first, or point --db at another file"
            ) from None
        except OSError as e:
            os.close(fd)
            raise StoreError(f"cannot lock {lock}: {e.strerror or e}") from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        _held[key] = _Held(fd, 1)
        return WriterLock(key)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says: ``pid 123 on host-a``."""
    try:
        words = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        words = []
    if not words or not words[0].isdigit():
        return "another process (pid not yet written)"
    where = f" on {words[1]}" if len(words) > 1 else ""
    return f"pid {words[0]}{where}"


class _QuickCheckFailed(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage."""


_NOTADB = 26
_CORRUPT_CODES = frozenset({11, _NOTADB})  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)


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
    """A writing connection: autocommit off by hand (explicit BEGIN), WAL on.

    The store must exist and be an xidwatch store this version understands. The daemon's
    writer also holds the writer lock (:func:`acquire_writer_lock`); a short write beside
    it (``xidwatch ack``) goes through SQLite's own locking.
    """
    _refuse_directory(path)
    if not path.exists():
        raise StoreError(f"no xidwatch store at {path}: start `xidwatch run --db {path}` first")
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        await _check_connection(conn, path, writing=True)
        for pragma in _PRAGMAS:
            await conn.execute(pragma)
    except BaseException:
        await conn.close()  # an unclosed aiosqlite connection keeps its thread alive
        raise
    return conn


async def open_reader(path: Path) -> aiosqlite.Connection:
    """A read-only connection; fails with a clear error if there is no store at ``path``."""
    _refuse_directory(path)
    if not path.exists():
        raise StoreError(
            f"no xidwatch store at {path}: start `xidwatch run --db {path}` or "
            f"`xidwatch replay FILE --db {path}` first"
        )
    conn = await aiosqlite.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        await _check_connection(conn, path, writing=False)
    except BaseException:
        await (
            conn.close()
        )  # an unclosed aiosqlite connection keeps its thread, and the process, alive
        raise
    conn.row_factory = sqlite3.Row
    return conn
