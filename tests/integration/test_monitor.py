"""Monitoring against the sandbox: failed runs and missed schedules alert, a healthy state does not, a broken sink
never changes a backup's outcome, the metrics textfile follows success and failure, and --check sends nothing.

A local HTTP receiver stands in for the chat webhook and the healthchecks service and records every request.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml
from alert_receiver import Receiver, closed_port
from conftest import s3_params

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, logical_backup

pytestmark = pytest.mark.integration

# The real backup playbook with only the dump and the reporting (no copy, Storage or snapshot steps), so the
# counts below are the backup's own.
BACKUP_WITH_NOTIFY = f"""
- name: The backup playbook, dump and reporting only
  ansible.builtin.import_playbook: {Path(__file__).resolve().parents[2] / "playbooks" / "backup.yml"}
  vars:
    pgdr_backup_secondary_copy: false
    pgdr_backup_storage_assets: false
    pgdr_backup_config_snapshot: false
"""
WRONG_SECRET = "Wr0ngSecretKeyForTheMonitorTest"
HOOK_TOKEN = "/hook/T000/B000/monitorTestWebhookToken42"


@pytest.fixture
def rx():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def backup_playbook(tmp_path):
    path = tmp_path / "backup_with_notify.yml"
    path.write_text("---\n" + BACKUP_WITH_NOTIFY.lstrip())
    return str(path)


def take_backup(sandbox, target, prefix):
    req = logical_backup.BackupRequest(
        "production", sandbox["production"]["dsn"], target, prefix=prefix, window="every_run"
    )
    return logical_backup.run(req)


def monitor_vars(prefix, rx, **extra):
    return {
        "pgdr_backup_prefix": prefix,
        "pgdr_monitor_sinks": [
            {"type": "webhook", "name": "chat", "url": rx.url(HOOK_TOKEN)},
            {"type": "healthchecks", "name": "monitor-check", "url": rx.url("/ping/monitor-uuid")},
        ],
        **extra,
    }


def later(hours):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


METRIC = re.compile(r'^([a-z_]+)\{source="production"\} (\S+)$', re.MULTILINE)


def metrics(path):
    return {name: float(value) for name, value in METRIC.findall(path.read_text())}


# --- the monitor ------------------------------------------------------------------------------------------------


def test_a_healthy_state_alerts_nothing_and_pings_the_monitor_check(run_playbook, sandbox, s3_target, prefix, rx):
    take_backup(sandbox, s3_target, prefix)
    run = run_playbook("playbooks/monitor.yml", monitor_vars(prefix, rx))
    assert run.rc == 0, run.stdout[-3000:]
    assert run.changed() == 0
    assert rx.paths() == ["/ping/monitor-uuid"]  # no webhook, one success ping
    assert rx.requests[0]["body"].decode().startswith("pgdr monitor: backups of production (local) are fresh")
    (fresh,) = run.results("pgdr.supabase.freshness")
    assert fresh["ok"] is True and fresh["checks"][0]["name"] == "logical"


def test_a_missed_schedule_alerts_and_fails_the_job(run_playbook, sandbox, s3_target, prefix, rx):
    result = take_backup(sandbox, s3_target, prefix)
    run = run_playbook("playbooks/monitor.yml", monitor_vars(prefix, rx, freshness_now=later(30)))
    assert run.rc != 0
    assert "backups of production are STALE: logical: newest complete backup" in run.stdout
    assert result["backup_id"] in run.stdout
    assert sorted(rx.paths()) == sorted([HOOK_TOKEN, "/ping/monitor-uuid/fail"])
    payload = json.loads(rx.bodies(HOOK_TOKEN)[0])
    assert "STALE" in payload["text"] and "a scheduled backup was missed or failed" in payload["text"]
    assert "STALE" in rx.bodies("/ping/monitor-uuid/fail")[0].decode()
    # The webhook's token never shows in the job's output.
    assert "monitorTestWebhookToken42" not in run.stdout


def test_no_backup_at_all_alerts(run_playbook, prefix, rx):
    run = run_playbook("playbooks/monitor.yml", monitor_vars(prefix, rx))
    assert run.rc != 0
    assert "no complete backup of production" in run.stdout
    assert HOOK_TOKEN in rx.paths() and "/ping/monitor-uuid/fail" in rx.paths()


def test_a_killed_run_leaves_an_incomplete_backup_that_alerts(run_playbook, sandbox, s3_target, prefix, rx):
    take_backup(sandbox, s3_target, prefix)
    newer = catalog.backup_id_for(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), "every_run")
    s3_target.put_bytes(catalog.backup_prefix(prefix, "production", newer) + "data.pgdump.zst", b"partial")
    run = run_playbook("playbooks/monitor.yml", monitor_vars(prefix, rx))
    assert run.rc != 0
    assert f"incomplete backup {newer} newer than it" in run.stdout
    assert HOOK_TOKEN in rx.paths()


def test_the_secondary_check_alerts_when_the_newest_backup_is_not_secured(run_playbook, sandbox, s3_target, prefix, rx):
    result = take_backup(sandbox, s3_target, prefix)
    run = run_playbook("playbooks/monitor.yml", monitor_vars(prefix, rx, pgdr_monitor_secondary=True))
    assert run.rc != 0
    (fresh,) = run.results("pgdr.supabase.freshness")
    assert fresh["stale"] == ["secondary"]
    assert f"not secured: {result['backup_id']} (no secure copy)" in run.stdout
    assert "/ping/monitor-uuid/fail" in rx.paths()


def test_check_mode_of_the_monitor_sends_nothing(run_playbook, sandbox, s3_target, prefix, rx):
    take_backup(sandbox, s3_target, prefix)
    healthy = run_playbook("playbooks/monitor.yml", monitor_vars(prefix, rx), check=True)
    assert healthy.rc == 0, healthy.stdout[-3000:]
    stale = run_playbook("playbooks/monitor.yml", monitor_vars(prefix, rx, freshness_now=later(30)), check=True)
    assert stale.rc != 0 and "STALE" in stale.stdout  # the same verdict in check mode
    assert rx.requests == []
    (notify,) = stale.results("pgdr.supabase.notify")
    assert [d["delivered"] for d in notify["deliveries"]] == [False, False]
    assert notify["deliveries"][1]["action"].endswith("/fail")


def test_an_unreachable_monitor_sink_is_reported_separately(run_playbook, sandbox, s3_target, prefix):
    take_backup(sandbox, s3_target, prefix)
    sinks = [{"type": "healthchecks", "name": "monitor-check", "url": f"http://127.0.0.1:{closed_port()}/p/u"}]
    run = run_playbook("playbooks/monitor.yml", {"pgdr_backup_prefix": prefix, "pgdr_monitor_sinks": sinks})
    assert run.rc != 0
    assert "backups of production are fresh, alert delivery failed: monitor-check" in run.stdout
    (fresh,) = run.results("pgdr.supabase.freshness")
    assert fresh["ok"] is True


# --- backup runs reporting their outcome --------------------------------------------------------------------------


def test_a_failed_backup_alerts_with_its_own_error(run_playbook, backup_playbook, sandbox, prefix, rx, tmp_path):
    s3 = dict(s3_params(sandbox), secret_key=WRONG_SECRET)
    sinks = [
        {"type": "webhook", "name": "chat", "url": rx.url(HOOK_TOKEN)},
        {"type": "healthchecks", "name": "backup-check", "url": rx.url("/ping/backup-uuid")},
        {"type": "prometheus_textfile", "name": "metrics", "dir": str(tmp_path / "metrics")},
    ]
    run = run_playbook(backup_playbook, {"pgdr_backup_prefix": prefix, "pgdr_backup_s3": s3, "pgdr_alert_sinks": sinks})
    assert run.rc != 0
    assert rx.paths() == ["/ping/backup-uuid/start", HOOK_TOKEN, "/ping/backup-uuid/fail"]
    payload = json.loads(rx.bodies(HOOK_TOKEN)[0])
    assert payload["text"].startswith("pgdr backup of production (local) FAILED: [")
    assert "access to the bucket was refused" in payload["text"]
    assert "access to the bucket was refused" in rx.bodies("/ping/backup-uuid/fail")[0].decode()
    assert re.search(r"backup of production failed: \[.*access to the bucket was refused", run.stdout)
    assert WRONG_SECRET not in run.stdout and WRONG_SECRET not in json.dumps([r["body"].decode() for r in rx.requests])
    assert "monitorTestWebhookToken42" not in run.stdout
    values = metrics(tmp_path / "metrics" / "pgdr_backup_production.prom")
    assert values["pgdr_backup_failures_total"] == 1 and values["pgdr_backup_last_run_success"] == 0
    assert "pgdr_backup_last_success_timestamp_seconds" not in values


def test_the_notify_module_alone_reports_a_failure(run_playbook, rx, tmp_path):
    """The failure path without a backup: backup_notify given outcome=failed and a message."""
    play = [
        {
            "name": "Report a failure",
            "hosts": "supabase_projects",
            "gather_facts": False,
            "roles": [
                {
                    "role": "pgdr.supabase.backup_notify",
                    "vars": {
                        "backup_notify_outcome": "failed",
                        "backup_notify_result": "[dump] pg_dump exited 1: out of disk",
                        "backup_notify_sinks": [{"type": "webhook", "url": rx.url(HOOK_TOKEN)}],
                    },
                }
            ],
        }
    ]
    path = tmp_path / "notify.yml"
    path.write_text(yaml.safe_dump(play))
    run = run_playbook(str(path))
    assert run.rc != 0
    assert "backup of production failed: [dump] pg_dump exited 1: out of disk" in run.stdout
    assert "FAILED: [dump] pg_dump exited 1: out of disk" in json.loads(rx.bodies(HOOK_TOKEN)[0])["text"]


def test_an_unreachable_sink_does_not_change_a_failed_backups_outcome(run_playbook, backup_playbook, sandbox, prefix):
    s3 = dict(s3_params(sandbox), secret_key=WRONG_SECRET)
    sinks = [{"type": "webhook", "name": "chat", "url": f"http://127.0.0.1:{closed_port()}/hook", "retries": 1}]
    run = run_playbook(backup_playbook, {"pgdr_backup_prefix": prefix, "pgdr_backup_s3": s3, "pgdr_alert_sinks": sinks})
    assert run.rc != 0
    assert re.search(
        r"backup of production failed: \[.*access to the bucket was refused.*; alert delivery also failed: chat",
        run.stdout,
    )


def test_an_unreachable_sink_after_a_successful_backup(run_playbook, backup_playbook, s3_target, prefix, tmp_path):
    sinks = [
        {"type": "webhook", "name": "chat", "url": f"http://127.0.0.1:{closed_port()}/hook", "on": ["success"]},
        {"type": "prometheus_textfile", "name": "metrics", "dir": str(tmp_path / "metrics")},
    ]
    run = run_playbook(backup_playbook, {"pgdr_backup_prefix": prefix, "pgdr_alert_sinks": sinks})
    assert run.rc != 0
    (backup,) = run.results("pgdr.supabase.logical_backup")
    assert backup["changed"] is True and not backup.get("failed")
    assert f"backup ok ({backup['backup_id']} of production), alert delivery failed: chat" in run.stdout
    # The backup is there and committed; the other sink still got its report.
    assert s3_target.get_json(backup["manifest_key"])["backup_id"] == backup["backup_id"]
    assert metrics(tmp_path / "metrics" / "pgdr_backup_production.prom")["pgdr_backup_last_run_success"] == 1

    warn_only = run_playbook(
        backup_playbook,
        {"pgdr_backup_prefix": prefix, "pgdr_alert_sinks": sinks, "pgdr_alert_fail_on_delivery_error": False},
    )
    assert warn_only.rc == 0, warn_only.stdout[-3000:]
    assert "alert sink chat" in warn_only.stdout  # the warning


def test_the_textfile_after_success_then_failure(run_playbook, backup_playbook, sandbox, prefix, rx, tmp_path):
    sinks = [
        {"type": "prometheus_textfile", "name": "metrics", "dir": str(tmp_path / "metrics")},
        {"type": "webhook", "name": "chat", "url": rx.url(HOOK_TOKEN)},
        {"type": "healthchecks", "name": "backup-check", "url": rx.url("/ping/backup-uuid")},
    ]
    path = tmp_path / "metrics" / "pgdr_backup_production.prom"
    ok = run_playbook(backup_playbook, {"pgdr_backup_prefix": prefix, "pgdr_alert_sinks": sinks})
    assert ok.rc == 0, ok.stdout[-3000:]
    assert ok.changed() == 1  # only the backup; reporting changes nothing
    (backup,) = ok.results("pgdr.supabase.logical_backup")
    # A healthy run: no chat message, the start and success pings only.
    assert rx.paths() == ["/ping/backup-uuid/start", "/ping/backup-uuid"]
    after_success = metrics(path)
    assert after_success["pgdr_backup_failures_total"] == 0
    assert after_success["pgdr_backup_last_run_success"] == 1
    assert after_success["pgdr_backup_last_size_bytes"] == backup["summary"]["size"]
    assert after_success["pgdr_backup_last_duration_seconds"] == backup["summary"]["duration_s"]
    finished = dt.datetime.fromisoformat(backup["summary"]["finished_at"].replace("Z", "+00:00")).timestamp()
    assert after_success["pgdr_backup_last_success_timestamp_seconds"] == pytest.approx(finished, abs=0.01)
    text = path.read_text()
    assert "# TYPE pgdr_backup_failures_total counter" in text
    assert "# HELP pgdr_backup_last_run_success " in text

    s3 = dict(s3_params(sandbox), secret_key=WRONG_SECRET)
    failed = run_playbook(
        backup_playbook, {"pgdr_backup_prefix": prefix, "pgdr_backup_s3": s3, "pgdr_alert_sinks": sinks}
    )
    assert failed.rc != 0
    after_failure = metrics(path)
    assert after_failure["pgdr_backup_failures_total"] == 1
    assert after_failure["pgdr_backup_last_run_success"] == 0
    assert (
        after_failure["pgdr_backup_last_run_timestamp_seconds"]
        > after_success["pgdr_backup_last_run_timestamp_seconds"]
    )
    for kept in ("last_success_timestamp_seconds", "last_size_bytes", "last_duration_seconds"):
        assert after_failure[f"pgdr_backup_{kept}"] == after_success[f"pgdr_backup_{kept}"]


def test_check_mode_of_a_backup_with_notify_sends_nothing(run_playbook, backup_playbook, prefix, rx, tmp_path):
    sinks = [
        {"type": "prometheus_textfile", "name": "metrics", "dir": str(tmp_path / "metrics")},
        {"type": "healthchecks", "name": "backup-check", "url": rx.url("/ping/backup-uuid")},
    ]
    run = run_playbook(backup_playbook, {"pgdr_backup_prefix": prefix, "pgdr_alert_sinks": sinks}, check=True)
    assert run.rc == 0, run.stdout[-3000:]
    assert run.changed() == 1  # the backup it would take
    assert rx.requests == []
    assert not (tmp_path / "metrics").exists()


def test_backup_yml_with_a_wrong_secret_alerts(run_playbook, sandbox, prefix, rx):
    s3 = dict(s3_params(sandbox), secret_key=WRONG_SECRET)
    sinks = [{"type": "webhook", "name": "chat", "url": rx.url(HOOK_TOKEN)}]
    run = run_playbook(
        "playbooks/backup.yml", {"pgdr_backup_prefix": prefix, "pgdr_backup_s3": s3, "pgdr_alert_sinks": sinks}
    )
    assert run.rc != 0
    assert "access to the bucket was refused" in json.loads(rx.bodies(HOOK_TOKEN)[0])["text"]
    assert WRONG_SECRET not in run.stdout
