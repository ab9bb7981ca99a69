"""A host per protected database: backup.yml over the sandbox's three projects (supabase_projects), as an operator
runs it with and without --limit, checked in the bucket (keys and manifests per project), not in the run's output
only."""

from __future__ import annotations

import shutil
import socket
import threading

import pytest
import yaml
from conftest import s3_params

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock

pytestmark = pytest.mark.integration

FLEET = ("production", "production-b", "production-c")
# The database of each project on the sandbox's production server.
DATABASES = {"production": "postgres", "production-b": "production_b", "production-c": "production_c"}
# The dump only, for the tests about the runs (the first test takes every part).
DUMP_ONLY = {
    "pgdr_backup_secondary_copy": False,
    "pgdr_backup_storage_assets": False,
    "pgdr_backup_config_snapshot": False,
}


def sources_in(target, prefix):
    """The source names that have keys under prefix/."""
    return sorted({key[len(prefix) + 1 :].split("/", 1)[0] for key in keys(target, prefix + "/")})


def keys(target, prefix):
    return [key for key, _size in target.list_keys(prefix)]


def committed(target, prefix, source):
    """The manifests committed under prefix/source/logical/, by backup id."""
    found = {}
    for key in keys(target, catalog.source_prefix(prefix, source)):
        if key.endswith("/" + catalog.MANIFEST_NAME):
            found[key.split("/")[-2]] = target.get_json(key)
    return found


def metric_files(folder):
    return sorted(p.name for p in folder.glob("*.prom"))


def host_lines(run):
    """The run report's line for each host: {host: 'PASSED' | 'FAILED at ...'}."""
    lines = run.stdout.split("RUN REPORT:", 1)[1].splitlines()
    return {
        line.split()[0]: line.split(None, 1)[1]
        for line in lines
        if line.startswith("    ") and line.split()[0] in FLEET
    }


def test_one_run_backs_up_every_project_each_into_its_own_set(run_playbook, sandbox, s3_target, prefix, tmp_path):
    sinks = [{"type": "prometheus_textfile", "name": "metrics", "dir": str(tmp_path / "metrics")}]
    run = run_playbook("backup.yml", {"pgdr_backup_prefix": prefix, "pgdr_alert_sinks": sinks}, limit=None)
    assert run.rc == 0, run.stdout[-6000:]
    assert "RUN REPORT: PASSED" in run.stdout
    assert host_lines(run) == {host: "PASSED" for host in FLEET}
    assert sorted(run.stats["ok"]) == list(FLEET)

    # In the bucket: each project has exactly its own backup, of its own database, under its own prefix.
    assert sources_in(s3_target, prefix) == list(FLEET)
    backup_ids = set()
    for host in FLEET:
        manifests = committed(s3_target, prefix, host)
        assert len(manifests) == 1, (host, manifests)
        [(backup_id, manifest)] = list(manifests.items())
        backup_ids.add(backup_id)
        assert manifest["source"]["name"] == host
        assert manifest["source"]["database"] == DATABASES[host]
        assert manifest["source"]["port"] == sandbox["production"]["port"]
        for obj in manifest["objects"]:
            assert obj["key"].startswith(catalog.backup_prefix(prefix, host, backup_id)), obj["key"]
        # The lock is the project's own, and released.
        assert s3_target.get_json(catalog.lock_key(prefix, host)) is None
    # One window: the same backup id for the three projects, three different sets.
    assert len(backup_ids) == 1

    # Storage files and the config snapshot are the main project's only (the others have none); the immutable copy
    # of each project went under its own prefix in the Object Lock bucket.
    assert keys(s3_target, f"{prefix}/production/storage/") and keys(s3_target, f"{prefix}/production/config/")
    for host in ("production-b", "production-c"):
        assert not keys(s3_target, f"{prefix}/{host}/storage/")
        assert not keys(s3_target, f"{prefix}/{host}/config/")
    secondary = make_target(s3_params(sandbox, bucket="immutable"))
    assert sources_in(secondary, prefix) == list(FLEET)
    for host in FLEET:
        assert any(k.endswith(catalog.MANIFEST_NAME) for k in keys(secondary, catalog.source_prefix(prefix, host)))

    # Each project reported to the alert sinks under its own name.
    assert metric_files(tmp_path / "metrics") == sorted(f"pgdr_backup_{host}.prom" for host in FLEET)


