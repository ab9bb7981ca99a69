"""The incident log through the playbooks on the sandbox: every run of restore.yml is its own entry (a rerun that
changed nothing, a run stopped by bad input before the restore, a bad target_time), and every path it prints exists.
Promote and rollback: tests/integration/test_promote_playbooks.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from backup_helpers import drop_database
from test_restore_playbooks import events, restore_vars, take_backup

pytestmark = pytest.mark.integration


def printed_paths(run):
    """Every file the record step printed (report (HTML): ..., history: ..., incident log: ...)."""
    return re.findall(r'"(?:report \(HTML\)|report \(Markdown\)|history|incident log): ([^"]+)"', run.stdout)


def assert_printed_paths_exist(run):
    paths = printed_paths(run)
    assert paths, run.stdout[-3000:]
    for path in paths:
        assert Path(path).is_file(), path


def test_two_restores_with_different_reasons_are_two_entries(run_playbook, sandbox, s3_target, prefix, tmp_path):
    manifest = take_backup(sandbox, s3_target, prefix)
    try:
        first = run_playbook("restore.yml", restore_vars(prefix, tmp_path, reason="first attempt"))
        assert first.rc == 0, first.stdout[-3000:]
        second = run_playbook("restore.yml", restore_vars(prefix, tmp_path, reason="second attempt, by another"))
        assert second.rc == 0, second.stdout[-3000:]
    finally:
        drop_database(sandbox, f"restore_{manifest['backup_id'].lower()}")
    one, two = events(tmp_path)
    assert (one["reason"], two["reason"]) == ("first attempt", "second attempt, by another")
    assert one["changed"] is True and two["changed"] is False
    assert one["key"] != two["key"] and one["report"]["html"] != two["report"]["html"]
    # The rerun changed nothing, and says so: its own entry, and the playbook's second run stays unchanged.
    assert second.changed() == 0
    incidents = (tmp_path / "ops" / "incidents.md").read_text()
    assert len(re.findall(r"(?m)^## .* restore SUCCESS$", incidents)) == 2
    assert "- Changed: nothing (everything was in place already: a rerun)" in incidents
    for run in (first, second):
        assert_printed_paths_exist(run)


def test_a_bad_target_time_is_recorded_not_a_crash(run_playbook, sandbox, prefix, tmp_path):
    extra = restore_vars(prefix, tmp_path, restore_method="pitr", target_time="2026-13-45 25:99")
    run = run_playbook("restore.yml", extra)
    assert run.rc != 0
    assert "The pitr_restore failed at" in run.stdout, run.stdout[-3000:]
    [event] = events(tmp_path)
    assert event["kind"] == "pitr_restore" and event["outcome"] == "failed"
    assert event["rpo_s"] is None and event["rto_s"] is None and event["changed"] is False
    assert any("'2026-13-45 25:99' is not an ISO-8601 time" in note for note in event["notes"]), event["notes"]
    assert event["details"]["error"]
    assert Path(event["report"]["html"]).is_file()
    assert_printed_paths_exist(run)


@pytest.mark.parametrize(
    ("extra", "kind", "error"),
    [
        ({"restore_method": "nonsense"}, "restore", "restore_method must be logical"),
        ({"pgdr_migrations_dir": "/nonexistent/migrations"}, "restore", "migrations folder /nonexistent/migrations"),
        ({"reason": ""}, "restore", "Say why"),
        ({"kind": "drill", "backup": "20200101T000001Z"}, "drill", "unknown backup id 20200101T000001Z"),
    ],
)
def test_a_run_stopped_before_the_restore_is_recorded(run_playbook, sandbox, prefix, tmp_path, extra, kind, error):
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path, **extra))
    assert run.rc != 0
    [event] = events(tmp_path)
    assert event["kind"] == kind and event["outcome"] == "failed" and event["changed"] is False
    assert error in event["details"]["error"], event["details"]
    assert event["backup"].get("objects", []) == [] and event["target"] is None
    entry = (tmp_path / "ops" / "incidents.md").read_text()
    assert f"{kind} FAILED" in entry and "- Error: " in entry
    assert_printed_paths_exist(run)
