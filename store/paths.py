"""Where the store lives on a node unless told otherwise."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_DB"]

DEFAULT_DB = Path("/var/lib/xidwatch/xidwatch.db")
"""The DaemonSet mounts the host's ``/var/lib/xidwatch`` there, so the file outlives pods."""
