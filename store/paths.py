"""Where the store lives on a node unless told otherwise."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DB_HELP", "DEFAULT_DB"]

DB_HELP = "SQLite store file."  # the --db option's help, and the run setting's description

DEFAULT_DB = Path("/var/lib/xidwatch/xidwatch.db")
"""The DaemonSet mounts the host's ``/var/lib/xidwatch`` there, so the file outlives pods."""
