"""Text as the record writes it: the one place that escapes operator-supplied text for Markdown and HTML and
formats durations and sizes, for the incident log, the Markdown report and the HTML pages alike.

Operator text (a reason, an initiator, an error that quotes an input) may hold anything: line breaks, Markdown,
HTML. In Markdown it is kept on one line (line breaks are shown as a visible mark, so a reason cannot start an
entry heading or a list item of its own) with every character that Markdown or HTML gives a meaning escaped;
in HTML it is entity-escaped. The JSON-lines log keeps the raw value.
"""

from __future__ import annotations

import html as _html
import re

from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt

LINE_BREAK_MARK = " \u21b5 "  # a visible "return" arrow where the text had a line break
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\u0085\u2028\u2029\x0b\x0c]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
# Characters with a meaning inside a Markdown line (CommonMark and GitHub's tables) that the backslash escapes;
# the ones that matter only at the start of a line cannot be there (the text never starts one).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")


def text(value):
    """Any value as text; None as the empty string."""
    return "" if value is None else str(value)


def one_line(value):
    """The text on one line: line breaks become a visible mark, other control characters a '?'."""
    value = _LINE_BREAKS.sub(LINE_BREAK_MARK, text(value).replace("\t", " "))
    return _CONTROL.sub("?", value)


def md(value):
    """Operator text made inert in Markdown: one line, HTML special characters as entities (so `<script>` is
    shown, never run), and Markdown's own special characters backslash-escaped (no heading, link, emphasis,
    code span or table cell can be forged)."""
    value = one_line(value)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", value)


def md_code(value):
    """A value shown as a Markdown code span (digests, keys): one line, and a fence longer than any run of
    backticks inside it."""
    value = one_line(value)
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def timestamp(value):
    """An ISO-8601 time as 'YYYY-MM-DD HH:MM:SS UTC' (the text itself when it is not one; '' for none)."""
    if not value:
        return ""
    try:
        moment = timefmt.parse(value)
    except ValueError:
        return one_line(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def html(value):
    """Text escaped for HTML content and attribute values (quotes included)."""
    return _html.escape(text(value), quote=True)


def duration(seconds):
    """Seconds for a person: '0.03 s', '42.0 s', '12.5 min', '4.00 h'; 'n/a' when unknown."""
    if seconds is None:
        return "n/a"
    seconds = float(seconds)
    if abs(seconds) < 10:
        return f"{seconds:.2f} s"
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def size(count):
    """Bytes for a person, in binary units: '578 B', '4.3 KiB', '1.61 MiB'; 'n/a' when unknown."""
    if count is None:
        return "n/a"
    count = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(count)} B"
            return f"{count:.1f} {unit}" if abs(count) >= 100 else f"{count:.2f} {unit}"
        count /= 1024
    return f"{count:.2f} TiB"  # pragma: no cover (the loop returns)


def count(number, word, plural=None):
    """'1 drill', '2 drills' ('1 entry', '2 entries' with plural='entries')."""
    return f"{number} {word if number == 1 else (plural or word + 's')}"


def slug(value, empty="none"):
    """A value usable in a file name: anything but letters, digits, '_', '.' and '-' becomes '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text(value)).strip("-.")
    return cleaned or empty
