"""Numbered schema migrations, applied in order at open; ``PRAGMA user_version`` records them.

A migration is never edited once released: a change to the schema is a new entry.
``PRAGMA application_id`` marks the file as an xidwatch store (set on every store a writer
opens, old ones included), so a file of anyone else's is never taken for one.
"""

from __future__ import annotations

import hashlib
import sqlite3

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "ROLLUP_TIERS",
    "SCHEMA_VERSION",
    "migrate",
    "normalize_record_text",
    "record_key",
]

APPLICATION_ID = 0x58494457
"""``PRAGMA application_id`` of an xidwatch store: "XIDW" in ASCII."""

# Frozen copies of the column lists migration 2 was released with (the live registry in
# store.telemetry may grow; a later migration then adds columns).
_V2_RAW = [
    "temp_c",
    "power_mw",
    "power_limit_mw",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "util_gpu_pct",
    "util_mem_pct",
    "mem_used_mib",
    "mem_total_mib",
    "ecc_corr_vol",
    "ecc_unc_vol",
    "ecc_corr_agg",
    "ecc_unc_agg",
    "remap_corr",
    "remap_unc",
    "remap_pending",
    "remap_failure",
    "throttle_reasons",
    "pcie_replays",
    "nvlink_active",
    "nvlink_errors",
    "processes",
]
# Rollups summarize every raw column but the throttle bitmask, which becomes three flags.
_THROTTLE_AT = _V2_RAW.index("throttle_reasons")
_V2_ROLLUP = [
    *_V2_RAW[:_THROTTLE_AT],
    "thr_power",
    "thr_thermal",
    "thr_hw_slowdown",
    *_V2_RAW[_THROTTLE_AT + 1 :],
]
ROLLUP_TIERS: tuple[tuple[str, int], ...] = (("rollup_1m", 60_000), ("rollup_1h", 3_600_000))


