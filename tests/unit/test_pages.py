"""The HTML page builders and the one escaping helper: a run's report, the history page, and what they must never
hold (markup from operator text, anything loaded from elsewhere, secrets)."""

from __future__ import annotations

import datetime as dt
import html.parser
import re

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import audit, history, pages, render

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
INJECTION = "quarterly drill\n## forged entry\n<script>alert('x')</script> [click](javascript:alert(1)) | `code`"
PASSWORD = "Pg-Unit-Secret-77"


class Structure(html.parser.HTMLParser):
    """Every tag of a page and its attributes, and the visible text (what --dump-dom would give a reader)."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(text):
    parser = Structure()
    parser.feed(text)
    return parser


def assert_self_contained(text):
    """No script, no external resource of any kind, no event handler attribute."""
    parsed = parse(text)
    names = [t for t, _unused in parsed.tags]
    assert "script" not in names and "link" not in names and "img" not in names and "iframe" not in names
    for tag, attrs in parsed.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in ("src", "srcset"), (tag, name)
            if name == "href":
                assert not re.match(r"^[a-z]+:", value or ""), (tag, value)
    assert "http:" not in text and "https:" not in text and "@import" not in text and "url(" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def drill_event(**overrides):
    checks = [
        {
            "name": "migrations",
            "ok": True,
            "summary": "5 applied",
            "details": {"applied": ["1", "2"]},
            "duration_s": 0.2,
        },
        {
            "name": "schema",
            "ok": False,
            "summary": "2 objects differ",
            "details": {
                "differences": ["missing: policy public.events tenant_read", "changed: function public.join(uuid)"],
                "fingerprint": "ab" * 32,
            },
            "duration_s": 0.4,
        },
        {
            "name": "row_counts",
            "ok": False,
            "summary": "1 table differs",
            "details": {"mismatches": {"public.events": {"expected": 20000, "actual": 19990}}, "tables": 9},
        },
        {"name": "smoke", "ok": True, "details": f"connected to postgresql://app:{PASSWORD}@127.0.0.1:5432/app"},
    ]
    args = {
        "backup": {
            "id": "20261128T000000Z",
            "source": "production",
            "taken_at": "2026-11-28T00:00:03Z",
            "objects": [
                {"name": "roles", "size": 578, "sha256": "1" * 64, "key": "b/production/logical/x/roles.sql.zst"},
                {"name": "data", "size": 1693395, "sha256": "2" * 64, "plain_size": 7745138},
            ],
        },
        "target": f"postgresql://postgres:{PASSWORD}@127.0.0.1:5433/restore_20261128t000000z",
        "checks": checks,
        "durations": {"download_verify": 3.1, "create_database": 0.4, "data": 410.0, "post_data": 95.2},
        "rto_s": 1260.0,
        "rpo_s": 900.0,
        "details": {"error": "Verify ...: schema: 2 objects differ", "disarmed": ["cron job nightly-report"]},
        "now": NOW,
        "changed": True,
        "started_at": NOW.timestamp() - 1260,
    }
    args.update(overrides)
    return audit.build_event("drill", "failed", INJECTION, "ops <b>on-call</b>", **args)


# ------------------------------------------------------------------------------------------------ render


def test_md_keeps_operator_text_on_one_line_and_inert():
    text = render.md(INJECTION)
    assert "\n" not in text and render.LINE_BREAK_MARK.strip() in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "\\[click\\]" in text and "\\|" in text and "\\`code\\`" in text and "\\#\\# forged" in text
    for breaker in ("a\r\nb", "a\rb", "a\u2028b", "a\u2029b", "a\x0bb", "a\x85b"):
        assert "\n" not in render.md(breaker) and "\r" not in render.md(breaker)
    assert render.md("a\x00b\x1bc") == "a?b?c"


def test_html_escapes_markup_and_quotes():
    assert render.html("<a href=\"x\" onclick='y'>&") == "&lt;a href=&quot;x&quot; onclick=&#x27;y&#x27;&gt;&amp;"
    assert render.html(None) == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "n/a"), (0.034, "0.03 s"), (42.04, "42.0 s"), (600, "10.0 min"), (14400, "4.00 h")],
)
def test_duration(seconds, text):
    assert render.duration(seconds) == text


@pytest.mark.parametrize(("count", "text"), [(None, "n/a"), (578, "578 B"), (4447, "4.34 KiB"), (1693395, "1.61 MiB")])
def test_size(count, text):
    assert render.size(count) == text


def test_md_code_fence_is_longer_than_any_backtick_run():
    assert render.md_code("a``b") == "```a``b```"


# ---------------------------------------------------------------------------------------------- run page


def test_run_page_of_a_failed_drill_lists_each_difference_and_every_section():
    event = drill_event()
    text = pages.run_page(event)
    assert_self_contained(text)
    visible = " ".join(parse(text).text)
    assert "Drill FAILED" in visible
    for difference in event["checks"][1]["details"]["differences"]:
        assert f'<li><span class="text">{render.html(difference)}</span></li>' in text
    # A check without a differences list: its details as a table (nested dicts as nested tables).
    assert "public.events" in visible and "19990" in visible
    # Failed checks are opened, passed ones closed.
    assert re.search(r"<details open class=\"fail\"><summary>schema: FAILED", text)
    assert re.search(r"<details class=\"pass\"><summary>migrations: passed", text)
    for step in ("download_verify", "create_database", "data", "post_data"):
        assert f">{step}</text>" in text
    # One bar per step, to scale: data (410 s) is 410/95.2 times as wide as post_data.
    widths = [float(w) for w in re.findall(r'<rect class="bar " x="\d+" y="[\d.]+" width="([\d.]+)"', text)]
    assert len(widths) == 4 and widths[2] / widths[3] == pytest.approx(410 / 95.2, rel=0.01)
    assert "21.0 min" in visible and "RTO" in visible and "target 4.00 h" in visible
    assert "cron job nightly-report" in visible
    assert "1" * 64 in visible and "1.61 MiB" in visible and "7.39 MiB" in visible


def test_run_page_escapes_operator_text_everywhere():
    text = pages.run_page(drill_event())
    assert "<script>" not in text and "<b>on-call</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "ops &lt;b&gt;on-call&lt;/b&gt;" in text
    # The reason is text, not markup: no heading, no link came of it.
    assert [t for t, _unused in parse(text).tags].count("h1") == 1
    assert not [a for t, a in parse(text).tags if t == "a"]


def test_run_page_holds_no_secret():
    event = drill_event()
    assert PASSWORD not in str(event)
    assert PASSWORD not in pages.run_page(event)


def test_run_page_of_a_run_that_stopped_before_anything():
    event = audit.build_event(
        "restore", "failed", "", "ops", details={"error": "Check the restore method: bad"}, now=NOW
    )
    text = pages.run_page(event)
    assert_self_contained(text)
    visible = " ".join(parse(text).text)
    assert "Restore FAILED" in visible and "Check the restore method: bad" in visible
    assert "No step durations were recorded" in visible and "No check ran" in visible
    assert "Not reported" in visible and "No objects recorded" in visible and "(none given)" in visible


def test_details_without_differences_list_are_a_readable_table():
    check = {"name": "c", "ok": False, "details": {"differences": "not a list", "rows": [{"t": "a", "n": 1}]}}
    html_text = pages._check_details(check)
    assert "<table" in html_text and "not a list" in html_text and "<th>t</th>" in html_text


# ------------------------------------------------------------------------------------------------ history


def event_at(days_ago, kind="drill", outcome="success", rto=1800.0, rpo=600.0):
    event = audit.build_event(
        kind, outcome, "drill", "ops", rto_s=rto, rpo_s=rpo, now=NOW - dt.timedelta(days=days_ago)
    )
    return event


def test_empty_history_says_there_is_no_drill():
    text = pages.history_page([], backups=None, backups_note="Backups not read.", now=NOW)
    assert_self_contained(text)
    visible = " ".join(parse(text).text)
    assert "No successful drill is on record" in visible
    assert "No drill recorded yet" in visible and "has been recorded yet" in visible
    assert 'class="banner stale"' in text


def test_history_with_an_old_last_drill_says_so_plainly():
    events = [event_at(200), event_at(120), event_at(30, outcome="failed", rto=None, rpo=None), event_at(5, "restore")]
    text = pages.history_page(events, now=NOW, drill_max_age_days=90)
    visible = " ".join(parse(text).text)
    assert "The last successful drill was 120 days ago" in visible and "older than 90 days" in visible
    assert 'class="banner stale"' in text
    # A failed drill is charted as failed, not left out.
    assert ">failed<title>" in text
    status = pages.drill_status(events, NOW, 90)
    assert status["stale"] and status["age_days"] == 120.0
    # The setting moves the line.
    assert not pages.drill_status(events, NOW, 150)["stale"]


def test_history_within_a_quarter_and_its_charts_against_targets():
    events = [event_at(80, rto=1800.0), event_at(10, rto=16000.0)]
    text = pages.history_page(events, now=NOW)
    assert 'class="banner ok"' in text and "10 days ago" in text
    assert "target 4.00 h" in text and "target 60.0 min" in text
    # The second drill missed its RTO target: red.
    assert text.count('class="bar bad"') == 1


def test_history_charts_backups_per_day_with_gaps():
    backups = [
        {
            "backup_id": f"202611{d:02d}T000000Z",
            "complete": True,
            "started_at": f"2026-11-{d:02d}T00:00:03Z",
            "size": 1_000_000 * d,
            "duration_s": 2.0 * d,
            "objects": 4,
        }
        for d in (1, 2, 4)
    ] + [{"backup_id": "20261105T000000Z", "complete": False, "size": 10, "objects": 1}]
    text = pages.history_page([], backups=backups, backups_note="read from s3://b/p/", now=NOW)
    visible = " ".join(parse(text).text)
    assert "3 complete backups, 1 incomplete" in visible
    assert "Backup size per day" in visible and "Backup duration per day" in visible
    assert "2026-11-03: no complete backup" in text
    assert "INCOMPLETE" in visible and "20261105T000000Z" in visible


def test_history_rows_escape_and_link_each_report(tmp_path):
    event = drill_event()
    event["report"] = {"html": str(tmp_path / "reports" / "drill-x.html")}
    text = pages.history_page([event], now=NOW, link_dir=str(tmp_path / "reports"))
    assert_self_contained(text)
    assert '<a href="drill-x.html">' in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert PASSWORD not in text


def test_write_history_changes_nothing_when_the_page_shows_the_same(tmp_path):
    log = tmp_path / "events.jsonl"
    page = tmp_path / "history.html"
    log.write_text(f"{audit.json.dumps(event_at(3))}\nnot json\n")
    first = history.write_history(str(page), str(log), now=NOW)
    assert first["changed"] and first["written"] and page.exists()
    assert "1 line of the log not events, skipped" in page.read_text()
    again = history.write_history(str(page), str(log), now=NOW + dt.timedelta(minutes=5))
    assert not again["changed"] and not again["written"]
    check = history.write_history(str(tmp_path / "other.html"), str(log), check_mode=True, now=NOW)
    assert check["changed"] and not check["written"] and not (tmp_path / "other.html").exists()
    assert first["summary"]["drills"] == 1 and not first["summary"]["drill_stale"]


def test_write_history_says_when_the_bucket_cannot_be_read(tmp_path):
    from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3Target

    unreachable = S3Target(
        "dr-backups",
        endpoint_url="http://127.0.0.1:1",
        access_key="AKIAUNIT",
        secret_key="unit-secret-key-1234",
        max_attempts=1,
        connect_timeout=2,
    )
    page = tmp_path / "h.html"
    result = history.write_history(
        str(page), str(tmp_path / "none.jsonl"), target=unreachable, source="production", now=NOW
    )
    assert result["written"]
    assert "could not be read from s3://dr-backups/backups/production/logical/" in result["backups_note"]
    assert "cannot reach the S3 endpoint" in page.read_text()
    assert "unit-secret-key-1234" not in page.read_text()
