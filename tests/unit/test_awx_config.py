"""The controller configuration in awx/config/ against the awx.awx modules that apply it (their argument specs from
the collection the PyPI ansible package ships), against the controller's own rules for surveys, schedules and
credential types, and against this repository (playbooks, their extra vars, the inventory's vault_* variables)."""

from __future__ import annotations

import copy
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from awx_helpers import (
    CONFIG_DIR,
    MODULE_OF,
    REPO,
    config_env_names,
    item_params,
    module_spec,
    playbook_text,
    raw_config,
    rendered_config,
    validate_params,
    workflow_node_params,
)

from ansible_collections.pgdr.supabase.plugins.module_utils import audit

RESTRICTED_TEMPLATES = {"pgdr Restore to staging", "pgdr Restore drill", "pgdr Promote", "pgdr Roll back"}
# Credential types every controller has (the configuration may use them without defining them).
BUILTIN_CREDENTIAL_TYPES = {"Amazon Web Services": ["username", "password"]}


@pytest.fixture(scope="module")
def config():
    return rendered_config()


@pytest.fixture(scope="module")
def raw():
    return raw_config()


def by_name(items):
    return {item["name"]: item for item in items}


# --- the awx.awx argument specs ---------------------------------------------------------------------------------


def test_every_module_used_is_in_the_installed_collection():
    for module in [*MODULE_OF.values(), "workflow_job_template_node"]:
        spec, _unused, documented = module_spec(module)
        assert {"name", "identifier", "role"} & set(spec), module
        # The spec the module validates with and the options it documents agree (the auth options come from a
        # doc fragment and the module's base class, not from main()).
        assert set(spec) <= set(documented), (module, set(spec) - set(documented))


@pytest.mark.parametrize("variable", sorted(MODULE_OF))
def test_every_item_is_valid_for_its_module(config, variable):
    assert config[variable], f"{variable} is empty"
    for item in config[variable]:
        errors = validate_params(MODULE_OF[variable], item_params(variable, item))
        assert not errors, (variable, item.get("name"), errors)


def test_every_workflow_node_is_valid_for_the_node_module(config):
    for workflow in config["controller_workflows"]:
        assert workflow["simplified_workflow_nodes"], workflow["name"]
        for node in workflow["simplified_workflow_nodes"]:
            errors = validate_params("workflow_job_template_node", workflow_node_params(workflow, node))
            assert not errors, (workflow["name"], node["identifier"], errors)


def _first(config, variable, **match):
    return copy.deepcopy(next(i for i in config[variable] if all(i.get(k) == v for k, v in match.items())))


@pytest.mark.parametrize(
    ("variable", "break_it", "expected"),
    [
        ("controller_templates", lambda i: i.update(playbok=i.pop("playbook")), "playbok"),
        ("controller_templates", lambda i: i.update(timeout="four hours"), "timeout"),
        ("controller_templates", lambda i: i.update(job_type="dry"), "job_type"),
        ("controller_templates", lambda i: i.pop("name"), "name"),
        ("controller_templates", lambda i: i.update(forks="many"), "forks"),
        ("controller_schedules", lambda i: i.update(enabled="sometimes"), "enabled"),
        ("controller_roles", lambda i: i.update(role="runner"), "role"),
        ("controller_credential_types", lambda i: i.update(kind="custom"), "kind"),
        ("controller_workflows", lambda i: i.update(survey_spec=["not", "a", "dict"]), "survey_spec"),
    ],
)
def test_a_broken_item_is_rejected(config, variable, break_it, expected):
    item = item_params(variable, _first(config, variable))
    break_it(item)
    errors = validate_params(MODULE_OF[variable], item)
    assert errors and any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda n: n["approval_node"].update(timout=n["approval_node"].pop("timeout")), "timout"),
        (lambda n: n["approval_node"].update(timeout="4h"), "timeout"),
        (lambda n: n["approval_node"].pop("name"), "name"),
        (lambda n: n.update(unified_job_template="pgdr Promote"), "mutually exclusive"),
        (lambda n: n.update(success_nodes="promote"), None),  # a str becomes a one-item list: still valid
    ],
)
def test_a_broken_approval_node_is_rejected(config, break_it, expected):
    workflow = _first(config, "controller_workflows", name="pgdr DR restore and promote")
    node = next(n for n in workflow["simplified_workflow_nodes"] if "approval_node" in n)
    break_it(node)
    errors = validate_params("workflow_job_template_node", workflow_node_params(workflow, node))
    if expected is None:
        assert not errors
    else:
        assert errors and any(expected in e for e in errors), errors


