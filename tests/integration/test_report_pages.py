"""A sandbox drill's report page and history page, opened by a real browser (Debian's chromium, headless): it
renders both to PNG and dumps their DOM, which must hold the verdict, every step of the timeline and the RTO figure,
and no markup from the operator's reason. Also: the incident log of the drill, and no sandbox secret in either page.

chromium is installed by `make test` (scripts/ensure-system-packages chromium); without it these tests skip,
naming the package."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from backup_helpers import drop_database
from test_restore_playbooks import events, restore_vars, take_backup

from ansible_collections.pgdr.supabase.plugins.module_utils import render

pytestmark = pytest.mark.integration

REASON = "quarterly drill\n## 2026-01-01T00:00:00Z drill SUCCESS\n<script>document.title='owned'</script>"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    if not path:
        pytest.skip(
            "the Debian package chromium is not installed, so no browser can render the report pages: "
            "`make test` installs it (scripts/ensure-system-packages chromium, as root with apt-get)"
        )
    return path


def browse(chromium, page, tmp_path, *action):
    """Run chromium headless on a file with a fresh profile; (exit code, stdout, stderr)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, Path(page).as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def png_pixels(path):
    """(width, height, number of distinct bytes in the decoded image): a blank page has a handful."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def dom_text(dom):
    """The text a reader sees: the dumped DOM without its tags, entities decoded."""
    import html

    return html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", " ", dom, flags=re.DOTALL)))


def sandbox_secrets(state):
    found = [state["s3"]["secret_key"]]
    for target in ("production", "staging"):
        found += [state[target].get(k) for k in ("password", "admin_password", "anon_key", "service_role_key")]
        found += list((state[target].get("platform_passwords") or {}).values())
    identity = Path(state["age"]["identity_file"]).read_text()
    found += re.findall(r"AGE-SECRET-KEY-[0-9A-Z]+", identity)
    return [s for s in found if s]


@pytest.fixture
def drill(run_playbook, sandbox, s3_target, prefix, tmp_path):
    """A sandbox drill of a fresh backup, with a reason that tries to forge an entry and inject a script."""
    manifest = take_backup(sandbox, s3_target, prefix)
    extra = restore_vars(prefix, tmp_path, drill_reason=REASON)
    extra.pop("reason")
    run = run_playbook("playbooks/drill.yml", extra)
    yield run, manifest
    drop_database(sandbox, f"restore_{manifest['backup_id'].lower()}")


@pytest.mark.slow
def test_drill_pages_render_in_a_real_browser(drill, chromium, sandbox, tmp_path):
    run, manifest = drill
    assert run.rc == 0, run.stdout[-3000:]
    [event] = events(tmp_path)
    page, history = Path(event["report"]["html"]), Path(event["report"]["history"])
    # The closing lines name both pages, and they exist.
    assert f"report (HTML): {page}" in run.stdout and f"history: {history}" in run.stdout
    assert page.is_file() and history.is_file()
    steps = list(event["durations_s"])
    assert {"data", "post_data", "schema"} <= set(steps), steps
    rto = render.duration(event["rto_s"])

    for path, expected in (
        (page, ["Drill PASSED", rto, *steps, manifest["objects"][2]["sha256"]]),
        (history, ["Restore and drill history", "RTO per drill", rto, "Backup size per day", manifest["backup_id"]]),
    ):
        shot = tmp_path / f"{path.stem}.png"
        code, _, err = browse(chromium, path, tmp_path, "--window-size=1280,2400", f"--screenshot={shot}")
        assert code == 0, err[-2000:]
        width, height, distinct = png_pixels(shot)
        assert (width, height) == (1280, 2400) and shot.stat().st_size > 30_000 and distinct > 50, (
            shot.stat().st_size,
            distinct,
        )
        code, dom, err = browse(chromium, path, tmp_path, "--dump-dom")
        assert code == 0, err[-2000:]
        text = dom_text(dom)
        for item in expected:
            assert item in text, (path.name, item)
        # The reason is shown as text: no script element, the title untouched.
        assert "<script" not in dom.lower() and "owned" not in re.search(r"<title>(.*?)</title>", dom).group(1)
        assert "<script>document.title='owned'</script>" in text
        for secret in sandbox_secrets(sandbox):
            assert secret not in path.read_text() and secret not in dom


def test_drill_incident_log_keeps_the_forged_reason_on_one_line(drill, sandbox, tmp_path):
    run, _ = drill
    assert run.rc == 0, run.stdout[-3000:]
    [event] = events(tmp_path)
    assert event["reason"] == REASON  # the JSON line keeps the raw text
    incidents = (tmp_path / "ops" / "incidents.md").read_text()
    assert len(re.findall(r"(?m)^## ", incidents)) == 1
    assert "<script>" not in incidents and "&lt;script&gt;" in incidents
    md_report = Path(event["report"]["md"]).read_text()
    assert "<script>" not in md_report and not re.findall(r"(?m)^## 2026-01-01", md_report)
    for path in (incidents, md_report, json.dumps(event), run.stdout):
        for secret in sandbox_secrets(sandbox):
            assert secret not in path


@pytest.mark.slow
def test_scripts_drill_closes_with_the_paths_of_both_pages(repo, sandbox, sandbox_dir, prefix):
    """`make drill`'s script: backup, listing, drill; its last lines name this drill's pages, which exist."""
    database = f"restore_{prefix.replace('-', '_')}"
    env = {
        **{k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"},
        "SANDBOX_DIR": str(sandbox_dir),
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    try:
        proc = subprocess.run(
            [
                str(repo / "scripts" / "drill"),
                "-e",
                f"pgdr_backup_prefix={prefix}",
                "-e",
                f"pgdr_restore_database={database}",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
    finally:
        drop_database(sandbox, database)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    closing = proc.stdout.strip().splitlines()[-4:]
    labels = [line.split(":", 1)[0] for line in closing]
    assert labels == ["Drill PASSED, report page", "History page", "Markdown report", "Incident log"], closing
    for line in closing:
        path = Path(line.split(":", 1)[1].strip())
        assert path.is_file(), line
    assert (
        closing[0].rstrip().endswith(".html")
        # The drill restores in place (mode project): its page names the staging project's database.
        and f":{sandbox['staging']['port']}/postgres" in Path(closing[0].split(":", 1)[1].strip()).read_text()
    )


def test_report_playbook_writes_the_history_then_changes_nothing(run_playbook, sandbox, s3_target, prefix, tmp_path):
    """playbooks/report.yml: --check writes nothing, a run writes the page (with the bucket's backups), a second
    run changes nothing."""
    import datetime as dt

    from ansible_collections.pgdr.supabase.plugins.module_utils import audit

    manifest = take_backup(sandbox, s3_target, prefix)
    log = tmp_path / "ops" / "events.jsonl"
    log.parent.mkdir()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=120)
    drill_event = audit.build_event("drill", "success", "last quarter's drill", "ops", rto_s=1500.0, now=old)
    log.write_text(json.dumps(drill_event) + "\n")
    page = tmp_path / "reports" / "history.html"
    extra = {
        "pgdr_backup_prefix": prefix,
        "pgdr_events_path": str(log),
        "pgdr_reports_dir": str(tmp_path / "reports"),
        "pgdr_history_path": str(page),
    }
    check = run_playbook("playbooks/report.yml", extra, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert f"would write {page}" in check.stdout and not page.exists()
    first = run_playbook("playbooks/report.yml", extra)
    assert first.rc == 0, first.stdout[-3000:]
    assert first.changed() == 1 and page.is_file()
    assert "The last successful drill was 120 days ago" in first.stdout and "older than 90 days" in first.stdout
    text = page.read_text()
    assert manifest["backup_id"] in text and "Backup size per day" in text and "last quarter&#x27;s drill" in text
    again = run_playbook("playbooks/report.yml", extra)
    assert again.rc == 0 and again.changed() == 0
    assert "shows this already" in again.stdout
    for run in (check, first, again):
        for secret in sandbox_secrets(sandbox):
            assert secret not in run.stdout and secret not in text
