"""The alert sinks without a sandbox: payloads, healthchecks pings, the Prometheus textfile and its counter,
retries and timeouts, URL masking, and the pgdr.supabase.notify module (check mode sends nothing; a broken sink
never fails)."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pytest
from alert_receiver import Receiver, closed_port
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pgdr.supabase.plugins.module_utils import alerts

REPO = Path(__file__).resolve().parents[2]
TOKEN_PATH = "/services/T0000/B0000/XyZsecretWebhookToken123"
NOW = 1_790_000_000.0


def backup_result(backup_id="20260912T000000Z", size=12345, duration=4.2):
    return {
        "changed": True,
        "backup_id": backup_id,
        "msg": f"backup {backup_id} of production taken",
        "summary": {
            "backup_id": backup_id,
            "size": size,
            "duration_s": duration,
            "finished_at": "2026-09-12T00:00:04.200000Z",
        },
        "manifest": {"duration_s": duration, "finished_at": "2026-09-12T00:00:04.200000Z"},
        "invocation": {"module_args": {"dsn": "postgresql://postgres:pw@db/postgres"}},
    }


def no_sleep(_seconds):
    pass


@pytest.fixture
def rx():
    with Receiver() as receiver:
        yield receiver


# --- masking ----------------------------------------------------------------------------------------------------


def test_mask_url_keeps_scheme_and_host_only():
    assert alerts.mask_url("https://hooks.example.com" + TOKEN_PATH + "?x=1") == "https://hooks.example.com/…"
    assert alerts.mask_url("https://user:pw@hc.example.com:8443/ping/uuid") == "https://hc.example.com:8443/…"
    assert alerts.mask_url("not a url") == "<invalid url>"
    assert alerts.mask_url(None) == "<invalid url>"


def test_an_error_from_a_sink_never_shows_its_token(rx):
    rx.statuses[TOKEN_PATH] = [404]
    sinks = [{"type": "webhook", "url": rx.url(TOKEN_PATH)}]
    records = alerts.deliver(sinks, alerts.backup_event("failed", "production", "boom"), sleep=no_sleep)
    text = json.dumps(records, ensure_ascii=False)
    assert records[0]["error"] and "404" in records[0]["error"]
    assert "XyZsecretWebhookToken123" not in text
    assert TOKEN_PATH not in text
    assert f"http://127.0.0.1:{rx.port}/…" in text


# --- events and payloads ----------------------------------------------------------------------------------------


def test_backup_event_takes_report_fields_only():
    event = alerts.backup_event("success", "production", backup_result(), environment="prod", now=NOW)
    assert event["backup_id"] == "20260912T000000Z"
    assert event["size_bytes"] == 12345
    assert event["duration_s"] == 4.2
    assert event["finished_at"] == pytest.approx(1_789_171_204.2)
    assert "invocation" not in json.dumps(event)
    assert "pw@" not in json.dumps(event)


def test_failed_event_keeps_the_backups_own_message():
    event = alerts.backup_event("failed", "production", "[check bucket] S3 answered SignatureDoesNotMatch")
    assert event["message"] == "[check bucket] S3 answered SignatureDoesNotMatch"
    failed_task = {"failed": True, "msg": "top", "error": {"message": "[connect source] refused"}}
    assert alerts.backup_event("failed", "production", failed_task)["message"] == "[connect source] refused"
    assert alerts.backup_event("failed", "production", None)["message"].startswith("the backup failed")


def test_unknown_outcome_is_refused():
    with pytest.raises(alerts.DRError, match="unknown backup outcome"):
        alerts.backup_event("maybe", "production")


def test_webhook_payload_is_slack_compatible(rx):
    event = alerts.backup_event("failed", "production", "disk full", environment="prod")
    records = alerts.deliver([{"type": "webhook", "url": rx.url("/hook")}], event, sleep=no_sleep)
    assert records[0]["delivered"] is True and records[0]["status"] == 200
    (request,) = rx.requests
    assert request["method"] == "POST"
    assert request["headers"]["Content-Type"] == "application/json"
    payload = json.loads(request["body"])
    assert payload["text"] == "pgdr backup of production (prod) FAILED: disk full"
    (attachment,) = payload["attachments"]
    assert attachment["color"] == "danger"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields["source"] == "production"
    assert fields["outcome"] == "failed"
    assert fields["message"] == "disk full"


def test_webhook_skips_success_by_default_and_sends_it_when_asked(rx):
    event = alerts.backup_event("success", "production", backup_result())
    records = alerts.deliver([{"type": "webhook", "url": rx.url("/hook")}], event)
    assert records[0]["skipped"] is True and records[0]["delivered"] is False
    assert rx.requests == []
    records = alerts.deliver([{"type": "webhook", "url": rx.url("/hook"), "on": ["success"]}], event)
    assert records[0]["delivered"] is True
    payload = json.loads(rx.requests[0]["body"])
    assert payload["text"] == "pgdr backup of production succeeded: 20260912T000000Z"
    assert payload["attachments"][0]["color"] == "good"


def test_stale_freshness_event_names_the_stale_check(rx):
    checks = [
        {"name": "logical", "ok": False, "age_s": 30 * 3600, "threshold_s": 26 * 3600, "details": "too old"},
        {"name": "pitr", "ok": True, "age_s": 60, "threshold_s": 3600, "details": "fine"},
    ]
    event = alerts.freshness_event("production", checks)
    assert event["outcome"] == "stale" and event["failing"] == ["logical"]
    alerts.deliver([{"type": "webhook", "url": rx.url("/hook")}], event)
    payload = json.loads(rx.requests[0]["body"])
    assert "STALE" in payload["text"] and "logical: too old" in payload["text"]
    titles = [f["title"] for f in payload["attachments"][0]["fields"]]
    assert "logical (STALE)" in titles and "pitr (ok)" in titles


# --- healthchecks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "suffix"),
    [("start", "/start"), ("success", ""), ("failed", "/fail"), ("fresh", ""), ("stale", "/fail")],
)
def test_healthchecks_pings_the_right_url(rx, outcome, suffix):
    if outcome in ("fresh", "stale"):
        event = alerts.freshness_event("production", [{"name": "logical", "ok": outcome == "fresh", "details": "d"}])
    else:
        event = alerts.backup_event(outcome, "production", "broken" if outcome == "failed" else backup_result())
    records = alerts.deliver([{"type": "healthchecks", "url": rx.url("/ping/abc-uuid/")}], event)
    assert records[0]["delivered"] is True
    assert rx.paths() == [f"/ping/abc-uuid{suffix}"]
    body = rx.requests[0]["body"].decode()
    assert body.startswith("pgdr ")
    if outcome == "failed":
        assert "broken" in body


# --- retries and timeouts ---------------------------------------------------------------------------------------


def test_a_5xx_is_retried_then_delivered(rx):
    rx.statuses["/hook"] = [503, 502]
    sleeps = []
    records = alerts.deliver(
        [{"type": "webhook", "url": rx.url("/hook")}], alerts.backup_event("failed", "p", "x"), sleep=sleeps.append
    )
    assert records[0]["delivered"] is True and records[0]["attempts"] == 3
    assert len(rx.requests) == 3
    assert sleeps == [0.5, 1.0]


def test_a_4xx_is_not_retried(rx):
    rx.statuses["/hook"] = [400]
    records = alerts.deliver(
        [{"type": "webhook", "url": rx.url("/hook")}], alerts.backup_event("failed", "p", "x"), sleep=no_sleep
    )
    assert records[0]["delivered"] is False and records[0]["attempts"] == 1 and records[0]["status"] == 400
    assert len(rx.requests) == 1


def test_an_unreachable_sink_fails_after_its_retries_without_raising():
    url = f"http://127.0.0.1:{closed_port()}/ping/uuid"
    records = alerts.deliver(
        [{"type": "healthchecks", "url": url, "retries": 1}], alerts.backup_event("failed", "p", "x"), sleep=no_sleep
    )
    assert records[0]["delivered"] is False and records[0]["attempts"] == 2
    assert "cannot reach" in records[0]["error"]
    failed, line = alerts.delivery_summary(records)
    assert failed == records and "healthchecks[0]" in line


def test_a_hanging_sink_times_out():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(5)  # accepts connections, never answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        started = time.monotonic()
        records = alerts.deliver(
            [{"type": "webhook", "url": url, "timeout": 1, "retries": 0}],
            alerts.backup_event("failed", "p", "x"),
        )
    assert time.monotonic() - started < 5
    assert records[0]["delivered"] is False and "timed out" in records[0]["error"]


def test_misconfigured_sinks_are_reported_not_raised(tmp_path):
    sinks = [
        {"type": "webhook", "name": "chat"},
        {"type": "healthchecks", "url": "ftp://example.com/x"},
        {"type": "prometheus_textfile"},
        {"type": "pager"},
        {"type": "webhook", "url": "http://127.0.0.1:1/x", "on": ["sometimes"]},
    ]
    records = alerts.deliver(sinks, alerts.backup_event("failed", "p", "x"))
    assert [bool(r["error"]) for r in records] == [True] * 5
    assert "chat needs an http(s) url" in records[0]["error"]
    assert "unknown sink type" in records[3]["error"]
    assert "unknown event" in records[4]["error"]


def test_check_mode_sends_and_writes_nothing(rx, tmp_path):
    sinks = [
        {"type": "webhook", "url": rx.url("/hook")},
        {"type": "healthchecks", "url": rx.url("/ping/u")},
        {"type": "prometheus_textfile", "dir": str(tmp_path)},
    ]
    records = alerts.deliver(sinks, alerts.backup_event("failed", "production", "x"), check_mode=True)
    assert rx.requests == []
    assert list(tmp_path.iterdir()) == []
    assert [r["delivered"] for r in records] == [False, False, False]
    assert records[0]["action"].startswith("POST a chat message")
    assert records[1]["action"].endswith("/fail")
    assert records[2]["action"].startswith("write ")
    assert records[2]["metrics"]["pgdr_backup_failures_total"] == 1


# --- the Prometheus textfile ------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-z_]+)\{source="production"\} (\S+)$')


def parse(path):
    text = Path(path).read_text()
    samples = {m[1]: float(m[2]) for m in (SAMPLE.match(line) for line in text.splitlines()) if m}
    return text, samples


def test_textfile_after_success_failure_and_success(tmp_path):
    sink = [{"type": "prometheus_textfile", "dir": str(tmp_path)}]
    path = tmp_path / "pgdr_backup_production.prom"

    alerts.deliver(sink, alerts.backup_event("success", "production", backup_result(), now=NOW))
    text, samples = parse(path)
    for name, kind, _unused in alerts.METRICS:
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} {kind}\n{name}{{" in text
    assert samples == {
        "pgdr_backup_last_success_timestamp_seconds": pytest.approx(1_789_171_204.2),
        "pgdr_backup_last_duration_seconds": 4.2,
        "pgdr_backup_last_size_bytes": 12345,
        "pgdr_backup_failures_total": 0,
        "pgdr_backup_last_run_timestamp_seconds": NOW,
        "pgdr_backup_last_run_success": 1,
        "pgdr_backup_last_run_warnings": 0,
    }
    assert oct(path.stat().st_mode & 0o777) == "0o644"

    for n in (1, 2):
        alerts.deliver(sink, alerts.backup_event("failed", "production", "boom", now=NOW + 100 * n))
        _unused, after = parse(path)
        assert after["pgdr_backup_failures_total"] == n
        assert after["pgdr_backup_last_run_success"] == 0
        assert after["pgdr_backup_last_run_timestamp_seconds"] == NOW + 100 * n
        # The last success's values survive failures.
        assert (
            after["pgdr_backup_last_success_timestamp_seconds"] == samples["pgdr_backup_last_success_timestamp_seconds"]
        )
        assert after["pgdr_backup_last_size_bytes"] == 12345

    alerts.deliver(sink, alerts.backup_event("success", "production", backup_result(size=999), now=NOW + 1000))
    _unused, last = parse(path)
    assert last["pgdr_backup_failures_total"] == 2  # a counter never resets on success
    assert last["pgdr_backup_last_run_success"] == 1
    assert last["pgdr_backup_last_size_bytes"] == 999
    assert [p.name for p in tmp_path.iterdir()] == ["pgdr_backup_production.prom"]  # no temporary file left


def test_textfile_of_a_first_run_that_failed_has_no_success_metrics(tmp_path):
    alerts.deliver([{"type": "prometheus_textfile", "dir": str(tmp_path)}], alerts.backup_event("failed", "db1", "x"))
    text = (tmp_path / "pgdr_backup_db1.prom").read_text()
    assert "pgdr_backup_last_success_timestamp_seconds" not in text
    assert 'pgdr_backup_failures_total{source="db1"} 1\n' in text


def test_textfile_keeps_other_sources_apart(tmp_path):
    sink = [{"type": "prometheus_textfile", "dir": str(tmp_path)}]
    alerts.deliver(sink, alerts.backup_event("failed", "a", "x"))
    alerts.deliver(sink, alerts.backup_event("failed", "b", "x"))
    alerts.deliver(sink, alerts.backup_event("failed", "a", "x"))
    assert 'pgdr_backup_failures_total{source="a"} 2' in (tmp_path / "pgdr_backup_a.prom").read_text()
    assert 'pgdr_backup_failures_total{source="b"} 1' in (tmp_path / "pgdr_backup_b.prom").read_text()


def test_textfile_folder_is_made_when_missing_and_an_unwritable_one_is_a_delivery_failure(tmp_path):
    sink = {"type": "prometheus_textfile", "dir": str(tmp_path / "new" / "metrics")}
    records = alerts.deliver([sink], alerts.backup_event("success", "p"))
    assert records[0]["delivered"] is True and (tmp_path / "new/metrics/pgdr_backup_p.prom").is_file()
    (tmp_path / "a-file").write_text("")
    records = alerts.deliver([dict(sink, dir=str(tmp_path / "a-file"))], alerts.backup_event("success", "p"))
    assert records[0]["delivered"] is False and "Not a directory" in records[0]["error"]


def test_textfile_ignores_freshness_events(tmp_path):
    event = alerts.freshness_event("p", [{"name": "logical", "ok": False, "details": "old"}])
    records = alerts.deliver([{"type": "prometheus_textfile", "dir": str(tmp_path)}], event)
    assert records[0]["skipped"] is True and list(tmp_path.iterdir()) == []


# --- the pgdr.supabase.notify module ---------------------------------------------------------------------------


def run_notify(args, capsys, check_mode=False):
    spec = importlib.util.spec_from_file_location("_pgdr_test_notify", REPO / "plugins/modules/notify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    return exited.value.code, json.loads(capsys.readouterr().out)


def test_notify_module_reports_a_broken_sink_without_failing(rx, capsys):
    rx.statuses["/hook"] = [500, 500, 500]
    url = rx.url("/hook/" + TOKEN_PATH)
    args = {
        "outcome": "failed",
        "source": "production",
        "result": "the dump failed",
        "sinks": [
            {"type": "webhook", "name": "chat", "url": rx.url("/hook"), "retries": 0},
            {"type": "healthchecks", "url": url},
        ],
    }
    code, out = run_notify(args, capsys)
    assert code == 0
    assert out["changed"] is False
    assert out["failed_sinks"] == ["chat"]
    assert "chat" in out["delivery_error"] and "HTTP 500" in out["delivery_error"]
    assert out["event"]["message"] == "the dump failed"
    assert "alert sink chat (http://127.0.0.1:" in json.dumps(out["warnings"])
    assert "XyZsecretWebhookToken123" not in json.dumps(out)


def test_notify_module_check_mode_sends_nothing(rx, capsys, tmp_path):
    args = {
        "outcome": "success",
        "source": "production",
        "result": backup_result(),
        "sinks": [
            {"type": "webhook", "url": rx.url("/hook"), "on": ["success"]},
            {"type": "healthchecks", "url": rx.url("/ping")},
            {"type": "prometheus_textfile", "dir": str(tmp_path)},
        ],
    }
    code, out = run_notify(args, capsys, check_mode=True)
    assert code == 0 and out["changed"] is False
    assert rx.requests == [] and list(tmp_path.iterdir()) == []
    assert out["msg"].startswith("would report success of production to 3 of 3 sinks")
    assert [d["action"] is not None for d in out["deliveries"]] == [True, True, True]


def test_notify_module_marks_urls_no_log():
    spec = importlib.util.spec_from_file_location("_pgdr_test_notify2", REPO / "plugins/modules/notify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SINK_OPTIONS["url"]["no_log"] is True
