"""The env stores without AWS: dotenv byte for byte, masking, plans, the command hook, promote/rollback, errors,
and the two modules through patch_module_args."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    envstore,
    envstore_common,
    envstore_dotenv,
    files,
    promote,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

REPO = Path(__file__).resolve().parents[2]
OLD = "postgresql://postgres:Old-Secret-Pw-111@db.old.example:5432/postgres"
NEW = "postgresql://postgres:New-Secret-Pw-222@db.new.example:6543/restored"
ORIGINAL = (
    "# App settings\r\n"
    "SUPABASE_URL=http://127.0.0.1:54321\r\n"
    "\r\n"
    f'export SUPABASE_DB_URL="{OLD}"\r\n'
    f"DATABASE_URL={OLD}   # inline comment\r\n"
    "WEIRD LINE WITHOUT EQUALS\r\n"
    "SUPABASE_ANON_KEY='anon key with spaces'\r\n"
    "# trailing comment, no newline at the end"
)


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "app.env"
    path.write_bytes(ORIGINAL.encode())
    path.chmod(0o640)
    return path


def dotenv(path):
    return envstore.make_store({"type": "dotenv", "path": str(path)})


class TestMask:
    def test_url_keeps_shape_hides_password(self):
        assert envstore_common.mask(OLD) == "postgresql://postgres:********@db.old.example:5432/postgres"

    def test_url_query_secrets_are_masked(self):
        masked = envstore_common.mask("postgresql://u@h/db?sslmode=require&password=Hunter2Hunter2")
        assert "Hunter2Hunter2" not in masked and "sslmode=require" in masked

    def test_other_values_show_last_four_only_when_long(self):
        assert envstore_common.mask("abcdefghijkl1234") == "****1234"
        assert envstore_common.mask("short-pw") == "****"
        assert envstore_common.mask(None) == "(absent)"


class TestDotenvText:
    def test_parse_quotes_exports_and_comments(self):
        values = envstore_dotenv.parse_dotenv(ORIGINAL)
        assert values["SUPABASE_DB_URL"] == OLD
        assert values["DATABASE_URL"] == OLD
        assert values["SUPABASE_ANON_KEY"] == "anon key with spaces"
        assert "WEIRD" not in values

    @pytest.mark.parametrize(
        "value",
        ["plain", "with space", "it's", 'quote " and \\ backslash', "multi\nline", "dollar $HOME ${X}", "#hash", ""],
    )
    def test_any_value_round_trips(self, value):
        text = envstore_dotenv.render_dotenv("A=1\n", {"A": value, "B": value})
        assert envstore_dotenv.parse_dotenv(text) == {"A": value, "B": value}

    def test_only_the_written_lines_change_byte_for_byte(self):
        text = envstore_dotenv.render_dotenv(ORIGINAL, {"DATABASE_URL": NEW})
        old_lines, new_lines = ORIGINAL.splitlines(keepends=True), text.splitlines(keepends=True)
        assert len(old_lines) == len(new_lines)
        changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
        assert changed == [4]
        assert new_lines[4] == f"DATABASE_URL={NEW}   # inline comment\r\n"

    def test_quoting_and_export_of_the_line_are_kept(self):
        text = envstore_dotenv.render_dotenv(ORIGINAL, {"SUPABASE_DB_URL": NEW})
        assert f'export SUPABASE_DB_URL="{NEW}"\r\n' in text

    def test_new_names_are_appended_with_the_files_line_ending(self):
        text = envstore_dotenv.render_dotenv(ORIGINAL, {"NEW_ONE": "x y"})
        assert text == ORIGINAL + "\r\nNEW_ONE='x y'"
        assert envstore_dotenv.render_dotenv("A=1\n", {"B": "2"}) == "A=1\nB=2\n"
        assert envstore_dotenv.render_dotenv(text, {}, remove={"NEW_ONE"}) == ORIGINAL

    def test_remove_drops_only_that_line(self):
        text = envstore_dotenv.render_dotenv(ORIGINAL, {}, remove={"DATABASE_URL"})
        assert text == ORIGINAL.replace(f"DATABASE_URL={OLD}   # inline comment\r\n", "")


class TestDotenvStore:
    def test_write_keeps_other_bytes_and_mode(self, env_file):
        store = dotenv(env_file)
        store.write({"DATABASE_URL": NEW})
        assert env_file.read_bytes() == envstore_dotenv.render_dotenv(ORIGINAL, {"DATABASE_URL": NEW}).encode()
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
        assert store.read(["DATABASE_URL", "SUPABASE_DB_URL", "MISSING"]) == {
            "DATABASE_URL": NEW,
            "SUPABASE_DB_URL": OLD,
            "MISSING": None,
        }

    def test_new_file_gets_mode_600(self, tmp_path):
        path = tmp_path / "new.env"
        dotenv(path).write({"A": "1"})
        assert path.read_text() == "A=1\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_write_is_atomic(self, env_file, monkeypatch):
        """A failure before the rename leaves the old file whole and no temporary file behind."""

        def broken_replace(src, dst):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(files.os, "replace", broken_replace)
        with pytest.raises(DRError) as err:
            dotenv(env_file).write({"DATABASE_URL": NEW})
        assert env_file.read_bytes() == ORIGINAL.encode()
        assert sorted(p.name for p in env_file.parent.iterdir()) == ["app.env"]
        assert "DATABASE_URL" in str(err.value) and "No space left" in str(err.value)
        assert "New-Secret-Pw-222" not in str(err.value)

    def test_symlink_stays_a_link(self, env_file, tmp_path):
        link = tmp_path / "link.env"
        link.symlink_to(env_file)
        dotenv(link).write({"DATABASE_URL": NEW})
        assert link.is_symlink()
        assert envstore_dotenv.parse_dotenv(env_file.read_text())["DATABASE_URL"] == NEW

    def test_missing_folder_is_a_clear_error_even_in_check_mode(self, tmp_path):
        store = dotenv(tmp_path / "nope" / "app.env")
        with pytest.raises(DRError) as err:
            envstore.ensure(store, {"DATABASE_URL": NEW}, check_mode=True)
        text = str(err.value)
        assert "dotenv store" in text and "does not exist" in text and "Next:" in text
        with pytest.raises(DRError) as err:
            store.write({"DATABASE_URL": NEW})
        assert "variable DATABASE_URL" in str(err.value)

    def test_not_writable_is_a_clear_error(self, env_file, monkeypatch):
        monkeypatch.setattr(os, "access", lambda *a, **k: False)
        with pytest.raises(DRError) as err:
            dotenv(env_file).write({"DATABASE_URL": NEW})
        text = str(err.value)
        assert "not writable" in text and "variable DATABASE_URL" in text and "Next:" in text
        assert env_file.read_bytes() == ORIGINAL.encode()

    def test_temporary_file_refused_is_a_clear_error(self, env_file, monkeypatch):
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
        with pytest.raises(DRError) as err:
            dotenv(env_file).write({"DATABASE_URL": NEW})
        assert "Permission denied" in str(err.value) and "DATABASE_URL" in str(err.value)


class TestPlanAndEnsure:
    def test_plan_actions_without_values(self):
        steps = envstore_common.plan({"A": "1", "B": "2", "C": None}, {"A": "1", "B": "3", "C": "4"})
        assert steps == [
            {"name": "A", "action": "unchanged"},
            {"name": "B", "action": "change"},
            {"name": "C", "action": "add"},
        ]

    def test_masked_diff_never_holds_the_value(self):
        diff = envstore_common.masked_diff(
            {"A": OLD, "K": "sk_live_abcdefgh12345678"}, {"A": NEW, "K": "sk_live_zz9876543210"}
        )
        text = json.dumps(diff)
        for secret in ("Old-Secret-Pw-111", "New-Secret-Pw-222", "sk_live_abcdefgh1234", "sk_live_zz98765"):
            assert secret not in text
        assert "A=postgresql://postgres:********@db.new.example:6543/restored" in diff["after"]
        assert "K=****3210" in diff["after"]

    def test_a_password_only_change_still_shows(self):
        same_host = OLD.replace("Old-Secret-Pw-111", "Other-Pw-999")
        diff = envstore_common.masked_diff({"A": OLD}, {"A": same_host})
        assert "changed" in diff["after"]

    def test_ensure_check_mode_writes_nothing_then_applies(self, env_file):
        store = dotenv(env_file)
        result = envstore.ensure(store, {"DATABASE_URL": NEW, "X": "1"}, check_mode=True, diff=True)
        assert result["changed"] and env_file.read_bytes() == ORIGINAL.encode()
        assert [s["action"] for s in result["plan"]] == ["change", "add"]
        assert envstore.ensure(store, {"DATABASE_URL": NEW, "X": "1"})["changed"]
        again = envstore.ensure(store, {"DATABASE_URL": NEW, "X": "1"})
        assert not again["changed"] and {s["action"] for s in again["plan"]} == {"unchanged"}

    def test_invalid_name_refused(self, env_file):
        with pytest.raises(DRError, match="invalid variable name"):
            envstore.ensure(dotenv(env_file), {"BAD NAME": "x"})

    def test_unknown_store_type(self):
        with pytest.raises(DRError, match="unknown env store type 'vault'"):
            envstore.make_store({"type": "vault"})


HOOK = """#!{python}
import json, os, sys
db = os.environ["HOOK_DB"]
data = json.load(open(db)) if os.path.exists(db) else {{}}
with open(db + ".argv", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
cmd, name = sys.argv[1], sys.argv[2]
if os.environ.get("HOOK_FAIL") == name:
    sys.stderr.write("backend refused " + sys.stdin.read() + "\\n")
    sys.exit(7)
if cmd == "get":
    if name not in data:
        sys.exit(3)
    sys.stdout.write(data[name] + "\\n")
elif cmd == "set":
    data[name] = sys.stdin.read()
elif cmd == "delete":
    data.pop(name, None)
json.dump(data, open(db, "w"))
"""


@pytest.fixture
def hook(tmp_path):
    script = tmp_path / "hook.py"
    script.write_text(HOOK.format(python=sys.executable))
    script.chmod(0o755)
    db = tmp_path / "db.json"
    db.write_text(json.dumps({"DATABASE_URL": OLD}))
    spec = {
        "type": "command",
        "get": [str(script), "get"],
        "set": [str(script), "set"],
        "delete": [str(script), "delete", "{name}"],
        "env": {"HOOK_DB": str(db)},
    }
    return spec, db


class TestCommandStore:
    def test_get_set_with_value_on_stdin_only(self, hook):
        spec, db = hook
        store = envstore.make_store(spec)
        assert store.read(["DATABASE_URL", "NOPE"]) == {"DATABASE_URL": OLD, "NOPE": None}
        result = envstore.ensure(store, {"DATABASE_URL": NEW, "NOPE": "x"})
        assert [s["action"] for s in result["plan"]] == ["change", "add"]
        assert json.loads(db.read_text()) == {"DATABASE_URL": NEW, "NOPE": "x"}
        argv_log = Path(f"{db}.argv").read_text()
        assert "New-Secret-Pw-222" not in argv_log and '["set", "DATABASE_URL"]' in argv_log

    def test_hook_failure_names_the_variable_and_hides_the_value(self, hook):
        spec, _unused = hook
        spec["env"]["HOOK_FAIL"] = "DATABASE_URL"
        with pytest.raises(DRError) as err:
            envstore.make_store(spec).write({"DATABASE_URL": NEW})
        text = str(err.value)
        assert "exited 7" in text and "variable DATABASE_URL" in text and "Next:" in text
        assert "New-Secret-Pw-222" not in text

    def test_missing_hook(self, hook):
        spec, _unused = hook
        spec["get"] = ["/nonexistent/hook", "get"]
        with pytest.raises(DRError, match="not found"):
            envstore.make_store(spec).read(["DATABASE_URL"])

    def test_promote_and_rollback_through_the_hook(self, hook):
        spec, db = hook
        store = envstore.make_store(spec)
        result = promote.promote(store, {"DATABASE_URL": NEW, "EXTRA": "e"}, "prod")
        assert result["changed"]
        data = json.loads(db.read_text())
        assert data["DATABASE_URL"] == NEW and data["DATABASE_URL__PGDR_PREVIOUS"] == OLD
        assert json.loads(data["PGDR_ROLLBACK_RECORD"])["absent_before"] == ["EXTRA"]
        back = promote.rollback(store, "prod")
        assert back["changed"] and {s["action"] for s in back["plan"]} == {"change", "remove"}
        data = json.loads(db.read_text())
        assert data["DATABASE_URL"] == OLD and "EXTRA" not in data


class TestPromote:
    values = {"SUPABASE_DB_URL": NEW, "DATABASE_URL": NEW}

    def record(self, env_file):
        return Path(f"{env_file}.pgdr-rollback.json")

    def test_promote_keeps_previous_values_and_rollback_restores_bytes(self, env_file):
        store = dotenv(env_file)
        result = promote.promote(store, self.values, "prod", reason="drill", diff=True)
        assert result["changed"]
        assert store.read(list(self.values)) == self.values
        record_path = self.record(env_file)
        assert stat.S_IMODE(record_path.stat().st_mode) == 0o600
        record = json.loads(record_path.read_text())
        assert record["previous"] == {"SUPABASE_DB_URL": OLD, "DATABASE_URL": OLD}
        assert record["state"] == "promoted" and record["target"] == "prod" and record["reason"] == "drill"
        assert (
            record["promoted_masked"]["DATABASE_URL"] == "postgresql://postgres:********@db.new.example:6543/restored"
        )
        assert "Secret-Pw" not in json.dumps(result)

        again = promote.promote(store, self.values, "prod")
        assert not again["changed"]
        assert json.loads(record_path.read_text()) == record  # not overwritten with the promoted values

        back = promote.rollback(store, "prod", diff=True)
        assert back["changed"] and env_file.read_bytes() == ORIGINAL.encode()
        assert json.loads(record_path.read_text())["state"] == "rolled_back"
        assert "Secret-Pw" not in json.dumps(back)
        assert not promote.rollback(store, "prod")["changed"]
        assert env_file.read_bytes() == ORIGINAL.encode()

    def test_check_mode_writes_nothing(self, env_file):
        store = dotenv(env_file)
        result = promote.promote(store, self.values, "prod", check_mode=True)
        assert result["changed"] and env_file.read_bytes() == ORIGINAL.encode()
        assert not self.record(env_file).exists()
        promote.promote(store, self.values, "prod")
        promoted = env_file.read_bytes()
        assert promote.rollback(store, "prod", check_mode=True)["changed"]
        assert env_file.read_bytes() == promoted
        assert json.loads(self.record(env_file).read_text())["state"] == "promoted"

    def test_interrupted_promote_keeps_the_originals(self, env_file, monkeypatch):
        store = dotenv(env_file)
        calls = []
        real_write = store.write

        def crash_after_first(values):
            name = next(iter(values))
            real_write({name: values[name]})
            calls.append(name)
            raise DRError("killed", step="write env store")

        monkeypatch.setattr(store, "write", crash_after_first)
        with pytest.raises(DRError):
            promote.promote(store, self.values, "prod")
        assert json.loads(self.record(env_file).read_text())["state"] == "pending"
        monkeypatch.setattr(store, "write", real_write)
        assert promote.promote(store, self.values, "prod")["changed"]
        record = json.loads(self.record(env_file).read_text())
        assert record["state"] == "promoted"
        assert record["previous"] == {"SUPABASE_DB_URL": OLD, "DATABASE_URL": OLD}
        promote.rollback(store, "prod")
        assert env_file.read_bytes() == ORIGINAL.encode()

    def test_rollback_without_record_fails_clearly(self, env_file):
        with pytest.raises(DRError) as err:
            promote.rollback(dotenv(env_file), "prod")
        assert "no rollback record" in str(err.value) and "pgdr-rollback.json" in str(err.value)

    def test_record_of_another_target_is_refused(self, env_file):
        store = dotenv(env_file)
        promote.promote(store, self.values, "prod")
        with pytest.raises(DRError, match="belongs to target 'prod'"):
            promote.rollback(store, "other")
        with pytest.raises(DRError, match="belongs to target 'prod'"):
            promote.promote(store, {"DATABASE_URL": "x"}, "other")

    @pytest.mark.parametrize("confirm", [None, "", "prod ", "PROD", "staging"])
    def test_confirmation_must_equal_the_target(self, confirm):
        with pytest.raises(DRError) as err:
            promote.check_confirmation("prod", confirm, "promote", how="-e promote_confirm={target}")
        assert "-e promote_confirm=prod" in str(err.value)
        promote.check_confirmation("prod", "prod", "promote")


# --- the modules ---------------------------------------------------------------------------------------------


def load_module(name):
    spec = importlib.util.spec_from_file_location(
        f"_pgdr_test_{name}", REPO / "plugins" / "modules" / f"{name.rsplit('.', 1)[-1]}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_module(name, args, capsys, check_mode=False, diff=False):
    args = {**args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        load_module(name).main()
    return exited.value.code, json.loads(capsys.readouterr().out)


class TestModules:
    def test_pgdr_env_plan_diff_and_no_values(self, env_file, capsys):
        args = {"store": {"type": "dotenv", "path": str(env_file)}, "values": {"DATABASE_URL": NEW}}
        rc, result = run_module("pgdr.supabase.env", args, capsys, check_mode=True, diff=True)
        assert rc == 0 and result["changed"] and env_file.read_bytes() == ORIGINAL.encode()
        assert result["plan"] == [{"name": "DATABASE_URL", "action": "change"}]
        assert "db.new.example" in result["diff"]["after"]
        assert "Secret-Pw" not in json.dumps(result)
        rc, result = run_module("pgdr.supabase.env", args, capsys)
        assert rc == 0 and result["changed"] and "previous" not in result
        rc, result = run_module("pgdr.supabase.env", args, capsys)
        assert rc == 0 and not result["changed"]

    def test_pgdr_env_error_path(self, tmp_path, capsys):
        args = {"store": {"type": "dotenv", "path": str(tmp_path / "no" / "a.env")}, "values": {"DATABASE_URL": NEW}}
        rc, result = run_module("pgdr.supabase.env", args, capsys)
        assert rc == 1 and "does not exist" in result["msg"] and "Secret-Pw" not in json.dumps(result)

    def test_pgdr_promote_wrong_confirmation_tells_what_to_type(self, env_file, capsys):
        args = {
            "action": "promote",
            "store": {"type": "dotenv", "path": str(env_file)},
            "values": {"DATABASE_URL": NEW},
            "target_name": "sandbox-production",
            "confirm": "production",
        }
        rc, result = run_module("pgdr.supabase.promote", args, capsys, check_mode=True)
        assert rc == 1 and "-e promote_confirm=sandbox-production" in result["msg"]
        rc, result = run_module("pgdr.supabase.promote", {**args, "action": "rollback"}, capsys)
        assert rc == 1 and "-e rollback_confirm=sandbox-production" in result["msg"]
        assert env_file.read_bytes() == ORIGINAL.encode()

    def test_pgdr_promote_then_rollback(self, env_file, capsys):
        base = {"store": {"type": "dotenv", "path": str(env_file)}, "target_name": "p", "confirm": "p"}
        rc, result = run_module(
            "pgdr.supabase.promote", {**base, "action": "promote", "values": {"A": "1"}}, capsys, diff=True
        )
        assert rc == 0 and result["changed"] and result["record"]["state"] == "promoted"
        assert "previous" not in result["record"]
        rc, result = run_module("pgdr.supabase.promote", {**base, "action": "rollback"}, capsys)
        assert rc == 0 and result["changed"] and env_file.read_bytes() == ORIGINAL.encode()

    def test_the_store_secrets_are_no_log(self):
        """Docs against the spec: validate-modules (make sanity). Here: the store's secrets are no_log=True."""
        for secret in ("access_key", "secret_key", "session_token", "env"):
            assert envstore.STORE_OPTIONS[secret]["no_log"]