def test_every_item_key_reaches_its_module_in_the_apply_playbook(raw):
    """A key the apply playbook does not pass on would be dropped silently."""
    tasks = yaml.safe_load((REPO / "awx" / "apply.yml").read_text())[0]["tasks"]
    passed = {}
    for task in tasks:
        module = next(k for k in task if k.startswith("awx.awx."))
        variable = re.search(r"controller_[a-z_]+", task["loop"]).group(0)
        args = yaml.safe_dump(task[module])
        key = "nodes" if "subelements" in task["loop"] else variable
        passed.setdefault(key, set()).update(re.findall(r"item(?:\.1)?\.([a-z_]+)", args))
    for variable in MODULE_OF:
        for item in raw[variable]:
            missing = set(item_params(variable, item)) - passed[variable]
            assert not missing, (variable, item.get("name"), missing)
    for workflow in raw["controller_workflows"]:
        for node in workflow["simplified_workflow_nodes"]:
            assert not set(node) - passed["nodes"], (workflow["name"], node["identifier"])


# --- surveys: the controller's own rules (its survey_spec endpoint), and the playbooks' extra vars -------------------

SURVEY_TYPES = {
    "text": str,
    "textarea": str,
    "password": str,
    "integer": int,
    "float": (float, int),
    "multiplechoice": str,
    "multiselect": str,
}


def survey_errors(spec):
    """What the controller answers to this survey_spec (AWX's survey validation), as a list of messages."""
    errors = []
    for field, kind in (("name", str), ("description", str), ("spec", list)):
        if not isinstance(spec.get(field), kind):
            errors.append(f"survey field {field!r} missing or not a {kind.__name__}")
    if errors:
        return errors
    if not spec["spec"]:
        return ["'spec' doesn't contain any items"]
    seen = set()
    for idx, question in enumerate(spec["spec"]):
        if not isinstance(question, dict):
            errors.append(f"question {idx} is not a mapping")
            continue
        for field in ("type", "question_name", "variable", "required"):
            kind = bool if field == "required" else str
            if not isinstance(question.get(field), kind):
                errors.append(f"{field!r} missing from survey question {idx} or not a {kind.__name__}")
        if errors:
            continue
        if question["variable"] in seen:
            errors.append(f"'variable' {question['variable']!r} duplicated in survey question {idx}")
        seen.add(question["variable"])
        qtype = question["type"]
        if qtype not in SURVEY_TYPES:
            errors.append(f"{qtype!r} in survey question {idx} is not an allowed question type")
            continue
        default = question.get("default", "")
        if default != "" and not isinstance(default, SURVEY_TYPES[qtype]):
            errors.append(f"default {default!r} of survey question {idx} is not a {qtype}")
        for limit in ("min", "max"):
            if question.get(limit) is not None and not isinstance(question[limit], int):
                errors.append(f"{limit} of survey question {idx} is not an integer")
        if qtype in ("multiplechoice", "multiselect"):
            choices = question.get("choices")
            if not choices:
                errors.append(f"survey question {idx} of type {qtype} must specify choices")
                continue
            choices = choices.splitlines() if isinstance(choices, str) else choices
            defaults = [d for d in (default.splitlines() if isinstance(default, str) else default) if d]
            if qtype == "multiplechoice" and len(defaults) > 1:
                errors.append(f"multiple choice question {idx} can only have one default")
            if any(d not in choices for d in defaults):
                errors.append(f"default of survey question {idx} is not one of its choices")
        limits_ok = all(isinstance(question.get(k, 0), int) for k in ("min", "max"))
        if qtype == "text" and isinstance(default, str) and default and limits_ok:
            if question.get("min") is not None and len(default) < question["min"]:
                errors.append(f"default of survey question {idx} is shorter than its min")
            if question.get("max") is not None and len(default) > question["max"]:
                errors.append(f"default of survey question {idx} is longer than its max")
    return errors


def all_surveys(config):
    for variable in ("controller_templates", "controller_workflows"):
        for item in config[variable]:
            if item.get("survey_enabled"):
                yield item


