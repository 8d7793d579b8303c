"""Numbered schema migrations, applied in order at open; ``PRAGMA user_version`` records them.

A migration is never edited once released: a change to the schema is a new entry.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

MIGRATIONS: tuple[str, ...] = (
    # 1: XID events (individual and folded bursts) and per-source watermarks.
    """
    CREATE TABLE xid_events (
        id          INTEGER PRIMARY KEY,
        ts_ms       INTEGER NOT NULL,
        last_ts_ms  INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        count       INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
        burst       INTEGER NOT NULL DEFAULT 0 CHECK (burst IN (0, 1)),
        node        TEXT NOT NULL DEFAULT '',
        kind        TEXT NOT NULL CHECK (kind IN ('xid', 'sxid')),
        xid         INTEGER NOT NULL,
        pci_bus_id  TEXT,
        gpu_uuid    TEXT,
        mig_gi      INTEGER,
        mig_ci      INTEGER,
        pid         INTEGER,
        process     TEXT,
        message     TEXT NOT NULL,
        raw         TEXT NOT NULL,
        source      TEXT NOT NULL,
        action      TEXT NOT NULL,
        boot_id     TEXT,
        seq         INTEGER,
        UNIQUE (boot_id, seq)
    );
    CREATE INDEX xid_events_by_time ON xid_events (ts_ms, id);
    CREATE INDEX xid_events_by_gpu ON xid_events (pci_bus_id, ts_ms, id);
    CREATE INDEX xid_events_by_code ON xid_events (xid, ts_ms, id);
    CREATE INDEX xid_events_by_action ON xid_events (action, ts_ms, id);
    CREATE TABLE watermarks (
        source_key  TEXT PRIMARY KEY,
        position    INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn`` to :data:`SCHEMA_VERSION`, each step in its own transaction.

    Returns the version found before migrating. A file from a newer xidwatch is refused
    rather than guessed at.
    """
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"store schema version {found} is newer than this xidwatch understands "
            f"({SCHEMA_VERSION}); upgrade xidwatch or point --db at another file"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[version - 1]
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
    return found
