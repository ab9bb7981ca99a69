"""The modules without a sandbox: argument handling, the one error path, check mode and no_log rules."""

from __future__ import annotations

import importlib.util
import json
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


ALL_MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))


# validate-modules (`make sanity`) checks DOCUMENTATION, EXAMPLES and RETURN against its schema and the documented
# options against the argument spec (names, types, defaults, required, choices, elements, suboptions), the
# check_mode attribute against supports_check_mode, and that every secret-looking option decides no_log. What it
# does not check is this project's own rule, tested here: every module supports check mode fully, its examples call
# it by its FQCN, and the secrets are no_log=True (not just decided).
@pytest.mark.parametrize("stem", ALL_MODULES)
def test_every_module_supports_check_mode_and_its_examples_use_the_fqcn(stem):
    module = load_module(f"pgdr.supabase.{stem}")
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["attributes"]["check_mode"]["support"] == "full", stem
    examples = yaml.safe_load(module.EXAMPLES)
    assert any(f"pgdr.supabase.{stem}" in task for task in examples), stem


@pytest.mark.parametrize("name", MODULES)
def test_secrets_are_no_log(name):
    spec, kwargs = argument_spec_of(name)
    assert kwargs.get("supports_check_mode") is True
    s3_options = spec["s3"]["options"]
    for key in ("secret_key", "session_token", "access_key"):
        assert s3_options[key].get("no_log") is True, key
    if "dsn" in spec:
        assert spec["dsn"].get("no_log") is True
