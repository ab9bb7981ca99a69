"""Secrets never reach output: a full backup.yml and restore.yml run (and a --check --diff rehearsal) are scanned
for every secret the sandbox holds, in everything the runs wrote: the playbook output and its event stream, the
Ansible log, the reports, the incident log and its JSON lines, the progress files, the restore's work folder, and
what the PostgreSQL and S3 servers logged meanwhile."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from backup_helpers import drop_database

pytestmark = pytest.mark.integration


def sandbox_secrets(state):
    """Every secret of the sandbox, each at least 8 characters (shorter ones would match by chance)."""
    found = {
        "s3 access key": state["s3"]["access_key"],
        "s3 secret key": state["s3"]["secret_key"],
    }
    for target in ("production", "staging"):
        for field in ("password", "admin_password", "anon_key", "service_role_key"):
            if state[target].get(field):
                found[f"{target} {field}"] = state[target][field]
        for login, password in (state[target].get("platform_passwords") or {}).items():
            found[f"{target} {login} password"] = password
    found["age identity"] = Path(state["age"]["identity_file"]).read_text().strip()
    pem = Path(state["signing"]["private_key_file"]).read_text().splitlines()
    found["manifest signing key"] = "".join(line for line in pem if not line.startswith("-----"))
    secrets_dir = Path(state["dir"]) / "secrets"
    for name in ("pgbackrest-cipher", "config-snapshot-hmac-key"):
        if (secrets_dir / name).exists():
            found[name] = (secrets_dir / name).read_text().strip()
    found["management api token"] = "sbp_5a17e10000000000000000000000000000000000"
    return {what: value for what, value in found.items() if value and len(value) >= 8}


class LogTail:
    """What a server log gains during the runs."""

    def __init__(self, paths):
        self.start = {p: (p.stat().st_size if p.exists() else 0) for p in paths}

    def new_text(self):
        out = {}
        for path, offset in self.start.items():
            if path.exists():
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    out[str(path)] = fh.read().decode("utf-8", "replace")
        return out


def scan(texts, secrets):
    leaks = []
    for where, text in texts.items():
        for what, value in secrets.items():
            if value in text:
                leaks.append(f"{what} in {where}")
    return leaks


def files_under(*folders):
    texts = {}
    for folder in folders:
        for path in Path(folder).rglob("*") if Path(folder).exists() else ():
            if path.is_file() and not path.is_symlink():
                texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return texts


def test_a_full_backup_and_restore_leak_no_secret(run_playbook, sandbox, prefix, tmp_path):
    secrets = sandbox_secrets(sandbox)
    assert len(secrets) >= 10, sorted(secrets)
    assert scan({"probe": f"..{secrets['s3 secret key']}.."}, secrets) == ["s3 secret key in probe"]  # it can fail
    logs = LogTail(
        [
            Path(sandbox["production"]["log_file"]),
            Path(sandbox["staging"]["log_file"]),
            Path(sandbox["s3"]["log_file"]),
        ]
    )
    progress = Path(sandbox["dir"]) / "progress"
    before = set(progress.glob("*")) if progress.exists() else set()
    database = f"leak_{uuid.uuid4().hex[:8]}"
    workdir = tmp_path / "work"
    env = {"ANSIBLE_LOG_PATH": str(tmp_path / "ansible.log")}
    common = {
        "pgdr_backup_prefix": prefix,
        "reason": "secret scan",
        "pgdr_incidents_path": str(tmp_path / "ops" / "incidents.md"),
        "pgdr_events_path": str(tmp_path / "ops" / "events.jsonl"),
        "pgdr_reports_dir": str(tmp_path / "reports"),
        "pgdr_restore_database": database,
        "pgdr_restore_workdir": str(workdir),
        "pgdr_restore_data_mode": "file",
    }
    try:
        backup = run_playbook("backup.yml", common, env=env)
        assert backup.rc == 0, backup.stdout[-3000:]
        rehearsal = run_playbook("restore.yml", common, check=True, diff=True, env=env)
        assert rehearsal.rc == 0, rehearsal.stdout[-3000:]
        restore = run_playbook("restore.yml", common, env=env)
        assert restore.rc == 0, restore.stdout[-3000:]
    finally:
        drop_database(sandbox, database)
    assert "RUN REPORT: PASSED" in restore.stdout
    assert list((tmp_path / "reports").glob("*")) and (tmp_path / "ops" / "events.jsonl").exists()
    assert (tmp_path / "ansible.log").stat().st_size > 0
    new_progress = set(progress.glob("*")) - before
    assert len(new_progress) >= 2, new_progress  # the backup's and the restore's
    texts = {
        **{
            f"{name} output": run.stdout
            for name, run in (("backup", backup), ("check", rehearsal), ("restore", restore))
        },
        **{
            f"{name} events": repr(run.events)
            for name, run in (("backup", backup), ("check", rehearsal), ("restore", restore))
        },
        **files_under(tmp_path),  # runner artifacts, the Ansible log, reports, incident log, work folder
        **{str(p): p.read_text() for p in new_progress},
        **logs.new_text(),
    }
    assert not scan(texts, secrets), scan(texts, secrets)
    assert not list(workdir.glob("pgdr-restore-*"))  # and nothing left to scan there: the work folder is gone
