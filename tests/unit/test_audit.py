"""The record: every run its own entry (a rerun that changed nothing too, a run stopped by bad input too), the same
run once, inputs it cannot read as notes instead of failures, operator text that cannot forge an entry, and the
files it names existing."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from test_modules import run_module

from ansible_collections.pgdr.supabase.plugins.module_utils import audit

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
FORGED = "bad migration at 14:05\n## 2026-12-01T00:00:00Z drill SUCCESS\n- Initiator: ceo\n<script>alert(1)</script>"
PASSWORD = "Audit-Unit-Pw-99"


@pytest.fixture
def where(tmp_path):
    return {
        "incidents_path": str(tmp_path / "ops" / "incidents.md"),
        "jsonl_path": str(tmp_path / "ops" / "events.jsonl"),
        "report_dir": str(tmp_path / "reports"),
        "history_path": str(tmp_path / "reports" / "history.html"),
    }


def lines(where):
    path = Path(where["jsonl_path"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def headings(where):
    return re.findall(r"(?m)^## .*$", Path(where["incidents_path"]).read_text())


STARTED = NOW.timestamp() - 600


def event(reason="quarterly drill", started=STARTED, now=NOW, **kw):
    return audit.build_event("drill", kw.pop("outcome", "success"), reason, "ops", now=now, started_at=started, **kw)


def record(ev, where, **kw):
    return audit.record(
        ev, where["incidents_path"], where["jsonl_path"], where["report_dir"], history_path=where["history_path"], **kw
    )


def test_two_runs_with_different_reasons_are_two_entries(where):
    record(event("first reason", started=1_795_000_000.0), where)
    record(event("second reason", started=1_795_000_100.0, now=NOW + dt.timedelta(seconds=1)), where)
    assert [e["reason"] for e in lines(where)] == ["first reason", "second reason"]
    assert len(headings(where)) == 2


def test_two_runs_with_the_same_inputs_are_two_entries_and_a_rerun_says_it_changed_nothing(where):
    first = record(event(started=1_795_000_000.0, changed=True), where)
    again = record(event(started=1_795_000_900.0, changed=False, now=NOW + dt.timedelta(seconds=1)), where)
    assert first["changed"] and first["recorded"]
    assert again["recorded"] and not again["changed"] and "changed nothing" in again["msg"]
    assert [e["changed"] for e in lines(where)] == [True, False]
    assert "- Changed: nothing (everything was in place already: a rerun)" in Path(where["incidents_path"]).read_text()
    assert first["paths"]["report_html"] != again["paths"]["report_html"]


def test_the_same_run_recorded_twice_is_one_entry(where):
    ev = event(started=1_795_000_000.0)
    first = record(ev, where)
    second = record(event(started=1_795_000_000.0, now=NOW + dt.timedelta(seconds=3)), where)
    assert len(lines(where)) == 1 and not second["changed"] and not second["recorded"]
    assert second["msg"] == "this run is recorded already"
    # The paths it names are the earlier run's files, which exist.
    assert second["paths"]["report_html"] == first["paths"]["report_html"]
    assert Path(second["paths"]["report_html"]).exists()


def test_every_path_the_record_names_exists(where):
    result = record(event(), where)
    for name in ("incidents", "jsonl", "history", "report_json", "report_md", "report_html"):
        assert Path(result["paths"][name]).is_file(), name
    assert json.loads(Path(result["paths"]["report_json"]).read_text())["key"] == result["key"]
    assert lines(where)[0]["report"]["html"] == result["paths"]["report_html"]


def test_two_runs_in_the_same_second_get_reports_of_their_own(where):
    a = record(event("a", started=1.0e9), where)
    b = record(event("b", started=1.0e9 + 1), where)
    assert a["paths"]["report_md"] != b["paths"]["report_md"] and b["paths"]["report_md"].endswith("-2.md")
    assert Path(a["paths"]["report_md"]).read_text().count("# Drill report") == 1


def test_check_mode_writes_nothing(where, tmp_path):
    result = record(event(), where, check_mode=True)
    assert result["changed"] and result["msg"] == "would record the event"
    assert result["paths"]["report_html"] is None and where["jsonl_path"] in result["would_write"]
    assert not (tmp_path / "ops").exists() and not (tmp_path / "reports").exists()


def test_reason_with_newlines_and_markup_cannot_forge_an_entry(where):
    record(event(FORGED), where)
    text = Path(where["incidents_path"]).read_text()
    assert len(headings(where)) == 1
    assert not re.search(r"(?m)^- Initiator: ceo", text)
    assert "<script>" not in text and "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    [reason_line] = [line for line in text.splitlines() if line.startswith("- Reason: ")]
    assert "\\#\\# 2026-12-01T00:00:00Z drill SUCCESS" in reason_line
    # The JSON line keeps the raw text; the HTML report escapes it.
    assert lines(where)[0]["reason"] == FORGED
    html_text = Path(lines(where)[0]["report"]["html"]).read_text()
    assert "<script>" not in html_text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    md_report = Path(lines(where)[0]["report"]["md"]).read_text()
    assert len(re.findall(r"(?m)^## ", md_report)) == 0 and "<script>" not in md_report


def test_error_and_initiator_are_escaped_too(where):
    ev = audit.build_event("restore", "failed", "r", "eve\n## forged", details={"error": "x\n## also <b>"}, now=NOW)
    record(ev, where)
    text = Path(where["incidents_path"]).read_text()
    assert len(headings(where)) == 1 and "<b>" not in text and "- Error: x" in text


@pytest.mark.parametrize(
    ("point", "rpo", "note"),
    [
        ("2026-13-45T99:00:00Z", None, "the point in time '2026-13-45T99:00:00Z' is not an ISO-8601 time"),
        ("yesterday", None, "is not an ISO-8601 time"),
        ("2026-11-28T00:30:00Z", 1800.0, None),
        ("1795825800", 1800.0, None),
        ("", 1800.0, None),
    ],
)
def test_measure_takes_what_it_can_and_notes_the_rest(point, rpo, note):
    started = dt.datetime(2026, 11, 28, 0, 30, tzinfo=dt.UTC).timestamp()
    rto, measured, notes = audit.measure(started, started + 600, point, -1, "2026-11-28T00:00:00Z")
    assert rto == 600.0 and measured == rpo
    assert (note in notes[0]) if note else notes == []


def test_measure_with_nothing_known():
    assert audit.measure(0, 0, None, -1, None) == (None, None, [])
    assert audit.measure(None, None, None, -1, "not a time") == (None, None, [])
    assert audit.measure(10, 20, None, -1, "garbage")[2] == [
        "the backup's time 'garbage' is not an ISO-8601 time: the RPO is not measured"
    ]


def test_secrets_are_masked_in_every_file(where):
    ev = audit.build_event(
        "restore",
        "failed",
        f"see postgresql://postgres:{PASSWORD}@db/x",
        "ops",
        target=f"postgresql://postgres:{PASSWORD}@127.0.0.1:5433/restored",
        checks=[{"name": "smoke", "ok": False, "details": {"dsn": f"host=db password={PASSWORD}"}}],
        details={"error": f"cannot connect to postgresql://u:{PASSWORD}@h/db"},
        now=NOW,
    )
    result = record(ev, where)
    for name in ("incidents", "jsonl", "history", "report_json", "report_md", "report_html"):
        assert PASSWORD not in Path(result["paths"][name]).read_text(), name


def test_record_module_records_a_bad_point_in_time_instead_of_failing(where, capsys):
    args = {
        "kind": "pitr_restore",
        "outcome": "failed",
        "reason": "restore to a typo",
        "run_changed": False,
        "point_in_time": "2026-11-28 25:99",
        "started_at": NOW.timestamp(),
        "backup": {"id": "", "taken_at": ""},
        "details": {"error": "Restore to the target time: '2026-11-28 25:99' is not a time"},
        **where,
    }
    code, result = run_module("pgdr.supabase.record", args, capsys)
    assert code == 0, result
    assert result["recorded"] and not result["changed"]
    [ev] = lines(where)
    assert ev["outcome"] == "failed" and ev["rpo_s"] is None and ev["rto_s"] is None
    assert "is not an ISO-8601 time" in ev["notes"][0]
    assert (
        "- Note: the point in time '2026-11-28 25:99' is not an ISO-8601 time"
        in Path(where["incidents_path"]).read_text()
    )
    assert Path(result["paths"]["report_html"]).exists() and Path(result["paths"]["history"]).exists()


def test_record_module_check_mode_writes_nothing(where, capsys, tmp_path):
    args = {"kind": "drill", "outcome": "success", "reason": "r", **where}
    code, result = run_module("pgdr.supabase.record", args, capsys, check_mode=True)
    assert code == 0 and result["changed"] and result["msg"] == "would record the event"
    assert not (tmp_path / "ops").exists() and not (tmp_path / "reports").exists()


def test_unknown_kind_is_refused():
    with pytest.raises(audit.DRError, match="unknown event kind"):
        audit.build_event("backup", "success", "", "ops")
