"""The modules without a sandbox: argument handling, the one error path, and documentation matching the spec."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[2]
MODULES = ("pgdr.supabase.logical_backup", "pgdr.supabase.backup_info")
PASSWORD = "Sup3r-Secret-Pw"
S3_SECRET = "wJalrXUtnFEMI-K7MDENG"
UNREACHABLE_S3 = {
    "bucket": "dr-backups",
    "endpoint_url": "http://127.0.0.1:1",
    "access_key": "AKIAUNITTEST",
    "secret_key": S3_SECRET,
}


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_module(name):
    return load(REPO / "plugins" / "modules" / f"{name.rsplit('.', 1)[-1]}.py", f"_pgdr_test_{name}")


def run_module(name, args, capsys, check_mode=False):
    """Run a module's main() with args; return (exit code, result dict)."""
    module = load_module(name)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    out = capsys.readouterr().out
    return exited.value.code, json.loads(out)


def backup_args(**overrides):
    args = {
        "source": "production",
        "dsn": f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres",
        "s3": dict(UNREACHABLE_S3),
    }
    args.update(overrides)
    return args


class TestLogicalBackupModule:
    @pytest.mark.parametrize(
        "dsn",
        [
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres",
            f"host=127.0.0.1 port=1 dbname=postgres user=postgres password={PASSWORD}",
        ],
    )
    @pytest.mark.parametrize("check_mode", [False, True])
    def test_unreachable_source_fails_naming_step_and_host_without_the_password(self, capsys, dsn, check_mode):
        code, result = run_module("pgdr.supabase.logical_backup", backup_args(dsn=dsn), capsys, check_mode=check_mode)
        assert code == 1
        assert result["failed"] is True
        msg = result["msg"]
        assert msg.startswith("[connect source] cannot reach the database server")
        assert "127.0.0.1:1/postgres" in msg
        assert result["error"]["step"] == "connect source"
        assert result["error"]["subject"] == "127.0.0.1:1/postgres"
        assert "server is up" in result["error"]["hint"]
        assert PASSWORD not in json.dumps(result)
        assert S3_SECRET not in json.dumps(result)

    def test_bad_window_choice_fails_before_connecting(self, capsys):
        code, result = run_module("pgdr.supabase.logical_backup", backup_args(window="weekly"), capsys)
        assert code == 1
        assert "window" in result["msg"]
        assert "weekly" in result["msg"]
        assert "daily, hourly, every_run" in result["msg"]
        assert "connect source" not in result["msg"]
        assert PASSWORD not in json.dumps(result)

    def test_missing_bucket_fails(self, capsys):
        s3 = dict(UNREACHABLE_S3)
        del s3["bucket"]
        code, result = run_module("pgdr.supabase.logical_backup", backup_args(s3=s3), capsys)
        assert code == 1
        assert "bucket" in result["msg"]

    def test_unusable_source_name_fails_in_the_plan_step(self, capsys):
        code, result = run_module("pgdr.supabase.logical_backup", backup_args(source="prod/eu"), capsys)
        assert code == 1
        assert result["error"]["step"] == "plan"
        assert "'prod/eu'" in result["msg"]


class TestBackupInfoModule:
    def test_unreachable_endpoint_fails_naming_the_step_and_bucket(self, capsys):
        code, result = run_module(
            "pgdr.supabase.backup_info", {"source": "production", "s3": dict(UNREACHABLE_S3)}, capsys
        )
        assert code == 1
        assert result["error"]["step"] == "list backups"
        assert result["error"]["subject"] == "s3://dr-backups/"
        assert "cannot reach the S3 endpoint" in result["msg"]
        assert S3_SECRET not in json.dumps(result)


# --- Documentation against the argument spec -----------------------------------------------------------------


class _SpecCaptured(Exception):
    pass


def argument_spec_of(name):
    """The argument_spec main() hands to AnsibleModule, captured without running anything else."""
    module = load_module(name)
    captured = {}

    class Capture:
        def __init__(self, argument_spec, **kwargs):
            captured["spec"] = argument_spec
            captured["kwargs"] = kwargs
            raise _SpecCaptured

    module.AnsibleModule = Capture
    with pytest.raises(_SpecCaptured):
        module.main()
    return captured["spec"], captured["kwargs"]


