"""The one exception root of xidwatch, and the errors the store raises.

Every package's errors derive from :class:`XidwatchError`, so a caller (the CLI, an MCP
tool) can catch one type and show its message, which always says what to do next.
"""

from __future__ import annotations

__all__ = [
    "CorruptStoreError",
    "InvalidQueryError",
    "StoreError",
    "XidwatchError",
]


class XidwatchError(Exception):
    """Root of every error xidwatch raises on purpose."""


class StoreError(XidwatchError):
    """The SQLite store could not be opened, read or written."""


class CorruptStoreError(StoreError):
    """The database file is not a readable SQLite store."""


class InvalidQueryError(StoreError):
    """A query argument (window, cursor, limit) is out of range or malformed."""
