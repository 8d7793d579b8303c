"""Window bounds as people type them, and times as ISO 8601 with four-digit years."""

from __future__ import annotations

import pytest

from store.errors import InvalidQueryError
from store.windows import check_window, format_ts, parse_instant_ms

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [
        (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
        (-30_610_310_400_000, "0999-12-31T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (1_764_036_840_123, "2025-11-25T02:14:00.123Z"),
    ],
)
def test_format_ts_always_writes_a_four_digit_year(ts_ms: int, text: str) -> None:
    assert format_ts(ts_ms) == text


def test_an_iso_time_round_trips_to_the_millisecond() -> None:
    assert format_ts(parse_instant_ms("2025-11-25T02:14:00.123Z", now_ms=NOW)) == (
        "2025-11-25T02:14:00.123Z"
    )
    assert parse_instant_ms("1970-01-01T00:00:00Z", now_ms=NOW) == 0
    assert parse_instant_ms("24h", now_ms=NOW) == NOW - 86_400_000


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "999999999w"])
def test_an_instant_before_the_unix_epoch_is_an_error_naming_it(text: str) -> None:
    with pytest.raises(InvalidQueryError, match=f"^'{text}' is before 1970-01-01"):
        parse_instant_ms(text, now_ms=NOW)


def test_an_inverted_window_is_an_error_naming_both_bounds() -> None:
    with pytest.raises(InvalidQueryError) as e:
        check_window(NOW, NOW - 3_600_000)
    assert str(e.value).startswith(
        "since (2027-01-15T08:00:00.000Z) is after until (2027-01-15T07:00:00.000Z)"
    )


def test_an_empty_window_is_an_error_and_open_bounds_are_fine() -> None:
    with pytest.raises(InvalidQueryError, match=r"since \(2027-01-15T08:00:00\.000Z\) is the same"):
        check_window(NOW, NOW)
    check_window(NOW, NOW + 1)
    check_window(None, 0)
    check_window(NOW, None)
