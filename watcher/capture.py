"""Kernel log text captures, line by line: raw kmsg, dmesg, dmesg -T, syslog and journal.

Used by the replay and log-file sources. Each line is recognised by its shape; its
message text and, where the line says, its time are extracted. Syslog lines from anything
but the kernel are ignored (user space must not be able to forge XIDs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from store.records import SourceCursor
from watcher.kmsg import parse_kmsg_record
from watcher.records import KERNEL_FACILITY, LogRecord

__all__ = ["CaptureLine", "feed_lines", "join_multiline", "parse_capture_line", "to_record"]

_RAW_KMSG_RE = re.compile(r"^[0-9]{1,4},[0-9]{1,20},[0-9]{1,20},[^;]*;")
_DMESG_RE = re.compile(r"^\[\s*(?P<secs>[0-9]{1,10}\.[0-9]{1,9})\]\s?(?P<text>.*)$")
_DMESG_T_RE = re.compile(
    r"^\[(?P<when>[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]{1,2} [0-9:]{8} [0-9]{4})\]\s?(?P<text>.*)$"
)
_SYSLOG_RE = re.compile(
    r"^(?P<when>[A-Z][a-z]{2} [ 0-9]{1,2} [0-9:]{8}(?:\.[0-9]+)?) (?P<host>\S+) "
    r"(?P<tag>[^:\s]+): (?P<text>.*)$"
)
_SYSLOG_ISO_RE = re.compile(
    r"^(?P<when>[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]{8,}(?:Z|[+-][0-9]{2}:?[0-9]{2})?) "
    r"(?P<host>\S+) (?P<tag>[^:\s]+): (?P<text>.*)$"
)
_INNER_TS_RE = re.compile(r"^\[\s*[0-9]{1,10}\.[0-9]{1,9}\]\s?")
_CALLER_RE = re.compile(r"^\[\s*[TC][0-9]{1,7}\]\s?")
_CONTINUATION_RE = re.compile(r"^(?:NVRM: )?\s*(?:\(PCI ID|fallen off the bus|installed in this)")


@dataclass(frozen=True, slots=True)
class CaptureLine:
    """One recognised line: its kernel message, and its time when the line carries one.

    ``mono_ms`` is milliseconds since boot (dmesg and raw kmsg); ``wall_ms`` is wall-clock
    time (dmesg -T, syslog). ``kernel`` is False for lines another program logged.
    """

    text: str
    kernel: bool = True
    wall_ms: int | None = None
    mono_ms: int | None = None
    seq: int | None = None


def parse_capture_line(line: str, *, now_ms: int, tz: timezone | None = None) -> CaptureLine:
    """Recognise one line of a capture.

    Syslog's year-less stamps take the year of ``now_ms``, or the year before when that
    would put them more than a day in the future (a December line read in January).
    """
    line = line.rstrip("\r\n")
    if _RAW_KMSG_RE.match(line):
        record = parse_kmsg_record(line.encode("utf-8", "replace"))
        if record is not None:
            return CaptureLine(
                record.text,
                record.facility == KERNEL_FACILITY,
                mono_ms=record.ts_usec // 1000,
                seq=record.seq,
            )
    if (m := _DMESG_RE.match(line)) is not None:
        return CaptureLine(_strip_caller(m["text"]), mono_ms=_seconds_to_ms(m["secs"]))
    if (m := _DMESG_T_RE.match(line)) is not None:
        when = _parse_time(m["when"], "%a %b %d %H:%M:%S %Y", tz)
        return CaptureLine(_strip_caller(m["text"]), wall_ms=when)
    for pattern, fmt in ((_SYSLOG_ISO_RE, None), (_SYSLOG_RE, "%b %d %H:%M:%S %Y")):
        if (m := pattern.match(line)) is not None:
            text = _strip_caller(_INNER_TS_RE.sub("", m["text"], count=1))
            if fmt is None:
                when = _parse_iso(m["when"], tz)
            else:
                when = _syslog_time(m["when"].split(".")[0], fmt, tz, now_ms)
            return CaptureLine(text, kernel=m["tag"] == "kernel", wall_ms=when)
    return CaptureLine(_strip_caller(line))


def join_multiline(lines: Iterable[tuple[int, CaptureLine]]) -> Iterator[tuple[int, CaptureLine]]:
    """Rejoin the driver's three-line "has fallen off the bus" message into one line.

    In kmsg it is one record; dmesg and syslog print it as three lines. Input and output
    are ``(position, line)`` pairs; a joined message keeps the first line's time and takes
    the position of its last line. A line that is not a continuation ends the held
    message and passes through unchanged.
    """
    held: list[CaptureLine] = []
    held_at = 0
    for position, line in lines:
        if held and _CONTINUATION_RE.match(line.text):
            held.append(line)
            held_at = position
            if "fallen off the bus" in line.text:
                yield held_at, _joined(held)
                held = []
            continue
        if held:
            yield held_at, _joined(held)
            held = []
        text = line.text
        if text.startswith("NVRM: The NVIDIA GPU ") and "fallen off the bus" not in text:
            held, held_at = [line], position
            continue
        yield position, line
    if held:
        yield held_at, _joined(held)


def feed_lines(
    numbered: Iterable[tuple[int, str]],
    *,
    source: str,
    source_key: str,
    boot_wall_ms: int | None,
    now_ms: int,
    sink: Callable[[LogRecord], None],
) -> int:
    """Parse ``(position, line)`` pairs, rejoin multi-line messages, hand each record on.

    The one path from a text capture to records, shared by replay and file tailing.
    Returns how many records were handed on.
    """
    parsed = ((n, parse_capture_line(text, now_ms=now_ms)) for n, text in numbered)
    count = 0
    for position, line in join_multiline(parsed):
        cursor = SourceCursor(source_key, position)
        sink(
            to_record(
                line, source=source, cursor=cursor, boot_wall_ms=boot_wall_ms, received_ms=now_ms
            )
        )
        count += 1
    return count


def _joined(lines: list[CaptureLine]) -> CaptureLine:
    return replace(lines[0], text="\n".join(line.text for line in lines))


def to_record(
    line: CaptureLine,
    *,
    source: str,
    cursor: SourceCursor,
    boot_wall_ms: int | None,
    received_ms: int,
) -> LogRecord:
    """A LogRecord for a capture line; a non-kernel line becomes text-less (checkpoint)."""
    ts_ms = line.wall_ms
    if ts_ms is None and line.mono_ms is not None and boot_wall_ms is not None:
        ts_ms = boot_wall_ms + line.mono_ms
    return LogRecord(
        text=line.text if line.kernel else "",
        source=source,
        received_ms=received_ms,
        ts_ms=ts_ms,
        facility=KERNEL_FACILITY if line.kernel else -1,
        seq=line.seq,
        cursor=cursor,
    )


def _syslog_time(stamp: str, fmt: str, tz: timezone | None, now_ms: int) -> int | None:
    year = datetime.fromtimestamp(now_ms / 1000, tz).year
    when = _parse_time(f"{stamp} {year}", fmt, tz)
    if when is not None and when > now_ms + 86_400_000:
        when = _parse_time(f"{stamp} {year - 1}", fmt, tz)
    return when


def _seconds_to_ms(text: str) -> int:
    """``1234.567890`` -> 1234567, exactly as kmsg's ``ts_usec // 1000`` would give."""
    whole, _, frac = text.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def _strip_caller(text: str) -> str:
    return _CALLER_RE.sub("", text, count=1)


def _parse_time(text: str, fmt: str, tz: timezone | None) -> int | None:
    try:
        parsed = datetime.strptime(" ".join(text.split()), fmt)
    except ValueError:
        return None
    try:
        return _ms(parsed.replace(tzinfo=tz) if tz is not None else parsed.astimezone())
    except (ValueError, OverflowError, OSError):
        return None


def _parse_iso(text: str, tz: timezone | None) -> int | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    try:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=tz) if tz is not None else parsed.astimezone()
    except (ValueError, OverflowError, OSError):
        return None
    return _ms(parsed)


def _ms(dt: datetime) -> int | None:
    """Epoch milliseconds, or None for a stamp the platform cannot place (year 1, 9999)."""
    try:
        return int(dt.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return None
