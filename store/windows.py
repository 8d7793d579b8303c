"""Time windows as people type them: ``24h``, ``30m``, ``7d``, or an ISO 8601 instant."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from store.errors import InvalidQueryError

__all__ = ["format_ts", "parse_duration_ms", "parse_instant_ms"]

_DURATION_RE = re.compile(r"^\s*([0-9]{1,9})\s*(s|m|h|d|w)\s*$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` -> milliseconds."""
    m = _DURATION_RE.match(text)
    if m is None:
        raise InvalidQueryError(
            f"{text!r} is not a duration: use a number and a unit, like 30m, 24h or 7d"
        )
    return int(m[1]) * _UNIT_MS[m[2]]


def parse_instant_ms(text: str, *, now_ms: int) -> int:
    """A duration back from ``now_ms`` (``24h``) or an absolute ISO 8601 time."""
    if _DURATION_RE.match(text):
        return now_ms - parse_duration_ms(text)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidQueryError(
            f"{text!r} is neither a duration (24h, 7d) nor an ISO 8601 time (2026-11-25T02:14:00Z)"
        ) from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def format_ts(ts_ms: int) -> str:
    """Milliseconds since the epoch -> ``2026-11-25T02:14:00.123Z``."""
    dt = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
