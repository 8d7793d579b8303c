"""Kernel log text captures, line by line: raw kmsg, dmesg, dmesg -T, syslog and journal.

Used by the replay and log-file sources. Each line is recognised by its shape; its
message text and, where the line says, its time are extracted. Syslog lines from anything
but the kernel are ignored (user space must not be able to forge XIDs). Multi-line kernel
records (printed with indented continuation lines, or ``#012`` escapes) are rejoined.

Reading a capture file is bounded: a line keeps at most ``LINE_MAX_BYTES`` (the rest is
skipped while reading and the text says how much was cut), a gzip capture is streamed
and refused past a decompression cap, and a truncated or corrupt gzip yields what it held.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timezone
from pathlib import Path
from types import TracebackType

import structlog

from store.records import SourceCursor
from watcher.errors import SourceError
from watcher.kernel.kmsg import parse_kmsg_record
from watcher.records import KERNEL_FACILITY, LogRecord

__all__ = [
    "CHUNK_BYTES",
    "FUTURE_SLACK_MS",
    "LINE_MAX_BYTES",
    "MAX_DECOMPRESSED_BYTES",
    "RECORD_MAX_CHARS",
    "CaptureFeeder",
    "CaptureFile",
    "CaptureLine",
    "CaptureTimeError",
    "CaptureTooLargeError",
    "LineJoiner",
    "check_capture_times",
    "cut_text",
    "feed_lines",
    "join_multiline",
    "open_capture",
    "parse_capture_line",
    "to_record",
]

log = structlog.get_logger("watcher.kernel.capture")

LINE_MAX_BYTES = 4096  # of one line kept; the rest is skipped and counted
RECORD_MAX_CHARS = 8192  # of a record rejoined from several lines
RECORD_MAX_LINES = 32
CHUNK_BYTES = 1 << 20  # lines handed on per read
MAX_DECOMPRESSED_BYTES = 256 << 20  # past this, a gzip capture must also compress sanely
MAX_COMPRESSION_RATIO = 100  # kernel logs compress 5-20:1; a gzip bomb 1000:1
FUTURE_SLACK_MS = 60_000  # clock skew tolerated before a stamp counts as in the future

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
_CONTINUATION_RE = re.compile(
    r"^\s*(?:NVRM:\s*)?(?:\(PCI ID|fallen off the bus|installed in this)", re.I
)
_FALLEN_FIRST_RE = re.compile(r"^\s*NVRM:\s*The NVIDIA GPU ", re.I)
_SYSLOG_ESCAPES = (("#012", "\n"), ("#011", "\t"))  # rsyslog's control-character escapes
_MONO_DMESG_RE = re.compile(r"^\[\s*([0-9]{1,10}\.[0-9]{1,9})\]")
_MONO_KMSG_RE = re.compile(r"^[0-9]{1,4},[0-9]{1,20},([0-9]{1,20}),")


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
            text = _strip_caller(_INNER_TS_RE.sub("", _unescape_syslog(m["text"]), count=1))
            if fmt is None:
                when = _parse_iso(m["when"], tz)
            else:
                when = _syslog_time(m["when"].split(".")[0], fmt, tz, now_ms)
            return CaptureLine(text, kernel=m["tag"] == "kernel", wall_ms=when)
    return CaptureLine(_strip_caller(line))


def join_multiline(lines: Iterable[tuple[int, CaptureLine]]) -> Iterator[tuple[int, CaptureLine]]:
    """Rejoin multi-line kernel records; see :class:`LineJoiner`."""
    joiner = LineJoiner()
    for position, line in lines:
        yield from joiner.push(position, line)
    yield from joiner.finish()


class LineJoiner:
    """Rejoins the lines of one kernel record that a capture printed as several.

    Two shapes: ``dmesg`` and ``journalctl`` print a multi-line record's continuation lines
    indented and without a prefix of their own (joined whatever they say; under a raw kmsg
    record they are its dictionary and only absorbed); and the driver's three-line
    "fallen off the bus" message with every line prefixed (``dmesg`` flattening, syslog).
    A joined record keeps the first line's time and takes the position of its last line.
    Every line is held until the next one shows whether it continues, so call
    :meth:`finish` at the end of input; state carries across :meth:`push` calls, so a
    record split between two reads is still one record.
    """

    def __init__(self) -> None:
        self._held: list[CaptureLine] = []
        self._held_at = 0
        self._chars = 0

    def push(self, position: int, line: CaptureLine) -> list[tuple[int, CaptureLine]]:
        """Take one line; return the records it completes, in order."""
        if self._held and self._continues(line):
            first = self._held[0]
            self._held_at = position
            if first.seq is not None and _is_bare(line):
                return []  # a kmsg dictionary line (SUBSYSTEM=..., DEVICE=...)
            text = line.text.strip()
            self._held.append(replace(line, text=text))
            self._chars += len(text) + 1
            if _FALLEN_FIRST_RE.match(first.text) and "fallen off the bus" in text:
                return [self._take()]
            return []
        out = [self._take()] if self._held else []
        self._held, self._held_at, self._chars = [line], position, len(line.text)
        return out

    def finish(self) -> list[tuple[int, CaptureLine]]:
        """The record still held at the end of input, if any."""
        return [self._take()] if self._held else []

    def _continues(self, line: CaptureLine) -> bool:
        if len(self._held) >= RECORD_MAX_LINES or self._chars + len(line.text) > RECORD_MAX_CHARS:
            return False
        if _is_bare(line) and line.text[:1] in (" ", "\t") and line.text.strip():
            return True
        return bool(_FALLEN_FIRST_RE.match(self._held[0].text)) and bool(
            _CONTINUATION_RE.match(line.text)
        )

    def _take(self) -> tuple[int, CaptureLine]:
        held, self._held = self._held, []
        if len(held) == 1:
            return self._held_at, held[0]
        return self._held_at, replace(held[0], text="\n".join(line.text for line in held))


class CaptureFeeder:
    """Turns numbered capture lines into records for ``sink``: the one path from text to records.

    Lines are cut to ``line_max_bytes`` (saying so), rejoined (:class:`LineJoiner`) across
    calls, and dated. Call :meth:`finish` at the end of the capture.
    """

    def __init__(
        self,
        *,
        source: str,
        source_key: str,
        boot_wall_ms: int | None,
        sink: Callable[[LogRecord], None],
        line_max_bytes: int = LINE_MAX_BYTES,
    ) -> None:
        self._source = source
        self._source_key = source_key
        self._boot_wall_ms = boot_wall_ms
        self._sink = sink
        self._line_max = line_max_bytes
        self._joiner = LineJoiner()

    def feed(self, numbered: Iterable[tuple[int, str]], *, now_ms: int) -> int:
        """Parse ``(position, line)`` pairs; returns how many records were handed on."""
        count = 0
        for position, text in numbered:
            line = parse_capture_line(cut_text(text, self._line_max), now_ms=now_ms)
            count += self._emit(self._joiner.push(position, line), now_ms)
        return count

    def finish(self, *, now_ms: int) -> int:
        """Hand on the record still held; returns how many (0 or 1)."""
        return self._emit(self._joiner.finish(), now_ms)

    def _emit(self, done: list[tuple[int, CaptureLine]], now_ms: int) -> int:
        for position, line in done:
            cursor = SourceCursor(self._source_key, position)
            self._sink(
                to_record(
                    line,
                    source=self._source,
                    cursor=cursor,
                    boot_wall_ms=self._boot_wall_ms,
                    received_ms=now_ms,
                )
            )
        return len(done)


def feed_lines(
    numbered: Iterable[tuple[int, str]],
    *,
    source: str,
    source_key: str,
    boot_wall_ms: int | None,
    now_ms: int,
    sink: Callable[[LogRecord], None],
) -> int:
    """Feed one batch of lines, complete in itself (a record never spans two calls)."""
    feeder = CaptureFeeder(
        source=source, source_key=source_key, boot_wall_ms=boot_wall_ms, sink=sink
    )
    return feeder.feed(numbered, now_ms=now_ms) + feeder.finish(now_ms=now_ms)


def cut_text(text: str, max_bytes: int = LINE_MAX_BYTES) -> str:
    """``text`` with at most ``max_bytes`` of it kept, ending ``… [cut: N bytes]`` if cut."""
    if len(text) <= max_bytes // 4:
        return text  # fast path: cannot exceed the cap even as 4-byte characters
    data = text.rstrip("\r\n").encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    return _cut(data[:max_bytes], len(data) - max_bytes)


def _cut(kept: bytes, dropped: int) -> str:
    return kept.decode("utf-8", "ignore") + f"\u2026 [cut: {dropped} bytes]"


def _is_bare(line: CaptureLine) -> bool:
    """A line with no prefix the capture's format gives each record (time, sequence)."""
    return line.mono_ms is None and line.wall_ms is None and line.seq is None


