"""The node's embedded SQLite store: schema, the batched writer, and read queries.

Imports nothing else of xidwatch; every other package reaches SQLite through here.
"""

from store.db import open_for_writing, open_reader, prepare_store
from store.errors import CorruptStoreError, InvalidQueryError, StoreError, XidwatchError
from store.flood import MAX_BURST_SPAN_MS, FloodPolicy
from store.queries import MAX_PAGE, XidFilter, list_xids, summarize_xids
from store.records import (
    Checkpoint,
    EventKind,
    SourceCursor,
    StoredXid,
    XidEvent,
    XidPage,
    XidSummary,
    XidSummaryRow,
)
from store.writer import StoreWriter, WriterStats

__all__ = [
    "MAX_BURST_SPAN_MS",
    "MAX_PAGE",
    "Checkpoint",
    "CorruptStoreError",
    "EventKind",
    "FloodPolicy",
    "InvalidQueryError",
    "SourceCursor",
    "StoreError",
    "StoreWriter",
    "StoredXid",
    "WriterStats",
    "XidEvent",
    "XidFilter",
    "XidPage",
    "XidSummary",
    "XidSummaryRow",
    "XidwatchError",
    "list_xids",
    "open_for_writing",
    "open_reader",
    "prepare_store",
    "summarize_xids",
]