def documentation_of(name):
    module = load_module(name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = {}
    for fragment in doc.get("extends_documentation_fragment") or []:
        path = REPO / "plugins" / "doc_fragments" / f"{fragment.rsplit('.', 1)[-1]}.py"
        frag = yaml.safe_load(load(path, f"_pgdr_test_fragment_{fragment}").ModuleDocFragment.DOCUMENTATION)
        options.update(frag["options"])
    # As in Ansible, the module's own options win over a fragment's.
    options.update(doc.get("options") or {})
    return module, doc, options


def compare(spec, documented, where):
    """Differences between an argument spec and documented options, as readable lines."""
    problems = []
    for key in sorted(set(spec) - set(documented)):
        problems.append(f"{where}{key}: in the argument spec, not documented")
    for key in sorted(set(documented) - set(spec)):
        problems.append(f"{where}{key}: documented, not in the argument spec")
    for key in sorted(set(spec) & set(documented)):
        s, d = spec[key], documented[key]
        if s.get("type", "str") != d.get("type", "str"):
            problems.append(
                f"{where}{key}: type {s.get('type', 'str')} in the spec, {d.get('type', 'str')} in the docs"
            )
        if s.get("default") != d.get("default"):
            problems.append(f"{where}{key}: default {s.get('default')!r} in the spec, {d.get('default')!r} in the docs")
        if bool(s.get("required")) != bool(d.get("required")):
            problems.append(f"{where}{key}: required differs between spec and docs")
        if list(s.get("choices") or []) != list(d.get("choices") or []):
            problems.append(f"{where}{key}: choices differ between spec and docs")
        if not d.get("description"):
            problems.append(f"{where}{key}: no description")
        if "options" in s or "suboptions" in d:
            problems += compare(s.get("options") or {}, d.get("suboptions") or {}, f"{where}{key}.")
    return problems


@pytest.mark.parametrize("name", MODULES)
class TestDocumentation:
    def test_documentation_examples_and_return_are_yaml(self, name):
        module, doc, _ = documentation_of(name)
        assert doc["module"] == name.rsplit(".", 1)[-1]
        assert doc["short_description"]
        assert doc["attributes"]["check_mode"]["support"] == "full"
        examples = yaml.safe_load(module.EXAMPLES)
        assert isinstance(examples, list)
        assert examples
        assert any(name in task for task in examples)
        returned = yaml.safe_load(module.RETURN)
        assert isinstance(returned, dict)
        assert returned
        for key, entry in returned.items():
            assert entry.get("description"), key
            assert entry.get("type"), key

    def test_every_option_is_documented_as_specified(self, name):
        spec, kwargs = argument_spec_of(name)
        _, _, documented = documentation_of(name)
        assert compare(spec, documented, "") == []
        assert kwargs.get("supports_check_mode") is True

    def test_secrets_are_no_log(self, name):
        spec, _ = argument_spec_of(name)
        s3_options = spec["s3"]["options"]
        for key in ("secret_key", "session_token", "access_key"):
            assert s3_options[key].get("no_log") is True, key
        if "dsn" in spec:
            assert spec["dsn"].get("no_log") is True

    def test_ansible_doc_reads_the_module(self, name):
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        }
        out = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-doc"), "--json", name],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=False,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)[name]["doc"]
        assert "s3" in doc["options"]
        assert "bucket" in doc["options"]["s3"]["suboptions"]


def test_the_compare_helper_reports_drift():
    """The documentation check above can fail: a spec and docs that disagree produce problems."""
    spec = {"a": {"type": "int", "default": 1}, "b": {"type": "str"}, "s3": {"type": "dict", "options": {"x": {}}}}
    docs = {
        "a": {"type": "str", "default": 2, "description": "A"},
        "c": {"description": "C"},
        "s3": {"type": "dict", "description": "S", "suboptions": {}},
    }
    problems = compare(spec, docs, "")
    assert "b: in the argument spec, not documented" in problems
    assert "c: documented, not in the argument spec" in problems
    assert "a: type int in the spec, str in the docs" in problems
    assert "a: default 1 in the spec, 2 in the docs" in problems
    assert "s3.x: in the argument spec, not documented" in problems