def _unescape_syslog(text: str) -> str:
    if "#01" in text:
        for escaped, char in _SYSLOG_ESCAPES:
            text = text.replace(escaped, char)
    return text


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


# --- reading capture files --------------------------------------------------------------


class CaptureTooLargeError(SourceError):
    """A compressed capture expands past the decompression cap (a gzip bomb, or too big)."""


class CaptureTimeError(SourceError):
    """A capture's stamps would date events in the future; nothing of it is stored."""


class _GzipStream(io.RawIOBase):
    """Decompresses a gzip file as it is read, in bounded memory, stopping at damage.

    A truncated or corrupt stream ends early (``stopped`` says where) instead of raising;
    output past ``max_bytes`` at a ratio above ``max_ratio`` raises CaptureTooLargeError.
    Concatenated members are read one after the other, as ``gunzip`` does.
    """

    def __init__(self, raw: io.BufferedReader, *, name: str, max_bytes: int, max_ratio: int):
        self._raw = raw
        self._name = name
        self._max_bytes = max_bytes
        self._max_ratio = max_ratio
        self._d = zlib.decompressobj(31)
        self._done = False
        self.compressed_bytes = 0
        self.decompressed_bytes = 0
        self.stopped: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while not self._done:
            out = self._next(len(view))
            if out:
                self._count(len(out))
                view[: len(out)] = out
                return len(out)
        return 0

    def close(self) -> None:
        self._raw.close()
        super().close()

    def _next(self, size: int) -> bytes:
        d = self._d
        data = d.unused_data if d.eof else d.unconsumed_tail
        if not data:
            data = self._raw.read(1 << 16)
            self.compressed_bytes += len(data)
        if not data:
            self._done = True
            if not d.eof:
                self._stop("the gzip stream ends early (truncated file)")
                return d.flush()
            return b""
        if d.eof:
            if not data.startswith(b"\x1f\x8b"):
                self._done = True
                if data.strip(b"\0"):
                    self._stop("data after the gzip stream is not gzip")
                return b""
            self._d = d = zlib.decompressobj(31)
        try:
            return d.decompress(data, size)
        except zlib.error as e:
            self._done = True
            self._stop(f"the gzip data is corrupt ({e})")
            return b""

    def _stop(self, why: str) -> None:
        self.stopped = f"{why}, after {self.compressed_bytes} compressed bytes"

    def _count(self, n: int) -> None:
        self.decompressed_bytes += n
        total = self.decompressed_bytes
        if total > self._max_bytes and total > self._max_ratio * max(self.compressed_bytes, 1):
            raise CaptureTooLargeError(
                f"{self._name}: stopped reading at {total >> 20} MiB decompressed from "
                f"{self.compressed_bytes} compressed bytes (over {self._max_ratio}:1; the cap "
                f"is {self._max_bytes >> 20} MiB at such ratios): not a kernel log, or a "
                "gzip bomb. If it is a genuine capture, decompress it and replay the plain file"
            )