def test_every_survey_is_valid_for_the_controller(config):
    surveys = list(all_surveys(config))
    assert len(surveys) >= 8
    for item in surveys:
        assert not survey_errors(item["survey_spec"]), (item["name"], survey_errors(item["survey_spec"]))


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda s: s["spec"][0].pop("required"), "'required' missing"),
        (lambda s: s["spec"][1].update(variable=s["spec"][0]["variable"]), "duplicated"),
        (lambda s: s["spec"][2].update(default="physical"), "not one of its choices"),
        (lambda s: s["spec"][2].update(type="dropdown"), "not an allowed question type"),
        (lambda s: s["spec"][0].update(max="64"), "max of survey question 0"),
        (lambda s: s["spec"].clear(), "doesn't contain any items"),
        (lambda s: s.pop("description"), "'description' missing"),
    ],
)
def test_a_broken_survey_is_rejected(config, break_it, expected):
    survey = _first(config, "controller_templates", name="pgdr Restore to staging")["survey_spec"]
    break_it(survey)
    errors = survey_errors(survey)
    assert any(expected in e for e in errors), errors


def test_the_restore_survey_asks_what_restore_yml_reads(config):
    survey = by_name(config["controller_templates"])["pgdr Restore to staging"]["survey_spec"]["spec"]
    questions = {q["variable"]: q for q in survey}
    assert {"backup", "reason", "restore_method", "target_time", "from_secondary"} <= set(questions)
    assert questions["reason"]["required"] is True and questions["reason"].get("default", "") == ""
    assert questions["restore_method"]["choices"] == ["logical", "pitr", "supabase_pitr"]
    # The entry role restore.yml lists validates the method against the same choices.
    specs = yaml.safe_load((REPO / "roles" / "restore" / "meta" / "argument_specs.yml").read_text())
    method = specs["argument_specs"]["run"]["options"]["restore_method"]
    assert method["choices"] == ["logical", "pitr", "supabase_pitr"]
    assert "pgdr.supabase.restore" in (REPO / "playbooks" / "restore.yml").read_text()


def test_every_survey_variable_is_read_by_its_playbook(config):
    templates = by_name(config["controller_templates"])
    for template in templates.values():
        text = playbook_text(template["playbook"])
        for question in (template.get("survey_spec") or {}).get("spec", []):
            assert re.search(rf"\b{question['variable']}\b", text), (template["name"], question["variable"])
    for workflow in config["controller_workflows"]:
        nodes = [
            templates[n["unified_job_template"]]
            for n in workflow["simplified_workflow_nodes"]
            if "unified_job_template" in n
        ]
        text = "\n".join(playbook_text(t["playbook"]) for t in nodes)
        for question in workflow["survey_spec"]["spec"]:
            assert re.search(rf"\b{question['variable']}\b", text), (workflow["name"], question["variable"])


def test_every_template_that_changes_something_can_rehearse_in_check_mode(config):
    templates = by_name(config["controller_templates"])
    read_only = {"pgdr Verify restore"}
    for name, template in templates.items():
        if name not in read_only:
            assert template.get("ask_job_type_on_launch") is True, name
        assert template.get("job_type", "run") == "run", name


# --- the repository: playbooks, inventories, credentials -----------------------------------------------------------


def test_every_template_runs_a_playbook_of_this_repository(config):
    wanted = {
        "pgdr Backup": "playbooks/backup.yml",
        "pgdr Monitor backups": "playbooks/monitor.yml",
        "pgdr Retention": "playbooks/retention.yml",
        "pgdr PITR base backup": "playbooks/pitr_backup.yml",
        "pgdr Restore to staging": "restore.yml",
        "pgdr Restore drill": "playbooks/drill.yml",
        "pgdr Promote": "playbooks/promote.yml",
        "pgdr Roll back": "playbooks/rollback.yml",
        "pgdr Verify restore": "playbooks/verify.yml",
    }
    templates = by_name(config["controller_templates"])
    assert {name: t["playbook"] for name, t in templates.items()} == wanted
    for playbook in wanted.values():
        assert (REPO / playbook).is_file(), playbook
    for source in config["controller_inventory_sources"]:
        assert (REPO / source["source_path"]).is_file(), source["source_path"]


