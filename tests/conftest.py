"""Shared fixtures: the engine on sys.path, one sandbox for the whole session, and a playbook runner."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The engine is imported as the modules import it, ansible_collections.pgdr.supabase.plugins.module_utils: the tree
# is the collection, reached through collections/ansible_collections/pgdr/supabase (a link back to it).
sys.path.insert(0, str(REPO / "collections"))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def sandbox_dir():
    """The sandbox's state folder. PGDR_TEST_SANDBOX reuses a running one (and leaves it running)."""
    reuse = os.environ.get("PGDR_TEST_SANDBOX")
    if reuse:
        yield Path(reuse)
        return
    path = Path(tempfile.mkdtemp(prefix="pgdr-test-sandbox-", dir="/var/tmp"))
    yield path
    import sandboxlib

    sandboxlib.destroy(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox(sandbox_dir):
    """The running sandbox's status (state plus live flags)."""
    import sandboxlib

    return sandboxlib.up(sandbox_dir)


@pytest.fixture
def prefix():
    """A key prefix of its own for each test, so tests never see each other's backups."""
    return f"test-{uuid.uuid4().hex[:10]}"


def s3_params(state, tls=True, bucket="primary", identity="admin"):
    """S3 options for a sandbox bucket. identity: ``admin`` (setup and cleanup only), ``writer`` (the backup writer
    the runbooks use) or ``project_storage`` (the project's Storage keys)."""
    s3 = state["s3"]
    keys = s3 if identity == "admin" else s3[identity]
    params = {
        "bucket": s3["buckets"][bucket],
        "endpoint_url": s3["endpoint_tls"] if tls else s3["endpoint"],
        "region": s3["region"],
        "access_key": keys["access_key"],
        "secret_key": keys["secret_key"],
    }
    if tls:
        params["ca_bundle"] = s3["ca_file"]
    return params


@pytest.fixture
def s3_target(sandbox):
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make

    return make(s3_params(sandbox))


def sandbox_secrets(state):
    """Every secret of the sandbox that a run's output must never show."""
    s3 = state["s3"]
    found = [s3["secret_key"], state["production"]["password"], state["staging"]["password"]]
    for identity in ("writer", "project_storage"):
        if identity in s3:
            found.append(s3[identity]["secret_key"])
    return found


class PlaybookRun:
    def __init__(self, runner, private_dir):
        self.runner = runner
        self.rc = runner.rc
        self.status = runner.status
        self.stdout = Path(private_dir, "artifacts", runner.config.ident, "stdout").read_text()
        self.events = list(runner.events)
        self.stats = runner.stats or {}

    def changed(self):
        return sum((self.stats.get("changed") or {}).values())

    def failed(self):
        return sum((self.stats.get("failures") or {}).values())

    def results(self, module):
        """The results of every task that ran the given module."""
        return [
            e["event_data"]["res"]
            for e in self.events
            if e.get("event") in ("runner_on_ok", "runner_on_failed") and e["event_data"].get("task_action") == module
        ]


# The sandbox's inventory lists three projects (hosts of supabase_projects); a test runs on the main one, which the
# restore side restores, unless it asks for others (limit=None: every host, as `ansible-playbook` without --limit).
# localhost: the plays some tests write for themselves (hosts: localhost).
MAIN_PROJECT_LIMIT = "production,localhost"


def playbook_runner(sandbox_dir, folder):
    """A function that runs a playbook of the repo through ansible-runner against the sandbox's inventory, its
    private data folders under folder."""
    import ansible_runner

    def run(
        playbook,
        extravars=None,
        check=False,
        diff=False,
        inventory="inventories/local/hosts.yml",
        env=None,
        limit=MAIN_PROJECT_LIMIT,
    ):
        private = Path(folder) / f"runner-{uuid.uuid4().hex[:8]}"
        private.mkdir(parents=True)
        cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
        envvars = {
            "SANDBOX_DIR": str(sandbox_dir),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            **(env or {}),
        }
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(REPO / playbook),
            inventory=str(REPO / inventory),
            extravars=extravars or {},
            envvars=envvars,
            cmdline=cmdline or None,
            limit=limit,
            quiet=True,
            project_dir=str(REPO),
        )
        return PlaybookRun(runner, private)

    return run


@pytest.fixture
def run_playbook(sandbox_dir, sandbox, tmp_path):
    """Run a playbook of the repo through ansible-runner against the sandbox's inventory."""
    return playbook_runner(sandbox_dir, tmp_path)


def load_json(path):
    return json.loads(Path(path).read_text())