def test_limit_backs_up_one_project(run_playbook, sandbox, s3_target, prefix):
    run = run_playbook("backup.yml", {"pgdr_backup_prefix": prefix, **DUMP_ONLY}, limit="production-b")
    assert run.rc == 0, run.stdout[-4000:]
    assert sorted(run.stats["ok"]) == ["production-b"]
    assert host_lines(run) == {"production-b": "PASSED"}
    assert sources_in(s3_target, prefix) == ["production-b"]
    [manifest] = list(committed(s3_target, prefix, "production-b").values())
    assert manifest["source"]["database"] == "production_b"


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_project_that_fails_fails_alone(run_playbook, repo, sandbox, s3_target, prefix, tmp_path):
    """production-c's database is unreachable: that host fails, naming its error; the others' backups are
    committed in the same run."""
    inventory = tmp_path / "inventories" / "local"
    shutil.copytree(repo / "inventories" / "local", inventory)
    vars_file = inventory / "host_vars" / "production-c.yml"
    host_vars = yaml.safe_load(vars_file.read_text())
    host_vars["pgdr_source_dsn"] = f"postgresql://postgres@127.0.0.1:{closed_port()}/production_c?connect_timeout=3"
    vars_file.write_text(yaml.safe_dump(host_vars))

    run = run_playbook(
        "backup.yml", {"pgdr_backup_prefix": prefix, **DUMP_ONLY}, inventory=str(inventory / "hosts.yml"), limit=None
    )
    assert run.rc != 0
    assert run.stats["failures"] == {"production-c": 1}, run.stats
    lines = host_lines(run)
    assert lines["production"] == "PASSED" and lines["production-b"] == "PASSED", lines
    assert lines["production-c"].startswith("FAILED at "), lines
    assert "RUN REPORT: FAILED" in run.stdout
    # The others' backups are committed; the failed project left nothing behind (no objects, no lock).
    for host in ("production", "production-b"):
        [manifest] = list(committed(s3_target, prefix, host).values())
        assert manifest["source"]["database"] == DATABASES[host]
    assert sources_in(s3_target, prefix) == ["production", "production-b"]


def test_the_lock_is_per_project(run_playbook, sandbox, s3_target, prefix):
    """Two runs on different projects at once both succeed; a run on a project whose lock another run holds is
    refused, and only that project's backup is."""
    results = {}

    def backup(host):
        results[host] = run_playbook("backup.yml", {"pgdr_backup_prefix": prefix, **DUMP_ONLY}, limit=host)

    threads = [threading.Thread(target=backup, args=(host,)) for host in ("production-b", "production-c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    for host, run in results.items():
        assert run.rc == 0, (host, run.stdout[-4000:])
        assert len(committed(s3_target, prefix, host)) == 1

    # Another run holds production-b's lock (live, not stale): production-b is refused, production-c goes on.
    other = f"{prefix}-held"
    lock = SourceLock(s3_target, catalog.lock_key(other, "production-b"), "another backup")
    lock.acquire()
    try:
        run = run_playbook("backup.yml", {"pgdr_backup_prefix": other, **DUMP_ONLY}, limit="production-b,production-c")
    finally:
        lock.release()
    assert run.rc != 0
    assert run.stats["failures"] == {"production-b": 1}, run.stats
    assert "another run is in progress" in run.stdout
    assert committed(s3_target, other, "production-b") == {}
    assert len(committed(s3_target, other, "production-c")) == 1


def test_two_hosts_sharing_a_source_name_are_refused_before_anything_is_written(run_playbook, s3_target, prefix):
    """An inventory mistake (two hosts, one pgdr_source_name) would mix two projects' backups under one prefix and
    one lock: the run refuses both hosts before the first write."""
    run = run_playbook(
        "backup.yml",
        {"pgdr_backup_prefix": prefix, "pgdr_source_name": "shared", **DUMP_ONLY},
        limit="production-b,production-c",
    )
    assert run.rc != 0
    assert sorted(run.stats["failures"]) == ["production-b", "production-c"]
    assert "would write the same backups and take the same lock" in run.stdout
    assert keys(s3_target, prefix + "/") == []
