"""timefmt: the spellings of a UTC time the project writes, and reading ISO-8601 back."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt

MOMENT = dt.datetime(2026, 11, 28, 14, 0, 5, 120, tzinfo=dt.UTC)
PLUS_ONE = dt.timezone(dt.timedelta(hours=1))


def test_the_written_forms():
    assert timefmt.iso(MOMENT) == "2026-11-28T14:00:05.000120Z"
    assert timefmt.iso_seconds(MOMENT) == "2026-11-28T14:00:05Z"
    assert timefmt.iso_exact(MOMENT) == "2026-11-28T14:00:05.000120Z"
    assert timefmt.iso_exact(MOMENT.replace(microsecond=0)) == "2026-11-28T14:00:05Z"
    assert timefmt.compact(MOMENT) == "20261128T140005Z"
    assert timefmt.compact(MOMENT, fraction=True) == "20261128T140005.000120Z"
    assert timefmt.compact(MOMENT.replace(microsecond=0), fraction=True) == "20261128T140005Z"


def test_every_form_is_utc_and_takes_unix_seconds_and_none():
    other_zone = MOMENT.astimezone(PLUS_ONE)
    assert timefmt.iso(other_zone) == timefmt.iso(MOMENT)
    assert timefmt.iso_seconds(MOMENT.timestamp()) == "2026-11-28T14:00:05Z"
    assert timefmt.iso_exact(MOMENT.timestamp()) == "2026-11-28T14:00:05.000120Z"
    assert timefmt.iso(None) is None and timefmt.iso_seconds(None) is None and timefmt.iso_exact(None) is None


def test_parse_reads_z_offsets_and_naive_as_utc():
    for text in (
        "2026-11-28T14:00:05.000120Z",
        "2026-11-28T14:00:05.000120z",
        " 2026-11-28 15:00:05.000120+01:00 ",
        "2026-11-28 14:00:05.000120+00",
        "2026-11-28T14:00:05.000120",
    ):
        parsed = timefmt.parse(text)
        assert parsed == MOMENT and parsed.tzinfo == dt.UTC, text
    assert timefmt.parse(MOMENT.replace(tzinfo=None)) == MOMENT
    assert timefmt.parse(MOMENT.astimezone(PLUS_ONE)).tzinfo == dt.UTC


def test_parse_refuses_what_is_not_a_time():
    for text in ("yesterday", "", "2026-13-01T00:00:00Z", None):
        with pytest.raises(ValueError):
            timefmt.parse(text)
    assert timefmt.parse_or_none("yesterday") is None and timefmt.parse_or_none(None) is None
    assert timefmt.parse_or_none("2026-11-28T14:00:05.000120Z") == MOMENT


def test_compact_round_trips():
    moment = MOMENT.replace(microsecond=0)
    assert timefmt.parse_compact(timefmt.compact(moment)) == moment
    with pytest.raises(ValueError):
        timefmt.parse_compact("20261128T140005")


def test_iso_text_sorts_as_time():
    earlier, later = MOMENT, MOMENT + dt.timedelta(microseconds=1)
    assert timefmt.iso(earlier) < timefmt.iso(later)