def test_every_reference_names_an_object_of_the_configuration(config):
    names = {v: set(by_name(config[v])) for v in MODULE_OF if v != "controller_roles"}
    credential_types = names["controller_credential_types"] | set(BUILTIN_CREDENTIAL_TYPES)
    templates_and_workflows = names["controller_templates"] | names["controller_workflows"]
    notifications = names["controller_notifications"]
    for cred in config["controller_credentials"]:
        assert cred["credential_type"] in credential_types, cred["name"]
    for project in config["controller_projects"]:
        assert project["default_environment"] in names["controller_execution_environments"]
    for source in config["controller_inventory_sources"]:
        assert source["inventory"] in names["controller_inventories"]
        assert source["source_project"] in names["controller_projects"]
    for item in config["controller_templates"] + config["controller_workflows"]:
        for key in ("notification_templates_error", "notification_templates_success"):
            assert set(item.get(key, [])) <= notifications, (item["name"], key)
        assert set(item.get("notification_templates_approvals", [])) <= notifications, item["name"]
    for template in config["controller_templates"]:
        assert template["project"] in names["controller_projects"]
        assert template["inventory"] in names["controller_inventories"]
        assert template["execution_environment"] in names["controller_execution_environments"]
        assert set(template.get("credentials", [])) <= names["controller_credentials"], template["name"]
        # The controller refuses two credentials of one type on a template.
        creds = template.get("credentials", [])
        types = [by_name(config["controller_credentials"])[c]["credential_type"] for c in creds]
        assert len(types) == len(set(types)), template["name"]
    for schedule in config["controller_schedules"]:
        assert schedule["unified_job_template"] in templates_and_workflows, schedule["name"]
    for role in config["controller_roles"]:
        assert role["team"] in names["controller_teams"]
        assert set(role.get("job_templates", [])) <= names["controller_templates"]
        assert set(role.get("workflows", [])) <= names["controller_workflows"]


def test_workflow_nodes_link_to_nodes_of_their_workflow_and_prompt_only_what_the_template_asks(config):
    templates = by_name(config["controller_templates"])
    for workflow in config["controller_workflows"]:
        ids = [n["identifier"] for n in workflow["simplified_workflow_nodes"]]
        assert len(ids) == len(set(ids)), workflow["name"]
        for node in workflow["simplified_workflow_nodes"]:
            for link in ("success_nodes", "failure_nodes", "always_nodes"):
                assert set(node.get(link, [])) <= set(ids), (workflow["name"], node["identifier"], link)
            template = templates.get(node.get("unified_job_template"))
            if template is None:
                continue
            if "job_type" in node:
                assert template.get("ask_job_type_on_launch"), (workflow["name"], node["identifier"])
            if "diff_mode" in node:
                assert template.get("ask_diff_mode_on_launch"), (workflow["name"], node["identifier"])
            survey_vars = {q["variable"] for q in template.get("survey_spec", {}).get("spec", [])}
            assert set(node.get("extra_data", {})) <= survey_vars, (workflow["name"], node["identifier"])


def test_the_dr_workflow_is_restore_then_approval_within_the_rto_then_promote(config):
    workflow = by_name(config["controller_workflows"])["pgdr DR restore and promote"]
    nodes = {n["identifier"]: n for n in workflow["simplified_workflow_nodes"]}
    restore = next(n for n in nodes.values() if n.get("unified_job_template") == "pgdr Restore to staging")
    [approval_id] = restore["success_nodes"]
    approval = nodes[approval_id]
    assert approval["approval_node"]["timeout"] == audit.RTO_TARGET_S == 4 * 3600
    [promote_id] = approval["success_nodes"]
    assert nodes[promote_id]["unified_job_template"] == "pgdr Promote"
    assert "job_type" not in nodes[promote_id]
    # The promote's typed confirmation comes from the workflow's survey; a failure (no failure path) fails the
    # workflow, which notifies.
    assert "promote_confirm" in {q["variable"] for q in workflow["survey_spec"]["spec"]}
    assert not any(n.get("failure_nodes") or n.get("always_nodes") for n in nodes.values())
    assert workflow["notification_templates_error"] and workflow["notification_templates_approvals"]
    drill = by_name(config["controller_workflows"])["pgdr DR drill"]
    rehearsal = [n for n in drill["simplified_workflow_nodes"] if n.get("unified_job_template") == "pgdr Promote"]
    assert [n["job_type"] for n in rehearsal] == ["check"]


def test_only_the_admin_team_may_run_restore_promote_and_rollback(config):
    admin = config["pgdr_awx_admin_team"]
    assert admin == "platform-admins"
    granted = {}
    for role in config["controller_roles"]:
        assert "user" not in role and "users" not in role and "teams" not in role
        for name in role.get("job_templates", []) + role.get("workflows", []):
            granted.setdefault(name, set()).add((role["team"], role["role"]))
    for name in RESTRICTED_TEMPLATES | set(by_name(config["controller_workflows"])):
        assert (admin, "execute") in granted.get(name, set()), name
        assert {team for team, _unused in granted[name]} == {admin}, name
    for name in by_name(config["controller_workflows"]):
        assert (admin, "approval") in granted[name]


def test_backup_templates_notify_on_failure_and_the_monitor_failure_is_the_alert(config):
    templates = by_name(config["controller_templates"])
    for name in ("pgdr Backup", "pgdr PITR base backup", "pgdr Retention", "pgdr Monitor backups"):
        assert templates[name]["notification_templates_error"] == ["pgdr on-call webhook"], name


