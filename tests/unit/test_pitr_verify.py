"""Issue 15 without a sandbox: an empty connection string is refused everywhere, the PITR catalog comparison says
when the source's schema changed since the target, and the record shows the moment restored and what was not
checked."""

from __future__ import annotations

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import audit, pages, pg, pitr_verify
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError


@pytest.mark.parametrize("dsn", ["", "   ", None])
def test_an_empty_connection_string_is_refused_before_libpq_sees_it(dsn, monkeypatch):
    monkeypatch.setenv("PGHOST", "127.0.0.1")  # what libpq would fall back to
    for call in (lambda: pg.connect(dsn), lambda: pg.client_env(dsn)):
        with pytest.raises(DRError, match="no connection string was given") as err:
            call()
        assert "libpq's defaults" in str(err.value)


def fp(**objects):
    return {"version": 1, "flavor": "supabase", "objects": objects, "default_acls": {}}


TABLE = {"def": "d1", "owner": "postgres", "acl": ["postgres=arwdDxt/postgres"]}


def test_the_catalog_is_compared_with_the_source_only_when_no_migration_ran_since_the_target():
    same = (["1", "2"], "supabase", fp(**{"table public.t": TABLE}))
    check, why = pitr_verify.catalog_against_source(same, (["1", "2"], "supabase", fp(**{"table public.t": TABLE})))
    assert check["ok"] and why is None and "source's current catalog" in check["summary"]

    changed = (["1", "2"], "supabase", fp(**{"table public.t": TABLE, "table public.u": TABLE}))
    check, _unused = pitr_verify.catalog_against_source(same, changed)
    assert not check["ok"] and "outside migrations" in check["summary"]
    assert not any("the backup" in d for d in check["details"]["differences"])

    check, why = pitr_verify.catalog_against_source(same, (["1", "2", "3"], "supabase", changed[2]))
    assert check is None and "migrations applied on the source since: 3" in why


def test_planned_checks_name_the_planned_cluster_and_connect_nowhere():
    plan = pitr_verify.planned("new cluster /x/data (planned) on 127.0.0.1:a free port", None, "/m", True)
    assert plan["would_run"] == ["migrations", "amcheck"] and plan["checks"] == []
    assert "(planned)" in plan["msg"] and plan["not_checked"]


def test_the_record_shows_the_moment_restored_and_what_was_not_checked():
    point = {
        "target_time": "2026-12-01T10:00:10Z",
        "restored_to": "2026-12-01T10:00:07Z",
        "last_replayed_commit_at": "2026-12-01T10:00:07Z",
        "timeline": 2,
        "base_backup": "20261201-090000F",
    }
    event = audit.build_event(
        "pitr_restore",
        "success",
        "r",
        "ops",
        rpo_s=3.0,
        point_in_time="2026-12-01T10:00:10Z",
        details={"point_in_time": point, "not_checked": ["content: no digests of that moment"]},
    )
    assert event["point_in_time"] == "2026-12-01T10:00:10Z"
    entry = audit.markdown_entry(event)
    assert "- Point in time: target 2026-12-01T10:00:10Z, replay stopped at 2026-12-01T10:00:07Z" in entry
    assert "timeline 2, base backup 20261201-090000F" in entry and "- Not checked: content" in entry
    page = pages.run_page(event)
    assert "<th>Point in time</th>" in page and "<th>Not checked</th>" in page
    plain = audit.build_event("restore", "success", "r", "ops")
    assert audit.point_in_time_text(plain) is None and "Point in time" not in audit.markdown_entry(plain)
