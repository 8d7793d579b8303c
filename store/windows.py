"""Time windows as people type them: ``24h``, ``30m``, ``7d``, or an ISO 8601 instant."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from store.errors import InvalidQueryError

__all__ = ["check_window", "format_ts", "parse_duration_ms", "parse_instant_ms"]

_DURATION_RE = re.compile(r"^\s*([0-9]{1,9})\s*(s|m|h|d|w)\s*$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration_ms(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` -> milliseconds."""
    m = _DURATION_RE.match(text)
    if m is None:
        raise InvalidQueryError(
            f"{text!r} is not a duration: use a number and a unit, like 30m, 24h or 7d"
        )
    return int(m[1]) * _UNIT_MS[m[2]]


def parse_instant_ms(text: str, *, now_ms: int) -> int:
    """A duration back from ``now_ms`` (``24h``) or an absolute ISO 8601 time.

    An instant before the Unix epoch is an error naming the value: nothing is stored then.
    """
    if _DURATION_RE.match(text):
        return _not_before_epoch(now_ms - parse_duration_ms(text), text)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidQueryError(
            f"{text!r} is neither a duration (24h, 7d) nor an ISO 8601 time (2026-11-25T02:14:00Z)"
        ) from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _not_before_epoch((parsed - _EPOCH) // timedelta(milliseconds=1), text)


def check_window(since_ms: int | None, until_ms: int | None) -> None:
    """Raise InvalidQueryError when ``[since_ms, until_ms)`` is inverted or empty.

    Every reader of stored history checks its window here, so a swapped pair of bounds is
    an error that says so rather than an empty answer. None is an open bound.
    """
    if since_ms is None or until_ms is None or since_ms < until_ms:
        return
    if since_ms == until_ms:
        raise InvalidQueryError(
            f"since ({_safe_ts(since_ms)}) is the same instant as until: the window is empty; "
            "give until a later time"
        )
    raise InvalidQueryError(
        f"since ({_safe_ts(since_ms)}) is after until ({_safe_ts(until_ms)}): "
        "the window would be empty; swap them"
    )


def format_ts(ts_ms: int) -> str:
    """Milliseconds since the epoch -> ``2026-11-25T02:14:00.123Z`` (always a 4-digit year)."""
    dt = _EPOCH + timedelta(milliseconds=ts_ms)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def _safe_ts(ts_ms: int) -> str:
    """``format_ts`` for a bound in a message; a value no calendar holds stays a number."""
    try:
        return format_ts(ts_ms)
    except OverflowError:
        return f"{ts_ms} ms"


def _not_before_epoch(ts_ms: int, text: str) -> int:
    if ts_ms < 0:
        raise InvalidQueryError(
            f"{text!r} is before 1970-01-01T00:00:00Z (the Unix epoch): nothing is recorded "
            "that early; give a later time"
        )
    return ts_ms