def test_credential_types_inject_exactly_the_vault_variables_the_inventory_reads(raw):
    inventory = (REPO / "inventories" / "production" / "group_vars" / "all.yml").read_text()
    read = set(re.findall(r"\b(vault_[a-z0-9_]+)\b", inventory))
    injected = set()
    for ctype in raw["controller_credential_types"]:
        fields = {f["id"]: f for f in ctype["inputs"]["fields"]}
        assert set(ctype["inputs"].get("required", [])) <= set(fields), ctype["name"]
        assert set(ctype["injectors"]) <= {"env", "extra_vars", "file"}, ctype["name"]
        for field in fields.values():
            assert set(field) <= {"id", "label", "type", "secret", "multiline", "help_text", "format", "choices"}
            assert field.get("type", "string") in ("string", "boolean"), (ctype["name"], field["id"])
            if re.search(r"password|secret|token|identity|hmac|url", field["id"]):
                assert field.get("secret") is True, (ctype["name"], field["id"])
        for var, template in ctype["injectors"].get("extra_vars", {}).items():
            used = re.findall(r"{{\s*([a-z_]+)\s*}}", template)
            assert used and set(used) <= set(fields), (ctype["name"], var)
            injected.add(var)
    assert injected == read - {"vault_"}


ENV_ONLY = r"\{\{ lookup\('ansible\.builtin\.env', '[A-Z0-9_]+'\) \}\}"


def test_no_secret_is_written_in_the_configuration(raw):
    for cred in raw["controller_credentials"]:
        for key, value in cred["inputs"].items():
            assert re.fullmatch(ENV_ONLY, value), (cred["name"], key)
    for notification in raw["controller_notifications"]:
        url = notification["notification_configuration"]["url"]
        assert re.fullmatch(ENV_ONLY, url)
    assert "PGDR_AWX_NOTIFY_WEBHOOK_URL" in config_env_names()


def test_a_rendered_credential_takes_its_value_from_the_environment():
    config = rendered_config(env={name: "" for name in config_env_names()} | {"PGDR_SUPABASE_TOKEN": "sbp_x"})
    creds = by_name(config["controller_credentials"])
    assert creds["pgdr Supabase Management API token"]["inputs"]["token"] == "sbp_x"
    assert creds["pgdr age identity"]["inputs"]["identity"] == ""


# --- schedules: the controller's RRULE rules, and when they fire ----------------------------------------------------


def rrule_errors(value):
    """What the controller answers to this rrule (AWX's schedule rrule validation, old and new rules together)."""
    errors = []
    dtstarts = re.findall(r"DTSTART(?:;[^:]+)?:[0-9]+T[0-9]+Z?", value)
    if not dtstarts:
        errors.append("Valid DTSTART required in rrule")
    elif len(dtstarts) > 1:
        errors.append("Multiple DTSTART is not supported")
    elif not (dtstarts[0].endswith("Z") or "TZID=" in dtstarts[0]):
        errors.append("DTSTART cannot be a naive datetime")
    rules = re.findall(r"RRULE:\S+", value)
    if not rules:
        errors.append("One or more rule required in rrule")
    for rule in rules:
        upper = rule.upper()
        if "INTERVAL" not in upper:
            errors.append(f"INTERVAL required in rrule: {rule}")
        if "SECONDLY" in upper:
            errors.append("SECONDLY is not supported")
        if re.match(r".*?BYDAY[:=][0-9]+[a-zA-Z]{2}", rule):
            errors.append("BYDAY with numeric prefix not supported")
        if "COUNT" in upper and "UNTIL" in upper:
            errors.append("RRULE may not contain both COUNT and UNTIL")
        if re.search(r"BYMONTHDAY=[0-9]+,", upper):
            errors.append("Multiple BYMONTHDAYs not supported")
        if re.search(r"BYMONTH=[0-9]+,", upper):
            errors.append("Multiple BYMONTHs not supported")
        if "BYYEARDAY" in upper or "BYWEEKNO" in upper:
            errors.append("BYYEARDAY / BYWEEKNO not supported")
        count = re.search(r"COUNT=([0-9]+)", upper)
        if count and int(count.group(1)) > 999:
            errors.append("COUNT > 999 is unsupported")
    for word in ("EXDATE:", "RDATE:"):
        if word in value.upper():
            errors.append(f"{word[:-1]} not allowed in rrule")
    return errors


