"""--since/--until parsing: ISO 8601 with a zone to exact nanoseconds, anything else a typed error naming the option."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from matchcore.cli.journal import TimeArgumentError, parse_time
from matchcore.persistence.journal import time_ns

NEW_YEAR_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize("text, expected", [
    ("2026-01-01T00:00:00Z", NEW_YEAR_NS),
    ("2026-01-01T01:00:00+01:00", NEW_YEAR_NS),
    ("2026-01-01T00:00:00.5Z", NEW_YEAR_NS + 500_000_000),
    ("2026-01-01T00:00:00.123456789Z", NEW_YEAR_NS + 123_456_789),
    ("2026-01-01T00:00:00.1234567+00:00", NEW_YEAR_NS + 123_456_700),
])
def test_zoned_times_are_exact_nanoseconds(text: str, expected: int) -> None:
    assert parse_time("--since", text) == expected


@pytest.mark.parametrize("text, says", [
    ("2026-01-01T00:00:00", "no time zone"), ("2026-01-01", "no time zone"),
    ("noon", "not an ISO 8601 time"), ("2026-01-01T00:00:00.1234567891Z", "at most 9 digits"),
])
def test_other_times_are_refused_naming_the_option(text: str, says: str) -> None:
    with pytest.raises(TimeArgumentError, match=says) as refused:
        parse_time("--until", text)
    assert str(refused.value).startswith("--until")


def test_time_ns_takes_aware_datetimes_and_ints_only() -> None:
    assert time_ns(datetime(2026, 1, 1, tzinfo=timezone.utc)) == NEW_YEAR_NS
    assert time_ns(NEW_YEAR_NS) == NEW_YEAR_NS
    with pytest.raises(ValueError, match="no time zone"):
        time_ns(datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        time_ns("2026-01-01T00:00:00Z")