def _v2() -> str:
    raw = ",\n".join(f"    {c} INTEGER" for c in _V2_RAW)
    agg = ",\n".join(
        f"    {c}_min INTEGER, {c}_max INTEGER, {c}_sum INTEGER, {c}_n INTEGER" for c in _V2_ROLLUP
    )
    rollups = "".join(
        f"CREATE TABLE {table} (\n    gpu INTEGER NOT NULL,\n    ts INTEGER NOT NULL,\n"
        f"    throttle_reasons_any INTEGER,\n{agg},\n    PRIMARY KEY (gpu, ts)\n) WITHOUT ROWID;\n"
        for table, _ in ROLLUP_TIERS
    )
    return f"""
    CREATE TABLE gpus (
        id                    INTEGER PRIMARY KEY,
        uuid                  TEXT NOT NULL UNIQUE,
        idx                   INTEGER NOT NULL,
        name                  TEXT NOT NULL,
        pci_bus_id            TEXT NOT NULL,
        serial                TEXT,
        driver_version        TEXT,
        cuda_version          TEXT,
        slowdown_temp_c       INTEGER,
        shutdown_temp_c       INTEGER,
        power_limit_default_w REAL,
        power_limit_min_w     REAL,
        power_limit_max_w     REAL,
        memory_total_bytes    INTEGER,
        ecc_enabled           INTEGER,
        mig_enabled           INTEGER,
        first_seen_ms         INTEGER NOT NULL,
        last_seen_ms          INTEGER NOT NULL,
        lost_since_ms         INTEGER
    );
    CREATE INDEX gpus_by_pci ON gpus (pci_bus_id);
    CREATE TABLE samples (
        gpu INTEGER NOT NULL,
        ts  INTEGER NOT NULL,
{raw},
        PRIMARY KEY (gpu, ts)
    ) WITHOUT ROWID;
{rollups}
    CREATE TABLE gpu_processes (
        gpu           INTEGER NOT NULL,
        pid           INTEGER NOT NULL,
        first_ts      INTEGER NOT NULL,
        last_ts       INTEGER NOT NULL,
        used_mib      INTEGER,
        max_used_mib  INTEGER,
        name          TEXT,
        PRIMARY KEY (gpu, pid, first_ts)
    ) WITHOUT ROWID;
    CREATE INDEX gpu_processes_by_time ON gpu_processes (gpu, last_ts);
    CREATE TABLE gpu_events (
        id      INTEGER PRIMARY KEY,
        ts_ms   INTEGER NOT NULL,
        gpu     INTEGER NOT NULL,
        state   TEXT NOT NULL CHECK (state IN ('lost', 'recovered')),
        detail  TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX gpu_events_by_gpu ON gpu_events (gpu, ts_ms);
    """


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
    # 2: GPU inventory, raw samples, 1 m and 1 h rollups, processes seen, GPU lost/recovered.
    _v2(),
    # 3: operator acknowledgements ("I have dealt with this GPU's errors up to now"),
    # XIDs by kind: an SXid listing on a node without NVSwitches otherwise walks the whole
    # time index (300 ms on a million events; 0.1 ms with it), and the mark of a synthetic
    # XID written by `xidwatch inject`.
    """
    CREATE INDEX xid_events_by_kind ON xid_events (kind, ts_ms, id);
    CREATE TABLE acks (
        id          INTEGER PRIMARY KEY,
        ts_ms       INTEGER NOT NULL,
        gpu_uuid    TEXT,
        pci_bus_id  TEXT NOT NULL,
        who         TEXT NOT NULL,
        reason      TEXT NOT NULL
    );
    CREATE INDEX acks_by_gpu ON acks (pci_bus_id, ts_ms);
    ALTER TABLE xid_events ADD COLUMN injected INTEGER NOT NULL DEFAULT 0
        CHECK (injected IN (0, 1));
    """,
    # 4: Kubernetes attribution. The pod (and container) of an XID's process and of each GPU
    # process, and which pods held each GPU when ("which pod had GPU 3 at 02:14"), as spans
    # like gpu_processes: first and last tick the pod was seen holding the GPU.
    """
    ALTER TABLE xid_events ADD COLUMN namespace TEXT;
    ALTER TABLE xid_events ADD COLUMN pod TEXT;
    ALTER TABLE xid_events ADD COLUMN container TEXT;
    ALTER TABLE gpu_processes ADD COLUMN namespace TEXT;
    ALTER TABLE gpu_processes ADD COLUMN pod TEXT;
    ALTER TABLE gpu_processes ADD COLUMN container TEXT;
    CREATE TABLE gpu_pods (
        gpu        INTEGER NOT NULL,
        namespace  TEXT NOT NULL,
        pod        TEXT NOT NULL,
        first_ts   INTEGER NOT NULL,
        last_ts    INTEGER NOT NULL,
        uid        TEXT,
        source     TEXT NOT NULL CHECK (source IN ('annotation', 'whole-node', 'process')),
        PRIMARY KEY (gpu, namespace, pod, first_ts)
    ) WITHOUT ROWID;
    CREATE INDEX gpu_pods_by_time ON gpu_pods (gpu, last_ts);
    """,
    # 5: replay is idempotent by content. The identity (see record_key) of every kernel
    # record stored from a text (captures, tailed files; kmsg has UNIQUE (boot_id, seq)), on
    # its own row or folded into a burst, with its time: the writer skips a record whose key
    # is here, and drops keys older than the oldest event it keeps. Rows stored before this
    # get their keys where they are known (not bursts: their first record is not kept).
    """
    CREATE TABLE xid_keys (
        content_key BLOB PRIMARY KEY,
        ts_ms       INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX xid_keys_by_time ON xid_keys (ts_ms);
    INSERT OR IGNORE INTO xid_keys (content_key, ts_ms)
    SELECT xidwatch_record_key(boot_id, seq, ts_ms, raw, nth), ts_ms FROM (
        SELECT boot_id, seq, ts_ms, raw, row_number() OVER (
            PARTITION BY xidwatch_record_key(boot_id, seq, ts_ms, raw, 0) ORDER BY id
        ) - 1 AS nth
        FROM xid_events
        WHERE burst = 0 AND injected = 0 AND raw != '' AND (boot_id IS NULL OR seq IS NULL)
    );
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
    conn.create_function("xidwatch_record_key", 5, _sql_record_key, deterministic=True)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[version - 1]
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
    if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    return found


def normalize_record_text(text: str) -> str:
    """A kernel record's text as its identity sees it: line endings and trailing blanks gone."""
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip()


def record_key(boot_id: str | None, seq: int | None, ts_ms: int, text: str, nth: int = 0) -> bytes:
    """The identity of one kernel record, whichever capture or source it arrived in.

    A record with a boot id and a sequence number (kmsg) is that pair and its text; its
    wall time is left out, as it is derived afresh on each read. Any other record is its
    time (and sequence number, if the capture has one) and its normalised text; ``nth``
    tells apart identical lines at the same millisecond of one stream (0 for the first).
    """
    when = "" if boot_id is not None and seq is not None else str(ts_ms)
    parts = (boot_id or "", "" if seq is None else str(seq), when, str(nth))
    head = "\x1f".join(parts)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(head.encode())
    digest.update(b"\x1e")
    digest.update(normalize_record_text(text).encode("utf-8", "surrogatepass"))
    return digest.digest()


def _sql_record_key(boot_id: str | None, seq: int | None, ts_ms: int, raw: str, nth: int) -> bytes:
    return record_key(boot_id, seq, ts_ms, raw, nth)