class CaptureFile:
    """A capture file opened for reading, plain or gzip (recognised by its magic bytes).

    :meth:`read` gives bytes (for a digest); :meth:`read_lines` numbered lines with at most
    ``line_max_bytes`` of each held in memory. ``stopped`` says where and why a damaged
    gzip ended early; :meth:`read_lines` logs it once, when the end is reached (unless
    ``quiet``).
    """

    def __init__(
        self,
        path: Path,
        *,
        line_max_bytes: int = LINE_MAX_BYTES,
        max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
        max_ratio: int = MAX_COMPRESSION_RATIO,
        quiet: bool = False,
    ) -> None:
        self.path = path
        self.lines = 0  # lines read so far; the next line's position is lines + 1
        self._line_max = line_max_bytes
        raw = path.open("rb")
        self._gzip: _GzipStream | None = None
        if raw.peek(2)[:2] == b"\x1f\x8b":
            self._gzip = _GzipStream(
                raw, name=str(path), max_bytes=max_decompressed_bytes, max_ratio=max_ratio
            )
            self._f: io.BufferedReader = io.BufferedReader(self._gzip, 1 << 16)
        else:
            self._f = raw
        self._warned = quiet  # a pre-scan leaves the warning to the pass that stores
        self._partial = 0

    @property
    def stopped(self) -> str | None:
        return None if self._gzip is None else self._gzip.stopped

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def read_lines(self, max_bytes: int = CHUNK_BYTES) -> list[tuple[int, str]]:
        """The next lines, about ``max_bytes`` of them, as ``(line number, text)``; [] at end."""
        out: list[tuple[int, str]] = []
        size = 0
        while size < max_bytes and (line := self._readline()) is not None:
            text, taken, whole = line
            if not whole and self.stopped is not None:
                self._partial = taken  # the last line a damaged gzip gave is cut short
                break
            self.lines += 1
            out.append((self.lines, text))
            size += taken
        if not out and self.stopped is not None and not self._warned:
            self._warned = True
            log.warning(
                "capture_stopped_early",
                path=str(self.path),
                after_line=self.lines,
                why=self.stopped,
                partial_line_bytes_dropped=self._partial,
                hint="the lines before it were read; the rest of the file is lost",
            )
        return out

    def _readline(self) -> tuple[str, int, bool] | None:
        """One line cut to the cap while reading, the bytes it took, whether it ended."""
        data = self._f.readline(self._line_max + 1)
        if not data:
            return None
        if len(data) <= self._line_max or data.endswith(b"\n"):
            return data.decode("utf-8", "replace"), len(data), data.endswith(b"\n")
        dropped = len(data) - self._line_max
        ended = False
        while more := self._f.readline(1 << 16):
            if more.endswith(b"\n"):
                dropped += len(more) - 1
                ended = True
                break
            dropped += len(more)
        return _cut(data[: self._line_max], dropped), self._line_max + dropped, ended

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> CaptureFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_capture(
    path: Path,
    *,
    line_max_bytes: int = LINE_MAX_BYTES,
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
) -> CaptureFile:
    """Open a capture for reading, plain or gzip; see :class:`CaptureFile`."""
    return CaptureFile(
        path, line_max_bytes=line_max_bytes, max_decompressed_bytes=max_decompressed_bytes
    )