def occurrences(value, after, count):
    from dateutil import rrule

    rule = rrule.rrulestr(value.replace(" RRULE:", "\nRRULE:").replace("TZID=UTC", "TZID=UTC"), forceset=True)
    out, moment = [], after
    for _unused in range(count):
        moment = rule.after(moment)
        out.append(moment)
    return out


def test_every_schedule_is_valid_for_the_controller(config):
    for schedule in config["controller_schedules"]:
        assert not rrule_errors(schedule["rrule"]), (schedule["name"], rrule_errors(schedule["rrule"]))
        assert occurrences(schedule["rrule"], dt.datetime(2026, 12, 1, tzinfo=dt.UTC), 2)


@pytest.mark.parametrize(
    ("rrule", "expected"),
    [
        ("DTSTART;TZID=UTC:20260105T090000 RRULE:FREQ=MONTHLY;INTERVAL=3;BYDAY=1MO", "numeric prefix"),
        ("DTSTART:20260105T090000 RRULE:FREQ=DAILY;INTERVAL=1", "naive"),
        ("RRULE:FREQ=DAILY;INTERVAL=1", "DTSTART required"),
        ("DTSTART;TZID=UTC:20260105T090000 RRULE:FREQ=DAILY", "INTERVAL required"),
        ("DTSTART;TZID=UTC:20260105T090000 RRULE:FREQ=YEARLY;INTERVAL=1;BYMONTH=1,4,7,10", "Multiple BYMONTHs"),
    ],
)
def test_a_broken_rrule_is_rejected(rrule, expected):
    assert any(expected in e for e in rrule_errors(rrule)), rrule_errors(rrule)


def test_schedules_fire_when_the_plan_says(config):
    schedules = {s["unified_job_template"]: s for s in config["controller_schedules"]}
    start = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    backups = occurrences(schedules["pgdr Backup"]["rrule"], start, 3)
    assert [b - backups[0] for b in backups] == [dt.timedelta(days=d) for d in range(3)]
    assert backups[0].hour == 2
    monitors = occurrences(schedules["pgdr Monitor backups"]["rrule"], start, 3)
    assert monitors[1] - monitors[0] == dt.timedelta(hours=1) and monitors[0].minute == 17
    drills = occurrences(schedules["pgdr Restore drill"]["rrule"], start, 4)
    assert [(d.year, d.month) for d in drills] == [(2027, 1), (2027, 4), (2027, 7), (2027, 10)]
    assert all(d.weekday() == 0 and d.day <= 7 for d in drills), drills
    assert schedules["pgdr Restore drill"]["extra_data"] == {"drill_reason": "quarterly restore drill (scheduled)"}
    assert "drill_reason" in {
        q["variable"] for q in by_name(config["controller_templates"])["pgdr Restore drill"]["survey_spec"]["spec"]
    }


# --- the apply playbook -------------------------------------------------------------------------------------------


