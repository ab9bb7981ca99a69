"""The collection as users get it: `ansible-galaxy collection build` makes the artifact, `ansible-galaxy collection
install` puts it on a machine, and its modules, roles and playbooks work from there by FQCN, outside this
checkout (no ansible.cfg of ours, no collections/ link)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(argv, cwd, env=None, timeout=300):
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed: {done.stdout[-1000:]} {done.stderr[-1500:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(artifact, environment of a machine that has only the installed collection)."""
    work = tmp_path_factory.mktemp("collection")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(work / "collections")
    env["HOME"] = str(work)
    _run([BIN / "ansible-galaxy", "collection", "build", "--output-path", str(work), str(REPO)], cwd=work, env=env)
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    artifact = work / f"pgdr-supabase-{version}.tar.gz"
    assert artifact.is_file()
    _run([BIN / "ansible-galaxy", "collection", "install", str(artifact), "-p", str(work / "collections")], work, env)
    return artifact, env, work


def test_the_artifact_holds_the_collection_and_nothing_of_a_working_copy(installed):
    artifact, _env, _work = installed
    with tarfile.open(artifact) as tar:
        names = tar.getnames()
    for needed in (
        "MANIFEST.json",
        "meta/runtime.yml",
        "plugins/modules/logical_backup.py",
        "plugins/module_utils/logical_restore.py",
        "plugins/callback/runbook_report.py",
        "roles/logical_restore/meta/argument_specs.yml",
        "playbooks/restore.yml",
        "meta/execution-environment.yml",
        "meta/ee-requirements.txt",
        "bindep.txt",
    ):
        assert needed in names, f"{needed} is missing from the artifact"
    leaked = [
        n
        for n in names
        if n.split("/")[0] in {".venv", ".sandbox", ".tools", ".git", ".ansible", "collections", "reports", "supabase"}
        or "/.temp/" in n
        or n.endswith((".pyc", ".tar.gz"))
    ]
    assert leaked == []


def test_modules_roles_and_playbooks_work_by_fqcn_from_the_installed_collection(installed):
    _artifact, env, work = installed
    doc = _run([BIN / "ansible-doc", "-t", "module", "pgdr.supabase.logical_backup"], work, env)
    assert str(work / "collections") in doc
    role = _run([BIN / "ansible-doc", "-t", "role", "pgdr.supabase.logical_restore"], work, env)
    assert "ENTRY POINT: main" in role.replace("\x1b[1m", "").replace("\x1b[0m", "")
    out = _run([BIN / "ansible-playbook", "--syntax-check", "pgdr.supabase.restore"], work, env)
    assert str(work / "collections" / "ansible_collections" / "pgdr" / "supabase" / "playbooks" / "restore.yml") in out