def check_capture_times(
    path: Path,
    *,
    boot_wall_ms: int | None,
    now_ms: int,
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
) -> None:
    """Raise CaptureTimeError if a line of the capture would be dated in the future.

    Seconds-since-boot stamps (dmesg, raw kmsg) are dated from ``boot_wall_ms``; a wrong
    boot (this machine's, for a capture from another) shows as stamps past ``now_ms``.
    Wall-clock stamps are checked on the lines that can become events.
    """
    limit = now_ms + FUTURE_SLACK_MS
    with CaptureFile(path, max_decompressed_bytes=max_decompressed_bytes, quiet=True) as f:
        while numbered := f.read_lines():
            for position, text in numbered:
                ts_ms = _stamp_ms(text, boot_wall_ms, now_ms)
                if ts_ms is not None and ts_ms > limit:
                    raise CaptureTimeError(_future_message(path, position, text, ts_ms, now_ms))


def _stamp_ms(text: str, boot_wall_ms: int | None, now_ms: int) -> int | None:
    """The time a line would be stored with, looked at cheaply (no parse for most lines)."""
    m = _MONO_DMESG_RE.match(text)
    if m is not None:
        return None if boot_wall_ms is None else boot_wall_ms + _seconds_to_ms(m[1])
    m = _MONO_KMSG_RE.match(text)
    if m is not None:
        return None if boot_wall_ms is None else boot_wall_ms + int(m[1]) // 1000
    if "NVRM" in text or "SXid" in text:
        return parse_capture_line(text, now_ms=now_ms).wall_ms
    return None


def _future_message(path: Path, position: int, text: str, ts_ms: int, now_ms: int) -> str:
    when = datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ahead_h = (ts_ms - now_ms) / 3_600_000
    where = f"{path}: line {position} would be dated {when}, {ahead_h:.1f} h in the future"
    if _MONO_DMESG_RE.match(text) or _MONO_KMSG_RE.match(text):
        return (
            f"{where}: its seconds-since-boot stamps are not from this machine's current "
            "boot. Pass --boot-time with the captured machine's boot time (ISO 8601); "
            "nothing was stored"
        )
    return (
        f"{where}: the capture's clock or time zone is ahead of this machine's; nothing was stored"
    )
