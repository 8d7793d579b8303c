"""The node watcher: log sources, the XID parser and catalog, and the daemon that wires them.

Imports ``store`` and nothing above it.
"""

from watcher.catalog import UNKNOWN_ACTION, XidCatalog, XidInfo, default_catalog
from watcher.config import DaemonConfig
from watcher.daemon import Daemon, HostFacts
from watcher.errors import CatalogError, KmsgError, KmsgPermissionError, SourceError
from watcher.ingest import ReplayResult, replay_captures
from watcher.kmsg import KmsgSource, OsKmsgDevice, parse_kmsg_record
from watcher.kmsgdev import MemoryKmsgDevice
from watcher.logs import configure_logging
from watcher.pipeline import XidPipeline
from watcher.records import LogRecord, LogSource
from watcher.xid import ParsedXid, normalize_pci, parse_xid

__all__ = [
    "UNKNOWN_ACTION",
    "CatalogError",
    "Daemon",
    "DaemonConfig",
    "HostFacts",
    "KmsgError",
    "KmsgPermissionError",
    "KmsgSource",
    "LogRecord",
    "LogSource",
    "MemoryKmsgDevice",
    "OsKmsgDevice",
    "ParsedXid",
    "ReplayResult",
    "SourceError",
    "XidCatalog",
    "XidInfo",
    "XidPipeline",
    "configure_logging",
    "default_catalog",
    "normalize_pci",
    "parse_kmsg_record",
    "parse_xid",
    "replay_captures",
]
