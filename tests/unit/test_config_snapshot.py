"""The config snapshot engine without a sandbox: never a value in the snapshot, keyed hashes, store versions
(SSM, Secrets Manager through moto), comparisons, and the module's documentation."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from test_modules import argument_spec_of, run_module

from ansible_collections.pgdr.supabase.plugins.module_utils import config_snapshot as cs
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3Target

KEY = "unit-test-hmac-key-0123456789"
VALUES = {
    "SUPABASE_DB_URL": "postgresql://postgres:Pa55-word-xyz@db.example:5432/postgres",
    "PIN": "4711",
    "SERVICE_ROLE_KEY": "eyJhbGciOiJIUzI1NiJ9.secret-part.signature",
    "EMPTY": "",
}


def dotenv(tmp_path, values):
    path = tmp_path / "production.env"
    path.write_text("# app\n" + "".join(f"{k}='{v}'\n" for k, v in values.items()))
    return {"store": {"type": "dotenv", "path": str(path)}, "label": "production"}


def assert_no_value(snapshot, values):
    text = json.dumps(snapshot)
    for value in values.values():
        if value:
            assert value not in text


class TestHashing:
    def test_hmac_needs_a_key(self):
        with pytest.raises(DRError, match="at least 16"):
            cs.Hasher("hmac", None)
        with pytest.raises(DRError, match="at least 16"):
            cs.Hasher("hmac", "short")
        assert cs.Hasher("none").digest("A", "x") is None

    def test_name_is_bound_and_key_matters(self):
        h = cs.Hasher("hmac", KEY)
        assert h.digest("A", "same") != h.digest("B", "same")
        assert h.digest("A", "same") == cs.Hasher("hmac", KEY).digest("A", "same")
        assert h.digest("A", "same") != cs.Hasher("hmac", KEY + "x").digest("A", "same")
        assert h.key_id() != cs.Hasher("hmac", KEY + "x").key_id()
        assert KEY not in json.dumps(h.describe())


class TestDotenvSnapshot:
    def test_snapshot_holds_names_and_no_value(self, tmp_path):
        snap = cs.take([dotenv(tmp_path, VALUES)], cs.Hasher("hmac", KEY), "production", "20260101T000000Z")
        assert [v["name"] for v in snap["variables"]] == list(VALUES)
        assert all(v["present"] for v in snap["variables"])
        assert all(len(v["hmac_sha256"]) == 64 for v in snap["variables"])
        assert_no_value(snap, VALUES)

    def test_named_missing_variable_is_recorded_absent(self, tmp_path):
        spec = dict(dotenv(tmp_path, VALUES), names=["PIN", "NOT_SET"])
        snap = cs.take([spec], cs.Hasher("hmac", KEY), "production", "20260101T000000Z")
        assert {v["name"]: v["present"] for v in snap["variables"]} == {"PIN": True, "NOT_SET": False}

    def test_changed_value_shows_as_changed(self, tmp_path):
        old = cs.take([dotenv(tmp_path, VALUES)], cs.Hasher("hmac", KEY), "production", "20260101T000000Z")
        new_values = dict(VALUES, PIN="4712")
        del new_values["EMPTY"]
        new_values["ADDED"] = "v"
        new = cs.take([dotenv(tmp_path, new_values)], cs.Hasher("hmac", KEY), "production", "20260102T000000Z")
        diff = cs.compare(old, new)
        assert diff["changed"] == ["production: PIN"]
        assert diff["added"] == ["production: ADDED"]
        assert diff["removed"] == ["production: EMPTY"]
        assert diff["any_change"]
        assert cs.compare(old, old)["any_change"] is False

    def test_hashes_under_different_keys_are_not_compared(self, tmp_path):
        old = cs.take([dotenv(tmp_path, VALUES)], cs.Hasher("hmac", KEY), "production", "20260101T000000Z")
        new = cs.take([dotenv(tmp_path, VALUES)], cs.Hasher("hmac", KEY + "2"), "production", "20260102T000000Z")
        diff = cs.compare(old, new)
        assert not diff["changed"]
        assert len(diff["unknown"]) == len(VALUES)

    def test_hashing_none_records_presence_only(self, tmp_path):
        snap = cs.take([dotenv(tmp_path, VALUES)], cs.Hasher("none"), "production", "20260101T000000Z")
        assert all(v["hmac_sha256"] is None for v in snap["variables"])
        assert snap["hash"] == {"algorithm": "none"}
        assert_no_value(snap, VALUES)

    def test_command_store_cannot_list(self):
        spec = {"store": {"type": "command", "get": ["/bin/false"], "set": ["/bin/false"]}}
        with pytest.raises(DRError, match="cannot list"):
            cs.take([spec], cs.Hasher("none"), "production", "20260101T000000Z")


@pytest.fixture
def aws():
    with mock_aws():
        yield


class TestAwsStores:
    def test_ssm_versions_and_listing(self, aws):
        ssm = boto3.client("ssm", region_name="eu-west-1")
        for name, value in VALUES.items():
            if value:
                ssm.put_parameter(Name=f"/acme/prod/{name}", Value=value, Type="SecureString")
        ssm.put_parameter(Name="/acme/prod/PIN", Value="9999", Type="SecureString", Overwrite=True)
        spec = {"store": {"type": "ssm", "prefix": "/acme/prod", "region": "eu-west-1"}, "label": "ssm"}
        snap = cs.take([spec], cs.Hasher("hmac", KEY), "production", "20260101T000000Z")
        by_name = {v["name"]: v for v in snap["variables"]}
        assert set(by_name) == {n for n, v in VALUES.items() if v}
        assert by_name["PIN"]["version"] == "2"
        assert by_name["SUPABASE_DB_URL"]["version"] == "1"
        assert_no_value(snap, dict(VALUES, PIN2="9999"))
        named = cs.take([dict(spec, names=["PIN", "NOPE"])], cs.Hasher("none"), "production", "20260101T000000Z")
        assert {v["name"]: (v["present"], v["version"]) for v in named["variables"]} == {
            "PIN": (True, "2"),
            "NOPE": (False, None),
        }

    def test_ssm_version_change_without_hashes_is_a_change(self):
        old = {
            "hash": {"algorithm": "none"},
            "variables": [{"store": "s", "name": "A", "present": True, "version": "1"}],
        }
        new = {
            "hash": {"algorithm": "none"},
            "variables": [{"store": "s", "name": "A", "present": True, "version": "2"}],
        }
        assert cs.compare(old, new)["changed"] == ["s: A"]

    def test_secretsmanager_version_id(self, aws):
        sm = boto3.client("secretsmanager", region_name="eu-west-1")
        sm.create_secret(Name="acme/prod", SecretString=json.dumps({k: v for k, v in VALUES.items() if v}))
        spec = {"store": {"type": "secretsmanager", "secret_id": "acme/prod", "region": "eu-west-1"}}
        snap = cs.take([spec], cs.Hasher("hmac", KEY), "production", "20260101T000000Z")
        versions = {v["version"] for v in snap["variables"]}
        assert len(versions) == 1 and None not in versions
        assert_no_value(snap, VALUES)

    def test_run_writes_once_per_window_and_reports_drift(self, aws, tmp_path):
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="backups")
        target = S3Target("backups", region="us-east-1", access_key="testing", secret_key="testing")
        spec = dotenv(tmp_path, VALUES)
        first = cs.run(target, [spec], "b", "production", key=KEY, snapshot_id="20260101T000000Z")
        assert first["changed"] and not first["exists"]
        stored = target.get_json(first["key"])
        assert_no_value(stored, VALUES)
        (tmp_path / "production.env").write_text("PIN=1234\n")
        again = cs.run(target, [spec], "b", "production", key=KEY, snapshot_id="20260101T000000Z")
        assert not again["changed"] and again["exists"]
        assert "production: PIN" in again["drift"]["changed"]
        assert target.get_json(first["key"]) == stored
        check = cs.run(target, [spec], "b", "production", key=KEY, snapshot_id="20260102T000000Z", check_mode=True)
        assert check["changed"] and check["changes"]["changed"] == ["production: PIN"]
        assert [k for k, _unused in target.list_keys("b/")] == [first["key"]]


def test_module_hides_secrets():
    """Docs against the spec: validate-modules (make sanity). Here: the secrets are no_log=True."""
    spec, kwargs = argument_spec_of("pgdr.supabase.config_snapshot")
    assert kwargs.get("supports_check_mode") is True
    assert spec["hmac_key"].get("no_log") is True
    store = spec["stores"]["options"]["store"]["options"]
    for key in ("secret_key", "session_token", "access_key", "env"):
        assert store[key].get("no_log") is True


def test_module_without_key_fails_before_reading(capsys, tmp_path):
    args = {
        "source": "production",
        "s3": {"bucket": "dr", "endpoint_url": "http://127.0.0.1:1"},
        "stores": [{"store": {"type": "dotenv", "path": str(tmp_path / "x.env")}}],
    }
    code, result = run_module("pgdr.supabase.config_snapshot", args, capsys)
    assert code == 1
    assert "at least 16 characters" in result["msg"]
