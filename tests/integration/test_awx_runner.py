"""The job templates of awx/config/ run as AWX runs them, against the sandbox.

For each template the test builds the private data folder AWX's job task builds (awx/main/tasks/jobs.py,
RunJob): ``project/`` a copy of this repository as a checkout holds it (no .git, links kept), ``inventory/hosts`` an
inventory script printing the inventory AWX imported from the project's ``inventories/local`` (``ansible-inventory
--list --export``, hosts with AWX's remote_tower_* variables), ``env/extravars`` the survey answers (survey defaults
filled in, answers checked as AWX checks them, written !unsafe as AWX writes them) with AWX's awx_*/tower_* job
variables, ``env/cmdline`` AWX's arguments (-u root, --check for job type Check, --diff), ``plugins_path/`` with a
stand-in of the callback AWX copies there (indirect_instance_count), and the environment AWX builds:
ANSIBLE_COLLECTIONS_PATH / ANSIBLE_ROLES_PATH / ANSIBLE_CALLBACK_PLUGINS from the project's ansible.cfg behind AWX's
own folders, ANSIBLE_CALLBACKS_ENABLED = indirect_instance_count plus the project's callbacks_enabled. Then
ansible_runner.run() runs it (AWX runs the same call inside the execution environment), and the job's stdout is
what AWX shows: the events' stdout, joined.

What cannot be had here: the controller itself (its database, the inventory import it stores, receptor, the
container). The folder, the variables and the environment are built as it builds them.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml
from awx_helpers import REPO, rendered_config

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;]*m")
AWX_USER = "oncall-alice"

STANDIN_CALLBACK = '''
"""Stand-in for the callback AWX copies into the job's plugins_path and enables (indirect_instance_count): it
writes what it saw into the job's artifacts, so the test can tell that AWX's own callback ran next to the
project's."""
import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: indirect_instance_count
type: aggregate
short_description: stand-in of AWX's indirect_instance_count callback
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "indirect_instance_count"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        path = os.path.join(os.environ["AWX_PRIVATE_DATA_DIR"], "artifacts", os.environ["JOB_ID"], "standin.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"hosts": sorted(stats.processed)}, f)
'''


@pytest.fixture(scope="module")
def evidence_dir(tmp_path_factory):
    """The persistent folder the controller exposes to jobs (pgdr_awx_evidence_dir), here one of this module's."""
    return tmp_path_factory.mktemp("awx-evidence")


@pytest.fixture(scope="module")
def awx_config(evidence_dir):
    return rendered_config(extra_vars={"pgdr_awx_evidence_dir": str(evidence_dir)})


def templates(config):
    return {t["name"]: t for t in config["controller_templates"]}


class SurveyRefused(Exception):
    pass


def survey_vars(template, answers):
    """The extra vars a launch with these survey answers gets: the answers, checked as AWX checks them, and the
    defaults of the questions not answered (AWX fills in a default that passes its own checks)."""
    out = {}
    spec = template.get("survey_spec", {}).get("spec", []) if template.get("survey_enabled") else []
    known = {q["variable"] for q in spec}
    unknown = set(answers) - known
    if unknown:
        raise SurveyRefused(f"{template['name']}: not survey variables: {sorted(unknown)}")
    for question in spec:
        var = question["variable"]
        if var in answers:
            value = answers[var]
        elif question.get("default") not in (None, ""):
            value = question["default"]
        elif question["required"]:
            raise SurveyRefused(f"{template['name']}: variables needed to start the job: {var}")
        else:
            value = question.get("default", "")
            if value is None:
                continue
        too_short_or_long = not question.get("min", 0) <= len(str(value)) <= question.get("max", 1024)
        if question["type"] in ("text", "textarea") and value != "" and too_short_or_long:
            raise SurveyRefused(f"{template['name']}: {var} is not {question.get('min')}..{question.get('max')}")
        if question["type"] == "multiplechoice" and value not in question["choices"]:
            raise SurveyRefused(f"{template['name']}: {var}={value!r} is not one of {question['choices']}")
        out[var] = value
    return out


def awx_meta_vars(template, job_id, launched_by=AWX_USER):
    """The awx_* and tower_* variables AWX adds to every job's extra vars (Job.awx_meta_vars)."""
    meta = {
        "job_id": job_id,
        "job_launch_type": "manual" if launched_by else "scheduled",
        "job_template_id": 7,
        "job_template_name": template["name"],
        "project_revision": "0" * 40,
        "project_scm_branch": "main",
        "inventory_id": 3,
        "inventory_name": template["inventory"],
        "execution_node": "awx-task-0",
    }
    if launched_by:
        meta |= {"user_id": 42, "user_name": launched_by, "user_email": f"{launched_by}@example.com"}
    else:
        meta |= {"schedule_id": 5, "schedule_name": "a schedule"}
    return {f"{prefix}_{k}": v for prefix in ("awx", "tower") for k, v in meta.items()}


def copy_project(dest):
    """The project as AWX copies it into the job folder: the checkout's files (here: what git tracks or would
    track), without .git, links kept as links."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        src, dst = REPO / rel, dest / rel
        if not src.exists() and not src.is_symlink():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


def import_inventory(project, source_path, env):
    """What AWX's inventory update stores (ansible-inventory --list --export on the project's source), as the job
    inventory script prints it (hosts carry remote_tower_enabled and remote_tower_id)."""
    source = project / source_path
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-inventory"),
            "--list",
            "--export",
            "-i",
            str(source),
            "--playbook-dir",
            str(source.parent),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout)
    hosts = sorted({h for group in data.values() if isinstance(group, dict) for h in group.get("hosts", [])})
    data["_meta"] = {
        "hostvars": {
            host: {**data.get("_meta", {}).get("hostvars", {}).get(host, {}), "remote_tower_enabled": "true"}
            | {"remote_tower_id": i + 1}
            for i, host in enumerate(hosts)
        }
    }
    return data


def read_ansible_config(project, keys):
    parser = configparser.ConfigParser()
    parser.read(project / "ansible.cfg")
    return {k: parser.get("defaults", k) for k in keys if parser.has_option("defaults", k)}


def awx_env(private, project, job_id, sandbox_dir):
    """The environment AWX's RunJob.build_env gives ansible-playbook (paths of the job folder where the container
    would have /runner)."""
    runner_root = str(private)
    env = {
        # The execution environment's interpreter and tools: here, this virtualenv.
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(private),
        # AWX_TASK_ENV (a controller setting): where the sandbox inventory finds its state.
        "SANDBOX_DIR": str(sandbox_dir),
        "AWX_PRIVATE_DATA_DIR": runner_root,
        "JOB_ID": str(job_id),
        "INVENTORY_ID": "3",
        "PROJECT_REVISION": "0" * 40,
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "MAX_EVENT_RES": "700000",
        "AWX_HOST": "https://awx.example.com",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": f"{runner_root}/cp",
        "ANSIBLE_FORCE_COLOR": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_PARAMIKO_RECORD_HOST_KEYS": "False",
    }
    path_vars = [
        ("ANSIBLE_ROLES_PATH", "roles_path", "requirements_roles", "~/.ansible/roles:/usr/share/ansible/roles"),
        (
            "ANSIBLE_COLLECTIONS_PATH",
            "collections_path",
            "requirements_collections",
            "~/.ansible/collections:/usr/share/ansible/collections",
        ),
        ("ANSIBLE_CALLBACK_PLUGINS", "callback_plugins", "plugins_path", "~/.ansible/plugins:/plugins/callback"),
    ]
    config = read_ansible_config(project, [p[1] for p in path_vars] + ["callbacks_enabled"])
    for env_key, setting, folder, default in path_vars:
        paths = default.split(":")
        if setting in config and any(p not in paths for p in config[setting].split(":")):
            paths = [config[setting], *paths]
        env[env_key] = ":".join([f"{runner_root}/{folder}", *paths])
    env["ANSIBLE_CALLBACKS_ENABLED"] = "indirect_instance_count"
    if "callbacks_enabled" in config:
        env["ANSIBLE_CALLBACKS_ENABLED"] += "," + config["callbacks_enabled"]
    return env


class Job:
    def __init__(self, runner, private):
        self.runner = runner
        self.private = private
        self.status = runner.status
        self.rc = runner.rc
        self.events = list(runner.events)
        # What the controller shows as the job's output: the events' stdout.
        self.stdout = ANSI.sub("", "\n".join(e["stdout"] for e in self.events if e.get("stdout")))
        self.stats = runner.stats or {}

    def standin(self):
        path = self.private / "artifacts" / str(self.runner.config.ident) / "standin.json"
        return json.loads(path.read_text()) if path.exists() else None

    def results(self, module):
        return [
            e["event_data"]["res"]
            for e in self.events
            if e.get("event") in ("runner_on_ok", "runner_on_failed") and e["event_data"].get("task_action") == module
        ]

    def results_by_host(self, module):
        """The result of the module's task for each host (each project) that ran it."""
        return {
            e["event_data"]["host"]: e["event_data"]["res"]
            for e in self.events
            if e.get("event") in ("runner_on_ok", "runner_on_failed") and e["event_data"].get("task_action") == module
        }


@pytest.fixture(scope="module")
def launch(awx_config, sandbox, sandbox_dir, tmp_path_factory):
    """Launch a job template of the configuration as AWX would: launch(name, answers, job_type='run', ...)."""
    import ansible_runner

    tmp_path = tmp_path_factory.mktemp("awx-jobs")

    def run(name, answers=None, job_type="run", diff_mode=False, template_extra_vars=None, launched_by=AWX_USER):
        """One job, or for a template with job_slice_count > 1 a sliced job: one job per slice, all at once."""
        template = templates(awx_config)[name]
        args = (name, answers, job_type, diff_mode, template_extra_vars, launched_by)
        count = min(template.get("job_slice_count") or 1, len(local_hosts()))
        if count == 1:
            return one(*args, job_id=next_job_id())
        ids = [next_job_id() for _slice in range(count)]
        jobs = [None] * count

        def slice_job(number):
            jobs[number - 1] = one(*args, job_id=ids[number - 1], job_slice=(number, count))

        threads = [threading.Thread(target=slice_job, args=(n,)) for n in range(1, count + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=1800)
        return SlicedJob(jobs)

    def next_job_id():
        with id_lock:
            job_id = 1000 + len(list(tmp_path.glob("awx_job_*"))) + len(reserved)
            reserved.append(job_id)
            return job_id

    id_lock = threading.Lock()
    reserved = []

    def one(name, answers, job_type, diff_mode, template_extra_vars, launched_by, job_id, job_slice=None):
        template = templates(awx_config)[name]
        private = tmp_path / f"awx_job_{job_id}_{uuid.uuid4().hex[:6]}"
        project = private / "project"
        for folder in ("inventory", "env", "project", "plugins_path", "cp"):
            (private / folder).mkdir(parents=True)
        copy_project(project)
        (private / "plugins_path" / "indirect_instance_count.py").write_text(STANDIN_CALLBACK)
        env = awx_env(private, project, job_id, sandbox_dir)

        source = next(s for s in awx_config["controller_inventory_sources"] if s["inventory"] == template["inventory"])
        # The sandbox stands in for the template's inventory: the same import, from inventories/local.
        assert source["source_path"].startswith("inventories/")
        inventory = import_inventory(project, "inventories/local/hosts.yml", env)
        if job_slice:
            inventory = slice_inventory(inventory, *job_slice)
        script = private / "inventory" / "hosts"
        script.write_text(f"#! /usr/bin/env python3\nprint({json.dumps(json.dumps(inventory))})\n")
        script.chmod(0o700)

        # The job template's own extra vars (trusted, as AWX trusts them), then the survey answers and the awx_*
        # variables (written !unsafe, as AWX's safe_dump writes what a user typed).
        safe = dict(template.get("extra_vars") or {}) | (template_extra_vars or {})
        unsafe = survey_vars(template, answers or {}) | awx_meta_vars(template, job_id, launched_by)
        lines = [yaml.safe_dump(safe, default_flow_style=False)] if safe else []
        for key, value in unsafe.items():
            tag = "!unsafe " if isinstance(value, str) else ""
            lines.append(f"{key}: {tag}{json.dumps(value)}\n")
        (private / "env" / "extravars").write_text("".join(lines))

        args = []
        if job_type == "check":
            args.append("--check")
        args += ["-u", "root"]
        if diff_mode:
            args.append("--diff")
        (private / "env" / "cmdline").write_text(" ".join(args))
        (private / "env" / "settings").write_text(
            json.dumps({"job_timeout": template.get("timeout", 0), "suppress_ansible_output": True})
        )

        runner = ansible_runner.run(
            ident=str(job_id),
            private_data_dir=str(private),
            playbook=template["playbook"],
            inventory=str(script),
            envvars=env,
            suppress_env_files=True,
            quiet=True,
        )
        return Job(runner, private)

    return run


def local_hosts():
    """The hosts of inventories/local, by name."""
    tree = yaml.safe_load((REPO / "inventories" / "local" / "hosts.yml").read_text())
    found = set()

    def walk(group):
        found.update((group or {}).get("hosts") or {})
        for child in ((group or {}).get("children") or {}).values():
            walk(child)

    walk(tree["all"])
    return sorted(found)


def slice_inventory(data, number, count):
    """What a slice job's inventory script prints: the imported inventory with only the hosts of slice `number` of
    `count` (the controller takes the hosts in name order, every count-th from number - 1)."""
    hosts = sorted(data["_meta"]["hostvars"])[number - 1 :: count]
    sliced = {
        name: {**group, "hosts": [h for h in group["hosts"] if h in hosts]} if "hosts" in group else group
        for name, group in data.items()
        if name != "_meta" and isinstance(group, dict)
    }
    sliced["_meta"] = {"hostvars": {h: v for h, v in data["_meta"]["hostvars"].items() if h in hosts}}
    return sliced


class SlicedJob:
    """A sliced job (the controller makes it a workflow of slice jobs): failed when a slice failed."""

    def __init__(self, jobs):
        self.jobs = jobs
        self.status = "successful" if all(j.status == "successful" for j in jobs) else "failed"
        self.rc = max(j.rc for j in jobs)
        self.stdout = "\n".join(j.stdout for j in jobs)
        self.events = [e for j in jobs for e in j.events]

    def standin(self):
        found = [j.standin() for j in self.jobs]
        return {"hosts": sorted(h for f in found if f for h in f["hosts"])} if all(found) else None

    def results(self, module):
        return [r for j in self.jobs for r in j.results(module)]

    def results_by_host(self, module):
        return {h: r for j in self.jobs for h, r in j.results_by_host(module).items()}


def test_the_job_folder_is_what_awx_builds(awx_config, sandbox_dir, tmp_path):
    """The environment AWX gives the job keeps the project's collection and callback reachable."""
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    env = awx_env(tmp_path, project, 1, sandbox_dir)
    assert env["ANSIBLE_COLLECTIONS_PATH"].split(":")[:2] == [f"{tmp_path}/requirements_collections", "collections"]
    assert env["ANSIBLE_CALLBACKS_ENABLED"] == "indirect_instance_count,pgdr.supabase.runbook_report"
    assert (project / "collections" / "ansible_collections" / "pgdr" / "supabase").is_symlink()
    assert not (project / ".git").exists() and (project / "playbooks" / "restore.yml").is_file()


def test_a_survey_without_its_required_reason_does_not_launch(awx_config, launch):
    with pytest.raises(SurveyRefused, match="variables needed to start the job: reason"):
        launch("pgdr Restore to staging", {"backup": "latest"})
    with pytest.raises(SurveyRefused, match="restore_method='physical' is not one of"):
        launch("pgdr Restore to staging", {"reason": "a drill", "restore_method": "physical"})


# The sandbox inventory's projects: the source-side templates run for each; the restore side for the main one.
FLEET = ["production", "production-b", "production-c"]


def assert_report(job, verdict="PASSED", hosts=("production",)):
    assert f"RUN REPORT: {verdict}" in job.stdout, job.stdout[-3000:]
    # AWX's own callback ran next to the project's.
    assert job.standin() == {"hosts": list(hosts)}


def secrets(sandbox):
    return [sandbox["s3"]["secret_key"], sandbox["production"]["password"], sandbox["staging"]["password"]]


@pytest.fixture(scope="module")
def awx_prefix():
    return f"test-awx-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def awx_backup(launch, awx_prefix):
    """The Backup template, launched by its schedule (no AWX user), into a prefix of this module's own."""
    return launch("pgdr Backup", template_extra_vars={"pgdr_backup_prefix": awx_prefix}, launched_by=None)


def test_backup_then_monitor_then_retention_rehearsal(launch, sandbox, awx_prefix, awx_backup):
    prefix = {"pgdr_backup_prefix": awx_prefix}
    backup = awx_backup
    assert backup.status == "successful", backup.stdout[-4000:]
    # The template is sliced (job_slice_count): a job per slice, run at once, each on its own projects; together
    # they back up every project of the inventory, each into its own set.
    assert isinstance(backup, SlicedJob) and len(backup.jobs) == len(FLEET)
    assert [job.standin() for job in backup.jobs] == [{"hosts": [host]} for host in FLEET]
    assert_report(backup, hosts=FLEET)
    results = backup.results_by_host("pgdr.supabase.logical_backup")
    assert sorted(results) == FLEET
    assert all(r["changed"] and r["backup_id"] for r in results.values())
    assert len({r["manifest_key"] for r in results.values()}) == len(FLEET)

    monitor = launch("pgdr Monitor backups", template_extra_vars=prefix, launched_by=None)
    assert monitor.status == "successful", monitor.stdout[-4000:]
    assert_report(monitor, hosts=FLEET)

    retention = launch("pgdr Retention", job_type="check", template_extra_vars=prefix)
    assert retention.status == "successful", retention.stdout[-4000:]
    assert_report(retention, hosts=FLEET)
    for job in (backup, monitor, retention):
        for secret in secrets(sandbox):
            assert secret not in job.stdout


def test_monitor_fails_on_a_prefix_without_backups(launch):
    """The monitor template's failure is the missed-backup alert: an empty prefix is a missed schedule."""
    monitor = launch("pgdr Monitor backups", template_extra_vars={"pgdr_backup_prefix": f"none-{uuid.uuid4().hex}"})
    assert monitor.status == "failed"
    assert_report(monitor, "FAILED", hosts=FLEET)


def test_restore_records_the_awx_user_then_verify_and_a_promote_rehearsal(
    launch, sandbox, awx_prefix, awx_backup, evidence_dir
):
    assert awx_backup.status == "successful"
    prefix = {"pgdr_backup_prefix": awx_prefix}
    rehearsal = launch(
        "pgdr Restore to staging",
        {"reason": "AWX rehearsal"},
        job_type="check",
        diff_mode=True,
        template_extra_vars=prefix,
    )
    assert rehearsal.status == "successful", rehearsal.stdout[-4000:]
    assert "would restore backup" in rehearsal.stdout
    assert not (evidence_dir / "ops").exists()
    assert_report(rehearsal)

    restore = launch(
        "pgdr Restore to staging",
        {"reason": "AWX integration test", "backup": "latest"},
        template_extra_vars=prefix,
    )
    assert restore.status == "successful", restore.stdout[-4000:]
    assert "RESTORE PASSED" in restore.stdout
    assert_report(restore)
    # The evidence lands where the template's extra vars put it (the folder the controller exposes to jobs).
    events = (evidence_dir / "ops" / "restore-events.jsonl").read_text().splitlines()
    [event] = [json.loads(line) for line in events]
    assert event["initiator"] == AWX_USER and event["reason"] == "AWX integration test"
    assert f"Initiator: {AWX_USER}" in (evidence_dir / "ops" / "incidents.md").read_text()
    assert list((evidence_dir / "reports").glob("*.md"))

    verify = launch("pgdr Verify restore", {"content": "counts"}, template_extra_vars=prefix)
    assert verify.status == "successful", verify.stdout[-4000:]
    assert_report(verify)

    promote = launch(
        "pgdr Promote",
        {"promote_confirm": "sandbox-production", "reason": "AWX rehearsal"},
        job_type="check",
        diff_mode=True,
    )
    assert promote.status == "successful", promote.stdout[-4000:]
    assert_report(promote)
    plans = promote.results("pgdr.supabase.promote")
    assert plans and not any(p.get("failed") for p in plans)
    assert any(p["changed"] for p in plans)
    for job in (rehearsal, restore, verify, promote):
        for secret in secrets(sandbox):
            assert secret not in job.stdout


def test_drill_rehearsal_plans_the_latest_backup_and_records_nothing(launch, awx_prefix, awx_backup, evidence_dir):
    assert awx_backup.status == "successful"
    drill = launch("pgdr Restore drill", job_type="check", template_extra_vars={"pgdr_backup_prefix": awx_prefix})
    assert drill.status == "successful", drill.stdout[-4000:]
    backup_id = awx_backup.results_by_host("pgdr.supabase.logical_backup")["production"]["backup_id"]
    # The drill restores in place (mode project): after the restore template's run staging holds this backup
    # already, and the rehearsal says so instead of planning the load again.
    assert f"would restore backup {backup_id}" in drill.stdout or f"holds backup {backup_id} already" in drill.stdout
    assert_report(drill)
    events = evidence_dir / "ops" / "restore-events.jsonl"
    recorded = events.read_text().splitlines() if events.exists() else []
    assert all(json.loads(line)["kind"] != "drill" for line in recorded)
