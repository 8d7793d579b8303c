"""Errors raised by the watcher's sources and parsers; all derive from XidwatchError."""

from __future__ import annotations

from store.errors import XidwatchError

__all__ = ["CatalogError", "KmsgError", "KmsgPermissionError", "SourceError"]


class SourceError(XidwatchError):
    """A log source could not be opened or read."""


class KmsgError(SourceError):
    """/dev/kmsg misbehaved in a way reading on cannot fix."""


class KmsgPermissionError(KmsgError):
    """/dev/kmsg could not be opened for lack of privilege."""


class CatalogError(XidwatchError):
    """The packaged XID catalog is missing or malformed (a packaging bug)."""
