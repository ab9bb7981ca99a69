"""Times in UTC: the clock, the spellings the project writes, and reading ISO-8601 back.

Written forms (every formatter takes an aware datetime or Unix seconds; None stays None):

- :func:`iso` ``2026-11-28T14:00:00.000000Z``: manifests, catalogs, events, progress lines (sorts as text);
- :func:`iso_seconds` ``2026-11-28T14:00:00Z``: reports, monitor results, the Supabase API;
- :func:`iso_exact` ``2026-11-28T14:00:00Z`` or ``2026-11-28T14:00:00.123456Z``: the fraction only when there is
  one (pgBackRest results: the instant exactly, shortest);
- :func:`compact` ``20261128T140000Z``: backup and snapshot ids, folder names.

:func:`parse` reads ISO-8601 with ``Z``/``z``, an offset, or none (meaning UTC); callers wrap its ValueError in
the error their step gives.
"""

from __future__ import annotations

import datetime as dt

COMPACT_FORMAT = "%Y%m%dT%H%M%SZ"


def utcnow():
    return dt.datetime.now(dt.UTC)


def from_unix(seconds):
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _utc(value):
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = from_unix(value)
    return value.astimezone(dt.UTC)


def iso(value):
    """2026-11-28T14:00:00.000000Z (always the microseconds)."""
    moment = _utc(value)
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(value):
    """2026-11-28T14:00:00Z (the fraction of a second dropped)."""
    moment = _utc(value)
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_exact(value):
    """2026-11-28T14:00:00Z, or 2026-11-28T14:00:00.123456Z when the instant has a fraction of a second."""
    moment = _utc(value)
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def compact(value, fraction=False):
    """20261128T140000Z; with fraction, the microseconds when there are any (20261128T140000.000100Z)."""
    moment = _utc(value)
    if fraction and moment.microsecond:
        return f"{moment.strftime('%Y%m%dT%H%M%S')}.{moment.microsecond:06d}Z"
    return moment.strftime(COMPACT_FORMAT)


def parse_compact(text):
    """The aware datetime of 20261128T140000Z; ValueError when it is not one."""
    return dt.datetime.strptime(text, COMPACT_FORMAT).replace(tzinfo=dt.UTC)


def parse(value):
    """An aware UTC datetime from ISO-8601 text (``2026-11-28T14:00:00Z``, ``2026-11-28 14:00:00.1+01``, a time
    without an offset meaning UTC) or a datetime (naive meaning UTC); ValueError when it is not one."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def parse_or_none(value):
    """:func:`parse`, or None for an empty or unreadable value."""
    if not value:
        return None
    try:
        return parse(value)
    except ValueError:
        return None
