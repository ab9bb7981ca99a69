"""The fleet's inventories: a host per protected database in supabase_projects, each with backups, a lock and
alert files of its own; the source-side playbooks run per host of that group, and nothing stops the others when
one project fails."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORIES = ("local", "production", "staging")
# The backup side: every project, one host each.
SOURCE_SIDE = (
    "backup",
    "storage_backup",
    "config_snapshot",
    "secure_copy",
    "monitor",
    "retention",
    "list_backups",
)
# pgBackRest runs on self-hosted projects only: a subgroup of supabase_projects.
PGBACKREST_SIDE = ("pitr_setup", "pitr_backup", "pitr_info")
NAME_AND_SCOPE = "{{ pgdr_source_name }} {{ pgdr_backup_prefix | trim('/') }}/{{ pgdr_source_name }}/"


@functools.cache
def rendered(inventory: str, expression: str) -> dict[str, str]:
    """expression rendered for each host of supabase_projects (an ad-hoc debug through Ansible itself)."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "json",
    }
    result = subprocess.run(
        [
            BIN / "ansible",
            "-i",
            f"inventories/{inventory}/hosts.yml",
            "supabase_projects",
            "-m",
            "ansible.builtin.debug",
            "-a",
            json.dumps({"msg": expression}),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out, _end = json.JSONDecoder().raw_decode(result.stdout)  # the run report follows the JSON
    hosts = out["plays"][0]["tasks"][0]["hosts"]
    return {host: res["msg"] for host, res in hosts.items()}


def groups(inventory: str) -> dict:
    return yaml.safe_load((REPO / "inventories" / inventory / "hosts.yml").read_text())["all"]


def test_the_sandbox_inventory_lists_three_projects_and_restores_the_main_one():
    tree = groups("local")
    projects = tree["children"]["supabase_projects"]
    assert list(projects["hosts"]) == ["production", "production-b", "production-c"]
    assert list(projects["children"]["pgbackrest_projects"]["hosts"]) == ["production"]
    assert list(tree["children"]["restore_hosts"]["hosts"]) == ["production"]
    assert tree["vars"]["ansible_connection"] == "local"


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_no_two_projects_share_a_prefix_a_lock_or_an_alert_file(inventory):
    # The logical backup's lock is <prefix>/<source>/logical/_lock.json, the Storage and config sets live under
    # <prefix>/<source>/, the alert textfile is pgdr_backup_<source>.prom, progress files pgdr-backup-<source>-...
    found = rendered(inventory, NAME_AND_SCOPE)
    scopes = {host: value.split(" ")[1] for host, value in found.items()}
    assert len(set(scopes.values())) == len(scopes), scopes
    names = {host: value.split(" ")[0] for host, value in found.items()}
    assert names == {host: host for host in names}, names


def test_the_main_project_keeps_its_name_in_object_keys():
    """Backups taken before the fleet (source production) are still the main project's."""
    for inventory in INVENTORIES:
        assert rendered(inventory, NAME_AND_SCOPE)["production"].split(" ")[0] == "production"


def plays(name: str) -> list[dict]:
    return yaml.safe_load((REPO / "playbooks" / f"{name}.yml").read_text())


@pytest.mark.parametrize("name", SOURCE_SIDE + PGBACKREST_SIDE)
def test_the_source_side_runs_per_project_and_one_failure_stops_no_other(name):
    for play in plays(name):
        wanted = "pgbackrest_projects" if name in PGBACKREST_SIDE else "supabase_projects"
        assert play["hosts"] == wanted, (name, play["hosts"])
        assert "any_errors_fatal" not in play and "max_fail_percentage" not in play, name
        assert "serial" not in play, name


def test_ansible_runs_several_projects_at_once():
    cfg = (REPO / "ansible.cfg").read_text()
    forks = int(next(line.split("=")[1] for line in cfg.splitlines() if line.startswith("forks")))
    assert forks >= 3
