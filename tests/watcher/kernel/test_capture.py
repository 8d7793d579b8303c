"""Capture lines (raw kmsg, dmesg, dmesg -T, syslog, journal): shapes, times, joining."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.records import SourceCursor
from watcher.kernel.capture import (
    RECORD_MAX_CHARS,
    CaptureLine,
    LineJoiner,
    cut_text,
    join_multiline,
    parse_capture_line,
    to_record,
)
from watcher.kernel.parser import parse_xid
from watcher.records import KERNEL_FACILITY

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
XID_TEXT = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus."


def _utc_ms(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> int:
    """Milliseconds since the epoch of a UTC wall-clock time."""
    when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return (when - EPOCH) // timedelta(milliseconds=1)


NOW_MS = _utc_ms(2026, 11, 25, 12, 0, 0)
STAMP_MS = _utc_ms(2026, 11, 24, 2, 14, 7)


def _parse(line: str, *, now_ms: int = NOW_MS) -> CaptureLine:
    return parse_capture_line(line, now_ms=now_ms, tz=UTC)


# --- raw kmsg -----------------------------------------------------------------------------


def test_a_raw_kmsg_kernel_record_gives_seq_monotonic_ms_and_text() -> None:
    line = _parse(f"6,1234,5678901,c;{XID_TEXT}\n")

    assert line == CaptureLine(XID_TEXT, kernel=True, mono_ms=5678, seq=1234)


def test_a_raw_kmsg_user_facility_record_is_not_kernel() -> None:
    line = _parse(f"12,77,5678901,-;{XID_TEXT}")

    assert line.kernel is False
    assert line.seq == 77


def test_a_raw_kmsg_multiline_record_has_its_escaped_newlines_restored() -> None:
    line = _parse(
        r"4,900,123456789,-;NVRM: The NVIDIA GPU 0000:18:00.0\x0a(PCI ID: 10de:2901) installed "
        r"in this system has\x0afallen off the bus and is not responding to commands."
    )

    assert line.text.count("\n") == 2
    parsed = parse_xid(line.text)
    assert parsed is not None
    assert (parsed.xid, parsed.pci_bus_id, parsed.implied) == (79, "00000000:18:00.0", True)


# --- dmesg --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "mono_ms"),
    [
        pytest.param(f"[ 1234.567890] {XID_TEXT}", 1_234_567, id="padded"),
        pytest.param(f"[98765.000001] {XID_TEXT}", 98_765_000, id="unpadded"),
        pytest.param(f"[    0.000000] {XID_TEXT}", 0, id="zero"),
    ],
)
def test_a_dmesg_line_gives_monotonic_ms_and_text(line: str, mono_ms: int) -> None:
    assert _parse(line) == CaptureLine(XID_TEXT, mono_ms=mono_ms)


@pytest.mark.parametrize(
    ("stamp", "usec"),
    [
        pytest.param("[    1.001000]", 1_001_000, id="1.001"),
        pytest.param("[    1.005000]", 1_005_000, id="1.005"),
    ],
)
def test_a_dmesg_stamp_gives_the_same_milliseconds_as_the_kmsg_record(
    stamp: str, usec: int
) -> None:
    from_dmesg = _parse(f"{stamp} {XID_TEXT}")
    from_kmsg = _parse(f"4,1,{usec},-;{XID_TEXT}")

    assert from_dmesg.mono_ms == from_kmsg.mono_ms == usec // 1000


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(f"[ 1234.567890] [T1234] {XID_TEXT}", id="dmesg-task-caller"),
        pytest.param(f"[ 1234.567890][    C3] {XID_TEXT}", id="dmesg-cpu-caller-no-space"),
        pytest.param(f"[T1234] {XID_TEXT}", id="bare-task-caller"),
        pytest.param(f"Nov 24 02:14:07 host kernel: [  123.4] [T99] {XID_TEXT}", id="syslog"),
    ],
)
def test_the_printk_caller_prefix_is_stripped(line: str) -> None:
    assert _parse(line).text == XID_TEXT


# --- dmesg -T -----------------------------------------------------------------------------


def test_a_dmesg_t_line_gives_exact_wall_ms_in_the_given_zone() -> None:
    line = _parse(f"[Tue Nov 24 02:14:07 2026] {XID_TEXT}")

    assert line == CaptureLine(XID_TEXT, wall_ms=STAMP_MS)


def test_a_dmesg_t_line_with_a_space_padded_day_is_read() -> None:
    line = _parse(f"[Wed Nov  4 02:14:07 2026] {XID_TEXT}")

    assert line.wall_ms == _utc_ms(2026, 11, 4, 2, 14, 7)
    assert line.text == XID_TEXT


# --- syslog -------------------------------------------------------------------------------


def test_a_classic_syslog_kernel_line_strips_the_inner_stamp_and_takes_the_current_year() -> None:
    line = _parse(f"Nov 24 02:14:07 host kernel: [  123.4] {XID_TEXT}")

    assert line == CaptureLine(XID_TEXT, kernel=True, wall_ms=STAMP_MS)


def test_a_classic_syslog_line_without_an_inner_stamp_keeps_its_text() -> None:
    line = _parse(f"Nov 24 02:14:07 gpu-node-7 kernel: {XID_TEXT}")

    assert line == CaptureLine(XID_TEXT, kernel=True, wall_ms=STAMP_MS)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(f"Nov 24 02:14:07 host myapp[4242]: {XID_TEXT}", id="classic-with-pid"),
        pytest.param(f"Nov 24 02:14:07 host logger: {XID_TEXT}", id="classic-logger"),
        pytest.param(f"2026-11-24T02:14:07.123456+00:00 host evil: {XID_TEXT}", id="rfc3339"),
    ],
)
def test_a_syslog_line_from_user_space_is_not_kernel(line: str) -> None:
    # User space must not be able to forge XIDs by logging XID-shaped text.
    parsed = _parse(line)

    assert parsed.kernel is False
    assert parsed.wall_ms is not None


@pytest.mark.parametrize(
    ("stamp", "wall_ms"),
    [
        pytest.param("2026-11-24T02:14:07.123456+00:00", STAMP_MS + 123, id="micros-utc-offset"),
        pytest.param("2026-11-24T02:14:07.123Z", STAMP_MS + 123, id="zulu"),
        pytest.param("2026-11-24T03:14:07+01:00", STAMP_MS, id="plus-one-hour"),
        pytest.param("2026-11-23T21:14:07-0500", STAMP_MS, id="offset-without-colon"),
        pytest.param("2026-11-24T02:14:07", STAMP_MS, id="naive-takes-the-given-zone"),
    ],
)
def test_an_rfc3339_syslog_or_journal_line_gives_exact_wall_ms(stamp: str, wall_ms: int) -> None:
    line = _parse(f"{stamp} host kernel: {XID_TEXT}")

    assert line == CaptureLine(XID_TEXT, kernel=True, wall_ms=wall_ms)


def test_a_december_syslog_line_read_in_early_january_gets_the_previous_year() -> None:
    line = _parse(f"Dec 31 23:59:00 host kernel: {XID_TEXT}", now_ms=_utc_ms(2027, 1, 2, 8, 0, 0))

    assert line.wall_ms == _utc_ms(2026, 12, 31, 23, 59, 0)


def test_a_syslog_line_a_few_hours_ahead_of_now_keeps_the_current_year() -> None:
    # Clock skew between hosts must not throw a line back a whole year.
    line = _parse(f"Nov 24 10:00:00 host kernel: {XID_TEXT}", now_ms=_utc_ms(2026, 11, 24, 4, 0, 0))

    assert line.wall_ms == _utc_ms(2026, 11, 24, 10, 0, 0)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(XID_TEXT, id="bare-xid"),
        pytest.param("some unrelated text: with a colon", id="bare-prose"),
        pytest.param("", id="empty"),
    ],
)
def test_a_line_with_no_recognised_prefix_passes_through_as_text(line: str) -> None:
    assert _parse(line + "\n") == CaptureLine(line)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(f"[Mon Jan  1 00:00:00 0001] {XID_TEXT}", id="dmesg-t-year-1"),
        pytest.param(f"0001-01-01T00:00:00 host kernel: {XID_TEXT}", id="iso-naive-year-1"),
    ],
)
def test_an_out_of_range_stamp_in_local_time_gives_no_time_instead_of_raising(line: str) -> None:
    parsed = parse_capture_line(line, now_ms=NOW_MS)

    assert parsed.text == XID_TEXT


_prefixes = st.sampled_from(
    [
        "",
        "[ 12.500000] ",
        "[Tue Nov 24 02:14:07 2026] ",
        "Nov 24 02:14:07 host kernel: ",
        "2026-11-24T02:14:07+00:00 host kernel: ",
        "6,1,2,-;",
        "12,1,2,c;",
        "[T12] ",
    ]
)


@settings(max_examples=300, deadline=None, database=None)
@given(prefix=_prefixes, text=st.text(max_size=120))
def test_parse_capture_line_never_raises_on_arbitrary_text_with_an_explicit_zone(
    prefix: str, text: str
) -> None:
    line = _parse(prefix + text)

    assert isinstance(line.text, str)


# --- join_multiline -----------------------------------------------------------------------

FALLEN_LINES = [
    "[ 500.000001] NVRM: The NVIDIA GPU 0000:18:00.0",
    "[ 500.000001] NVRM: (PCI ID: 10de:2901) installed in this system has",
    "[ 500.000001] NVRM: fallen off the bus and is not responding to commands.",
]


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(FALLEN_LINES, id="dmesg-each-line-prefixed"),
        pytest.param(
            [
                "[ 500.000001] NVRM: The NVIDIA GPU 0000:18:00.0",
                "               (PCI ID: 10de:2901) installed in this system has",
                "               fallen off the bus and is not responding to commands.",
            ],
            id="dmesg-indented-continuations",
        ),
        pytest.param(
            [
                "Nov 24 02:14:07 host kernel: NVRM: The NVIDIA GPU 0000:18:00.0",
                "Nov 24 02:14:07 host kernel: (PCI ID: 10de:2901) installed in this system has",
                "Nov 24 02:14:07 host kernel: fallen off the bus and is not responding to "
                "commands.",
            ],
            id="syslog",
        ),
    ],
)
def test_the_three_line_fallen_off_bus_message_is_joined_into_an_implied_xid_79(
    lines: list[str],
) -> None:
    parsed_lines = [(10 + n, _parse(text)) for n, text in enumerate(lines)]

    out = list(join_multiline(parsed_lines))

    assert len(out) == 1
    position, joined = out[0]
    assert position == 12
    assert joined.text.count("\n") == 2
    first = parsed_lines[0][1]
    assert (joined.wall_ms, joined.mono_ms, joined.kernel) == (
        first.wall_ms,
        first.mono_ms,
        first.kernel,
    )
    event = parse_xid(joined.text)
    assert event is not None
    assert (event.xid, event.pci_bus_id, event.implied) == (79, "00000000:18:00.0", True)


INDENT = " " * 15


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(
            [
                "[ 500.000001] NVRM: The NVIDIA GPU 0000:18:00.0",
                f"{INDENT}NVRM: (PCI ID: 10de:2901) installed in this system has",
                f"{INDENT}NVRM: fallen off the bus and is not responding to commands.",
            ],
            id="dmesg-indented-continuations-with-their-nvrm-prefix",
        ),
        pytest.param(
            [
                "[Tue Nov 24 02:14:07 2026] NVRM: The NVIDIA GPU 0000:18:00.0",
                "\tNVRM: (PCI ID: 10de:2901) installed in this system has",
                "\tNVRM: fallen off the bus and is not responding to commands.",
            ],
            id="dmesg-t-tab-indented",
        ),
        pytest.param(
            [
                "2026-11-24T02:14:07+00:00 host kernel: NVRM: The NVIDIA GPU 0000:18:00.0#012"
                "NVRM: (PCI ID: 10de:2901) installed in this system has#012NVRM: fallen off "
                "the bus and is not responding to commands.",
            ],
            id="rsyslog-012-escapes",
        ),
    ],
)
def test_a_multiline_record_printed_with_indented_or_escaped_lines_is_one_record(
    lines: list[str],
) -> None:
    out = list(join_multiline((n, _parse(text)) for n, text in enumerate(lines, start=1)))

    assert len(out) == 1
    assert out[0][0] == len(lines)
    event = parse_xid(out[0][1].text)
    assert event is not None
    assert (event.xid, event.pci_bus_id, event.implied) == (79, "00000000:18:00.0", True)
    assert event.message == (
        "The NVIDIA GPU 0000:18:00.0 (PCI ID: 10de:2901) installed in this system has "
        "fallen off the bus and is not responding to commands."
    )


def test_indented_lines_join_any_record_and_the_next_prefixed_line_starts_a_new_one() -> None:
    lines = [
        "[ 7.000000] NVRM: first line of something",
        "             second line",
        f"[ 8.000000] {XID_TEXT}",
    ]

    out = list(join_multiline((n, _parse(t)) for n, t in enumerate(lines, start=1)))

    assert [(p, line.text) for p, line in out] == [
        (2, "NVRM: first line of something\nsecond line"),
        (3, XID_TEXT),
    ]


def test_a_raw_kmsg_records_dictionary_lines_are_absorbed_not_added_to_its_text() -> None:
    lines = [f"6,1234,5678901,c;{XID_TEXT}", " SUBSYSTEM=pci", " DEVICE=+pci:0000:3b:00.0"]

    out = list(join_multiline((n, _parse(t)) for n, t in enumerate(lines, start=1)))

    assert out == [(3, CaptureLine(XID_TEXT, mono_ms=5678, seq=1234))]


def test_a_record_split_between_two_pushes_is_still_one_record() -> None:
    joiner = LineJoiner()
    parsed = [(n, _parse(t)) for n, t in enumerate(FALLEN_LINES, start=1)]

    first = joiner.push(*parsed[0]) + joiner.push(*parsed[1])
    rest = joiner.push(*parsed[2]) + joiner.finish()

    assert first == []
    assert len(rest) == 1 and rest[0][1].text.count("\n") == 2


def test_an_endless_run_of_indented_lines_is_cut_into_bounded_records() -> None:
    lines = [(1, _parse("[ 1.000000] start"))] + [
        (n, _parse(f"   continuation {n:06d}")) for n in range(2, 5_002)
    ]

    out = list(join_multiline(lines))

    assert len(out) > 1
    assert max(len(line.text) for _, line in out) <= RECORD_MAX_CHARS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("short line\n", "short line\n", id="short"),
        pytest.param("x" * 5000 + "\n", "x" * 4096 + "\u2026 [cut: 904 bytes]", id="long"),
        pytest.param("\u00e9" * 2049, "\u00e9" * 2048 + "\u2026 [cut: 2 bytes]", id="multibyte"),
    ],
)
def test_cut_text_keeps_at_most_the_cap_and_says_how_much_was_cut(text: str, expected: str) -> None:
    assert cut_text(text, 4096) == expected


def test_lines_around_a_joined_message_pass_through_with_their_positions() -> None:
    before = _parse(f"[ 499.000000] {XID_TEXT}")
    after = _parse("[ 501.000000] NVRM: GPU at PCI:0000:3b:00: GPU-abc")
    lines = [(1, before)] + [(2 + n, _parse(t)) for n, t in enumerate(FALLEN_LINES)] + [(5, after)]

    out = list(join_multiline(lines))

    assert [position for position, _ in out] == [1, 4, 5]
    assert out[0] == (1, before)
    assert out[2] == (5, after)


def test_a_held_first_line_followed_by_an_unrelated_line_flushes_both_unchanged() -> None:
    held = _parse("[ 500.000001] NVRM: The NVIDIA GPU 0000:18:00.0")
    other = _parse(f"[ 500.000002] {XID_TEXT}")

    out = list(join_multiline([(7, held), (8, other)]))

    assert out == [(7, held), (8, other)]


def test_a_held_first_line_at_the_end_of_input_is_not_lost() -> None:
    held = _parse("[ 500.000001] NVRM: The NVIDIA GPU 0000:18:00.0")

    assert list(join_multiline([(3, held)])) == [(3, held)]


def test_two_consecutive_first_lines_are_each_kept() -> None:
    first = _parse("[ 500.000001] NVRM: The NVIDIA GPU 0000:18:00.0")
    second = _parse("[ 500.000002] NVRM: The NVIDIA GPU 0000:19:00.0")

    out = list(join_multiline([(1, first), (2, second)]))

    assert out == [(1, first), (2, second)]


def test_ordinary_lines_pass_through_with_their_positions() -> None:
    lines = [
        (n, _parse(text))
        for n, text in [
            (3, f"[ 1.000000] {XID_TEXT}"),
            (9, "[ 2.000000] NVRM: loading NVIDIA UNIX x86_64 Kernel Module"),
            (12, "fallen off the bus without a first line"),
        ]
    ]

    assert list(join_multiline(lines)) == lines


# --- to_record ----------------------------------------------------------------------------

CURSOR = SourceCursor("replay:abc", 42)


def test_to_record_adds_boot_wall_time_to_monotonic_ms() -> None:
    record = to_record(
        CaptureLine(XID_TEXT, mono_ms=5_000, seq=9),
        source="replay",
        cursor=CURSOR,
        boot_wall_ms=1_700_000_000_000,
        received_ms=1_800_000_000_000,
    )

    assert record.ts_ms == 1_700_000_005_000
    assert (record.text, record.source, record.received_ms) == (
        XID_TEXT,
        "replay",
        1_800_000_000_000,
    )
    assert (record.facility, record.seq, record.cursor) == (KERNEL_FACILITY, 9, CURSOR)


def test_to_record_prefers_the_line_wall_time_over_boot_time() -> None:
    record = to_record(
        CaptureLine(XID_TEXT, wall_ms=STAMP_MS, mono_ms=5_000),
        source="file",
        cursor=CURSOR,
        boot_wall_ms=1_700_000_000_000,
        received_ms=NOW_MS,
    )

    assert record.ts_ms == STAMP_MS


@pytest.mark.parametrize(
    ("line", "boot_wall_ms"),
    [
        pytest.param(CaptureLine(XID_TEXT, mono_ms=5_000), None, id="monotonic-without-boot"),
        pytest.param(CaptureLine(XID_TEXT), 1_700_000_000_000, id="no-time-at-all"),
    ],
)
def test_to_record_leaves_the_time_unknown_when_it_cannot_be_derived(
    line: CaptureLine, boot_wall_ms: int | None
) -> None:
    record = to_record(
        line, source="file", cursor=CURSOR, boot_wall_ms=boot_wall_ms, received_ms=NOW_MS
    )

    assert record.ts_ms is None
    assert record.received_ms == NOW_MS


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(f"Nov 24 02:14:07 host myapp: {XID_TEXT}", id="syslog-user-tag"),
        pytest.param(f"12,77,5678901,-;{XID_TEXT}", id="kmsg-user-facility"),
    ],
)
def test_a_non_kernel_line_becomes_a_text_less_record(raw: str) -> None:
    record = to_record(
        _parse(raw), source="file", cursor=CURSOR, boot_wall_ms=None, received_ms=NOW_MS
    )

    assert record.text == ""
    assert record.facility != KERNEL_FACILITY
    assert record.cursor == CURSOR
    assert parse_xid(record.text) is None
