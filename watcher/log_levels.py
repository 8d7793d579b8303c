"""The log levels xidwatch accepts, by name, and the one it starts at.

Apart from :mod:`watcher.logs` so that a command can check ``--log-level`` without
importing structlog (which brings asyncio and rich: more than ``xidwatch explain`` costs).
"""

from __future__ import annotations

__all__ = ["DEFAULT_LOG_LEVEL", "LOG_LEVELS", "LOG_LEVELS_TEXT"]

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "info"
LOG_LEVELS_TEXT = f"{', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}"  # for help and errors
