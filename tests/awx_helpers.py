"""The controller configuration in awx/config/ as the apply playbook sees it, and the awx.awx modules' argument
specs it is checked against. Shared by tests/unit/test_awx_config.py and tests/integration/test_awx_runner.py."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "awx" / "config"
ENV_LOOKUP = re.compile(r"lookup\('ansible\.builtin\.env', '([A-Z0-9_]+)'")


def config_env_names():
    """The environment variables the configuration reads (credential inputs, the webhook URL, site settings)."""
    names = set()
    for path in sorted(CONFIG_DIR.glob("*.yml")):
        names.update(ENV_LOOKUP.findall(path.read_text()))
    return sorted(names)


def raw_config():
    """Each file's variables as written (templates not rendered, !unsafe values as plain strings). Read in a
    process of its own, like rendered_config: Ansible's controller-side loading changes how modules run in this
    process afterwards report their warnings."""
    return _in_subprocess("_raw()", os.environ)


def _in_subprocess(call, env):
    """json of awx_helpers.<call> evaluated in a fresh interpreter with env."""
    code = f"import json, sys, awx_helpers; print(json.dumps(awx_helpers.{call}))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(Path(__file__).parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"reading awx/config failed: {result.stderr}")
    return json.loads(result.stdout)


def _raw():
    from ansible.parsing.dataloader import DataLoader

    loader = DataLoader()
    merged = {}
    for path in sorted(CONFIG_DIR.glob("*.yml")):
        merged.update(loader.load_from_file(str(path)) or {})
    return _plain(merged)


def rendered_config(env=None, extra_vars=None):
    """The configuration rendered the way awx/apply.yml renders it: include_vars of every file (trusted templates,
    !unsafe left alone), then Ansible's templating with those variables; lookups read ``env`` (default: a sample
    value for each variable the configuration reads). It runs in a process of its own: Ansible's plugin loader
    installs a collection finder that must not change how the rest of the suite imports the engine."""
    values = env if env is not None else {name: f"sample-{name.lower()}" for name in config_env_names()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PGDR_", "CONTROLLER_"))}
    return _in_subprocess(f"_render({extra_vars or {}!r})", {**clean, **values})


def _render(extra_vars):
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar

    init_plugin_loader()
    loader = DataLoader()
    merged = {}
    for path in sorted(CONFIG_DIR.glob("*.yml")):
        merged.update(loader.load_from_file(str(path), trusted_as_template=True) or {})
    merged.update(extra_vars)
    return _plain(Templar(loader=loader, variables=merged).template(merged))


def _plain(value):
    """Tagged Ansible values as plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


class _Captured(Exception):
    pass


def module_spec(name):
    """The awx.awx module's argument spec and its other validation rules, as main() builds them (captured where
    main() hands them to ControllerAPIModule), with the suboptions its DOCUMENTATION gives for dict options."""
    module = importlib.import_module(f"ansible_collections.awx.awx.plugins.modules.{name}")

    class Capture:
        def __init__(self, argument_spec=None, **rules):
            raise _Captured(argument_spec, rules)

    original = module.ControllerAPIModule
    module.ControllerAPIModule = Capture
    spec = rules = None
    try:
        module.main()
    except _Captured as captured:
        spec, rules = copy.deepcopy(captured.args[0]), captured.args[1]
    else:  # pragma: no cover - the module's main() always builds its module first
        raise AssertionError(f"awx.awx.{name}: main() did not build a ControllerAPIModule")
    finally:
        module.ControllerAPIModule = original
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
    for option, body in spec.items():
        doc = documented.get(option, {})
        if body.get("type") == "dict" and "options" not in body and doc.get("suboptions"):
            body["options"] = _doc_to_spec(doc["suboptions"])
    return spec, rules, documented


def _doc_to_spec(options):
    spec = {}
    for name, doc in options.items():
        entry = {"type": doc.get("type", "str")}
        for key in ("required", "choices", "elements", "default"):
            if key in doc:
                entry[key] = doc[key]
        if doc.get("suboptions"):
            entry["options"] = _doc_to_spec(doc["suboptions"])
        spec[name] = entry
    return spec


def validate_params(module, params):
    """Validate params as the module would (unknown keys, types, choices, required, mutually exclusive, required_if):
    the error messages, empty when valid."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    spec, rules, _unused = module_spec(module)
    validator = ArgumentSpecValidator(
        spec,
        mutually_exclusive=rules.get("mutually_exclusive"),
        required_if=rules.get("required_if"),
        required_one_of=rules.get("required_one_of"),
        required_together=rules.get("required_together"),
        required_by=rules.get("required_by"),
    )
    return list(validator.validate(copy.deepcopy(params)).error_messages)


# Which module applies the items of each variable (awx/apply.yml), and the keys of an item that are not module
# parameters (the apply playbook handles them itself).
MODULE_OF = {
    "controller_organizations": "organization",
    "controller_credential_types": "credential_type",
    "controller_credentials": "credential",
    "controller_execution_environments": "execution_environment",
    "controller_projects": "project",
    "controller_inventories": "inventory",
    "controller_inventory_sources": "inventory_source",
    "controller_notifications": "notification_template",
    "controller_templates": "job_template",
    "controller_workflows": "workflow_job_template",
    "controller_schedules": "schedule",
    "controller_teams": "team",
    "controller_roles": "role",
}
NOT_MODULE_PARAMS = {"controller_workflows": {"simplified_workflow_nodes"}}


def workflow_node_params(workflow, node):
    """A node as awx/apply.yml passes it to awx.awx.workflow_job_template_node."""
    return {"workflow_job_template": workflow["name"], "organization": workflow["organization"], **node}


def item_params(variable, item):
    return {k: v for k, v in item.items() if k not in NOT_MODULE_PARAMS.get(variable, set())}


def playbook_text(playbook):
    """The text a job template's playbook runs: the playbook, the playbooks it imports, and the files of the roles
    it calls (their defaults read extra vars such as rollback_confirm)."""
    seen, texts, todo = set(), [], [REPO / playbook]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        text = path.read_text()
        texts.append(text)
        for imported in re.findall(r"import_playbook:\s*(\S+)", text):
            todo.append((path.parent / imported).resolve())
        for role in re.findall(r"pgdr\.supabase\.([a-z_]+)", text):
            role_dir = REPO / "roles" / role
            if role_dir.is_dir():
                todo.extend(sorted(role_dir.glob("defaults/*.yml")) + sorted(role_dir.glob("tasks/*.yml")))
    return "\n".join(texts)