def run_apply(env, *args):
    bin_dir = Path(sys.executable).parent
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(REPO)}
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "awx/apply.yml", *args],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_apply_playbook_parses():
    result = run_apply({}, "--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_apply_playbook_refuses_to_start_without_a_controller():
    result = run_apply({}, "--tags", "preflight")
    assert result.returncode != 0
    assert "export CONTROLLER_HOST" in result.stdout


def test_the_apply_playbook_names_the_empty_credential_inputs_and_never_a_value():
    env = {name: f"value-of-{name.lower()}" for name in config_env_names()}
    env.pop("PGDR_PRODUCTION_DB_PASSWORD")
    env.pop("PGDR_BACKUP_AGE_IDENTITY")
    env |= {"CONTROLLER_HOST": "https://awx.invalid", "CONTROLLER_OAUTH_TOKEN": "token-value"}
    result = run_apply(env, "--tags", "preflight")
    assert result.returncode != 0
    assert "pgdr Supabase database / db_password, pgdr age identity / identity" in result.stdout
    for name, value in env.items():
        if name.startswith("PGDR_") and name != "PGDR_AWX_PROJECT_URL":
            assert value not in result.stdout, name


def test_the_apply_playbook_preflight_passes_with_every_input_set():
    env = {name: f"value-of-{name.lower()}" for name in config_env_names()}
    env |= {"CONTROLLER_HOST": "https://awx.invalid", "CONTROLLER_OAUTH_TOKEN": "token-value"}
    result = run_apply(env, "--tags", "preflight")
    assert result.returncode == 0, result.stdout
    assert "token-value" not in result.stdout


def test_the_config_files_are_all_loaded_by_the_apply_playbook():
    apply = (REPO / "awx" / "apply.yml").read_text()
    assert "include_vars" in apply and "extensions: [yml]" in apply
    assert sorted(p.suffix for p in CONFIG_DIR.iterdir()) == [".yml"] * len(list(CONFIG_DIR.iterdir()))


# --- the execution environment ---------------------------------------------------------------------------------------

# What the engine imports from outside the standard library and Ansible (plugins/): the EE's top-level packages.
RUNTIME_TOP_LEVEL = ["psycopg[binary]", "boto3", "zstandard", "pyrage", "cryptography"]


def pins(path):
    """name (normalized, extras dropped) -> pinned version, from a requirements file."""
    out = {}
    for raw_line in Path(path).read_text().splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[canonical(name)] = version
    return out


def canonical(name):
    return re.sub(r"[-_.]+", "-", name.split("[", 1)[0]).lower()


def runtime_closure():
    """The top-level run-time packages and everything they require, from the installed distributions."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen, todo = {}, [Requirement(r) for r in RUNTIME_TOP_LEVEL]
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in seen:
            continue
        dist = md.distribution(req.name)
        seen[name] = dist.version
        for spec in dist.requires or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in ["", *req.extras]):
                todo.append(dep)
    return seen


def test_the_engine_imports_nothing_outside_the_runtime_packages():
    import ast

    imported = set()
    for path in (REPO / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    ours = {"ansible", "ansible_collections", "__future__"}
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ours}
    # lz4 is imported only for an lz4-compressed WAL archive, with a clear error when it is missing.
    assert third_party - {"lz4"} == {"psycopg", "boto3", "botocore", "zstandard", "pyrage", "cryptography"}


def test_ansible_builder_creates_a_context_with_only_runtime_requirements(tmp_path):
    builder = Path(sys.executable).parent / "ansible-builder"
    context = tmp_path / "context"
    result = subprocess.run(
        [str(builder), "create", "-f", "execution-environment.yml", "-c", str(context)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    built = pins(context / "_build" / "requirements.txt")
    closure = runtime_closure()
    # Exactly the run-time packages and their dependencies: no linter, test tool, Molecule, moto, or the
    # ansible package (the EE gets ansible-core and ansible-runner from its own pins).
    assert set(built) == set(closure)
    dev = pins(REPO / "requirements.txt")
    for name, version in built.items():
        assert dev[name] == version == closure[name], name
    containerfile = next(p for p in context.iterdir() if p.name in ("Containerfile", "Dockerfile")).read_text()
    assert f"ansible-core=={dev['ansible-core']}" in containerfile
    assert f"ansible-runner=={dev['ansible-runner']}" in containerfile
    bindep = (context / "_build" / "bindep.txt").read_text()
    assert "postgresql-client-15 [platform:dpkg]" in bindep and "postgresql15 [platform:rpm]" in bindep


def test_templates_keep_evidence_out_of_the_throwaway_job_folder(config):
    """In a job the inventory comes from the controller's database: inventory_dir is the job folder's inventory/,
    so inventory defaults built on it would put the incident log where the container throws it away."""
    inventory = yaml.safe_load((REPO / "inventories" / "production" / "group_vars" / "all.yml").read_text())
    relative = {k for k, v in inventory.items() if isinstance(v, str) and "inventory_dir" in v}
    assert relative >= {"pgdr_incidents_path", "pgdr_events_path", "pgdr_reports_dir"}
    evidence = config["pgdr_awx_evidence_dir"]
    for template in config["controller_templates"]:
        text = playbook_text(template["playbook"])
        for key in sorted(relative):
            if re.search(rf"\b{key}\b", text):
                value = (template.get("extra_vars") or {}).get(key, "")
                assert value.startswith(evidence + "/"), (template["name"], key, value)


# Variables a template's playbook mentions on a path its survey cannot choose: the drill restores our own backup
# (restore_method is not a drill survey variable), never Supabase's PITR.
NOT_REACHABLE = {"pgdr Restore drill": {"vault_supabase_token"}}


def test_every_template_gets_the_credentials_its_playbook_needs_from_the_production_inventory(config, raw):
    """Each pgdr_* variable a template's playbook reads, followed through the production inventory, needs some
    vault_* variables; the template's credentials must inject all of them (and so the job never meets an
    undefined vault_* variable)."""
    # Each top-level variable's lines, its indented comments included (the keys an operator may switch on, such
    # as access_key/secret_key of the buckets, are commented alternatives inside the variable).
    text_of, current = {}, None
    for line in (REPO / "inventories" / "production" / "group_vars" / "all.yml").read_text().splitlines():
        top = re.match(r"([a-z_0-9]+):", line)
        if top:
            current = top.group(1)
        if current and (line.startswith((" ", current))):
            text_of[current] = text_of.get(current, "") + line + "\n"

    def vault_needs(name, seen):
        if name in seen or name not in text_of:
            return set()
        seen.add(name)
        needs = set(re.findall(r"\b(vault_[a-z0-9_]+)\b", text_of[name]))
        if re.search(r"type: (ssm|secretsmanager)\b", text_of[name]):
            needs.add("AWS credentials (env store)")
        for other in set(re.findall(r"\b(pgdr_[a-z0-9_]+)\b", text_of[name])) - {name}:
            needs |= vault_needs(other, seen)
        return needs

    injected_by = {"Amazon Web Services": {"AWS credentials (env store)"}}
    for ctype in raw["controller_credential_types"]:
        injected_by[ctype["name"]] = set(ctype["injectors"].get("extra_vars", {}))
    cred_type = {c["name"]: c["credential_type"] for c in config["controller_credentials"]}
    for template in config["controller_templates"]:
        text = playbook_text(template["playbook"])
        needed = set()
        for name in set(re.findall(r"\b(pgdr_[a-z0-9_]+)\b", text)):
            needed |= vault_needs(name, set())
        needed -= NOT_REACHABLE.get(template["name"], set())
        creds = template.get("credentials", [])
        given = set().union(set(), *(injected_by[cred_type[c]] for c in creds))
        assert needed <= given, (template["name"], sorted(needed - given))
        # And no credential the playbook never reads (least privilege).
        for cred in creds:
            assert injected_by[cred_type[cred]] & needed, (template["name"], cred)


def inject(ctype, inputs):
    """The extra vars the controller injects for a credential of this type (it renders each injector template with
    the credential's inputs in a sandboxed Jinja environment)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment()
    return {k: env.from_string(v).render(**inputs) for k, v in ctype["injectors"].get("extra_vars", {}).items()}


def test_the_injected_credentials_render_the_production_inventory_for_each_template(config, raw, tmp_path):
    """With only its own credentials injected, every production-inventory variable a template's playbook reads
    renders (no undefined vault_* variable), and the values reach where the inventory puts them. One play per
    template; play vars stand in for the injected extra vars (both outrank the inventory)."""
    types = by_name(raw["controller_credential_types"])
    cred_type = {c["name"]: c["credential_type"] for c in config["controller_credentials"]}
    inventory = yaml.safe_load((REPO / "inventories" / "production" / "group_vars" / "all.yml").read_text())
    plays = []
    for template in config["controller_templates"]:
        extra = {}
        for cred in template.get("credentials", []):
            if cred_type[cred] in types:
                fields = types[cred_type[cred]]["inputs"]["fields"]
                extra |= inject(types[cred_type[cred]], {f["id"]: f"fake-{f['id'].replace('_', '-')}" for f in fields})
        text = playbook_text(template["playbook"])
        unreachable = NOT_REACHABLE.get(template["name"], set())
        names = sorted(
            n
            for n in inventory
            if re.search(rf"\b{n}\b", text) and not any(v in yaml.safe_dump(inventory[n]) for v in unreachable)
        )
        task = {"name": template["name"], "ansible.builtin.debug": {"msg": "{{ [" + ", ".join(names) + "] }}"}}
        plays.append({"name": template["name"], "hosts": "production", "gather_facts": False, "vars": extra})
        plays[-1]["tasks"] = [task]
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump(plays))
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", "inventories/production/hosts.yml", str(playbook)],
        cwd=REPO,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(REPO), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok: [production]") == len(plays), result.stdout
    assert "fake-db-password" in result.stdout and "fake-project-ref" in result.stdout


def test_the_collection_declares_its_own_execution_environment_needs():
    """An EE that lists pgdr.supabase among its galaxy requirements gets the collection's needs from
    meta/execution-environment.yml: the same run-time Python file and system packages the project's own EE uses."""
    meta = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text())
    project = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    needs = meta["dependencies"]
    assert set(needs) == {"python", "system"}
    assert needs["python"] == project["dependencies"]["python"] == "meta/ee-requirements.txt"
    assert needs["system"] == project["dependencies"]["system"] == "bindep.txt"
    runtime = pins(REPO / needs["python"])
    dev = pins(REPO / "requirements.txt")
    assert runtime and all(dev.get(name) == version for name, version in runtime.items()), runtime
    system = [line.split("#")[0].strip() for line in (REPO / needs["system"]).read_text().splitlines()]
    assert {"postgresql-client-15 [platform:dpkg]", "pgbackrest [platform:dpkg]"} <= set(filter(None, system))
