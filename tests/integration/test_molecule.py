"""Each role's Molecule scenario (converge, idempotence, verify) against the session's sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = (
    "logical_backup",
    "backup_catalog",
    "verify_migrations",
    "smoke_tests",
    "env_repoint",
    "promote",
    "rollback",
    "immutable_copy",
    "retention",
    "storage_backup",
    "storage_restore",
    "config_snapshot",
    "backup_select",
    "logical_restore",
    "restore_record",
    "prove",
    "history_report",
    "freshness",
    "supabase_backups_info",
    "supabase_pitr",
    "new_project",
    "pitr_pgbackrest",
    "pitr_restore",
    "restore",
)
# Scenarios with no idempotence step: supabase_pitr restores again on every run by design (the Management API keeps
# no record of past restores; see its README); restore's converge is a check-mode rehearsal, which reports what it
# would change every time.
NOT_IDEMPOTENT = {"supabase_pitr", "restore"}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario(role, sandbox, sandbox_dir, tmp_path):
    role_dir = REPO / "roles" / role
    assert (role_dir / "molecule" / "default" / "molecule.yml").is_file()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "SANDBOX_DIR": str(sandbox_dir),
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        # A prefix and a working folder of this run's own: the first converge always takes a backup, and two
        # runs at once never share Molecule's state.
        "PGDR_MOLECULE_RUN": uuid.uuid4().hex[:10],
        "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "molecule"),
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
    }
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run(
        [str(bin_dir / "molecule"), "test"],
        cwd=role_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    # The scenario really converged, checked idempotence and verified (not a run that skipped its steps).
    steps = ("converge", "verify") if role in NOT_IDEMPOTENT else ("converge", "idempotence", "verify")
    for step in steps:
        assert f"{step}: Executed: Successful" in output, output[-6000:]
