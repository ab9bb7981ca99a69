"""The AWS env stores (SSM Parameter Store, Secrets Manager) against a moto server started by the test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import envstore, promote
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration

OLD = "postgresql://postgres:Old-Secret-Pw-111@db.old.example:5432/postgres"
NEW = "postgresql://postgres:New-Secret-Pw-222@db.new.example:6543/restored"
KEYS = {"access_key": "testing", "secret_key": "testing-secret", "region": "us-east-1"}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(tmp_path_factory, **env):
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)  # noqa: S310 (a loopback URL of our own)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    return proc, url


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    proc, url = start_moto(tmp_path_factory)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def moto_with_iam(tmp_path_factory):
    """A moto server that enforces IAM after two calls: those create a user without any policy."""
    proc, url = start_moto(tmp_path_factory, INITIAL_NO_AUTH_ACTION_COUNT="2")
    iam = boto3.client(
        "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    iam.create_user(UserName="no-permissions")
    key = iam.create_access_key(UserName="no-permissions")["AccessKey"]
    yield url, key["AccessKeyId"], key["SecretAccessKey"]
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def ssm_spec(moto):
    return {"type": "ssm", "prefix": f"/app-{uuid.uuid4().hex[:8]}/production", "endpoint_url": moto, **KEYS}


@pytest.fixture
def sm_spec(moto):
    return {
        "type": "secretsmanager",
        "secret_id": f"app-{uuid.uuid4().hex[:8]}/production",
        "endpoint_url": moto,
        **KEYS,
    }


def client(spec, service):
    return boto3.client(
        service,
        endpoint_url=spec["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
    )


class TestSsm:
    def test_set_read_plan_as_secure_strings_with_kms_key(self, ssm_spec):
        kms = client(ssm_spec, "kms")
        key_id = kms.create_key(Description="app env")["KeyMetadata"]["KeyId"]
        ssm_spec["kms_key_id"] = key_id
        store = envstore.make_store(ssm_spec)
        assert store.read(["DATABASE_URL"]) == {"DATABASE_URL": None}
        first = envstore.ensure(store, {"DATABASE_URL": OLD, "OTHER": "o"}, diff=True)
        assert first["changed"] and [s["action"] for s in first["plan"]] == ["add", "add"]
        assert "Old-Secret-Pw-111" not in json.dumps(first)
        param = client(ssm_spec, "ssm").get_parameter(Name=f"{ssm_spec['prefix']}/DATABASE_URL")["Parameter"]
        assert param["Type"] == "SecureString"
        described = client(ssm_spec, "ssm").describe_parameters(
            ParameterFilters=[{"Key": "Name", "Values": [f"{ssm_spec['prefix']}/DATABASE_URL"]}]
        )["Parameters"][0]
        assert described["KeyId"] == key_id
        assert store.read(["DATABASE_URL", "OTHER"]) == {"DATABASE_URL": OLD, "OTHER": "o"}
        plan = envstore.ensure(store, {"DATABASE_URL": NEW, "OTHER": "o"}, check_mode=True)
        assert [s["action"] for s in plan["plan"]] == ["change", "unchanged"]
        assert store.read(["DATABASE_URL"]) == {"DATABASE_URL": OLD}  # check mode wrote nothing
        assert not envstore.ensure(store, {"DATABASE_URL": OLD, "OTHER": "o"})["changed"]

    def test_promote_and_rollback(self, ssm_spec):
        store = envstore.make_store(ssm_spec)
        envstore.ensure(store, {"DATABASE_URL": OLD})
        result = promote.promote(store, {"DATABASE_URL": NEW, "ADDED": "a"}, "prod", reason="drill")
        assert result["changed"] and result["record_location"] == f"{ssm_spec['prefix']}/_pgdr_rollback"
        ssm = client(ssm_spec, "ssm")
        kept = ssm.get_parameter(Name=f"{ssm_spec['prefix']}/_pgdr_rollback/DATABASE_URL", WithDecryption=True)
        assert kept["Parameter"]["Value"] == OLD and kept["Parameter"]["Type"] == "SecureString"
        meta = json.loads(
            ssm.get_parameter(Name=f"{ssm_spec['prefix']}/_pgdr_rollback/_record", WithDecryption=True)["Parameter"][
                "Value"
            ]
        )
        assert meta["state"] == "promoted" and meta["absent_before"] == ["ADDED"] and "previous" not in meta
        assert not promote.promote(store, {"DATABASE_URL": NEW, "ADDED": "a"}, "prod")["changed"]
        back = promote.rollback(store, "prod")
        assert back["changed"]
        assert store.read(["DATABASE_URL", "ADDED"]) == {"DATABASE_URL": OLD, "ADDED": None}
        assert not promote.rollback(store, "prod")["changed"]

    def test_access_denied_is_a_clear_error(self, moto_with_iam):
        url, access_key, secret_key = moto_with_iam
        spec = {
            "type": "ssm",
            "prefix": "/app/production",
            "endpoint_url": url,
            "access_key": access_key,
            "secret_key": secret_key,
        }
        with pytest.raises(DRError) as err:
            envstore.ensure(envstore.make_store(spec), {"DATABASE_URL": NEW})
        text = str(err.value)
        assert "access denied" in text and "ssm:GetParameters" in text and "ssm store /app/production" in text
        assert "variable DATABASE_URL" in text and "Next: grant" in text
        assert "New-Secret-Pw-222" not in text and secret_key not in text

    def test_unreachable_endpoint_is_a_clear_error(self):
        spec = {"type": "ssm", "prefix": "/app/production", "endpoint_url": "http://127.0.0.1:1", **KEYS}
        spec["max_attempts"] = 1
        started = time.monotonic()
        with pytest.raises(DRError) as err:
            envstore.make_store(spec).read(["DATABASE_URL"])
        assert time.monotonic() - started < 20
        text = str(err.value)
        assert "cannot reach http://127.0.0.1:1" in text and "variable DATABASE_URL" in text and "Next:" in text


class TestSecretsManager:
    def test_one_json_secret_merge_keeps_other_keys(self, sm_spec):
        sm = client(sm_spec, "secretsmanager")
        store = envstore.make_store(sm_spec)
        assert store.read(["DATABASE_URL"]) == {"DATABASE_URL": None}
        assert envstore.ensure(store, {"DATABASE_URL": OLD})["changed"]  # creates the secret
        data = json.loads(sm.get_secret_value(SecretId=sm_spec["secret_id"])["SecretString"])
        assert data == {"DATABASE_URL": OLD}
        sm.put_secret_value(SecretId=sm_spec["secret_id"], SecretString=json.dumps({**data, "UNRELATED": "keep"}))
        result = envstore.ensure(store, {"DATABASE_URL": NEW, "SUPABASE_DB_URL": NEW}, diff=True)
        assert [s["action"] for s in result["plan"]] == ["change", "add"]
        assert "New-Secret-Pw-222" not in json.dumps(result)
        data = json.loads(sm.get_secret_value(SecretId=sm_spec["secret_id"])["SecretString"])
        assert data == {"DATABASE_URL": NEW, "UNRELATED": "keep", "SUPABASE_DB_URL": NEW}
        assert not envstore.ensure(store, {"DATABASE_URL": NEW})["changed"]

    def test_not_a_json_object_is_a_clear_error(self, sm_spec):
        client(sm_spec, "secretsmanager").create_secret(Name=sm_spec["secret_id"], SecretString="plain-text-secret")
        with pytest.raises(DRError) as err:
            envstore.make_store(sm_spec).read(["DATABASE_URL"])
        assert "does not hold a JSON object" in str(err.value) and "plain-text-secret" not in str(err.value)

    def test_promote_and_rollback_with_a_separate_record_secret(self, sm_spec):
        store = envstore.make_store(sm_spec)
        envstore.ensure(store, {"DATABASE_URL": OLD, "UNRELATED": "keep"})
        before = client(sm_spec, "secretsmanager").get_secret_value(SecretId=sm_spec["secret_id"])["SecretString"]
        result = promote.promote(store, {"DATABASE_URL": NEW}, "prod")
        assert result["changed"] and result["record_location"] == f"{sm_spec['secret_id']}-pgdr-rollback"
        record = json.loads(
            client(sm_spec, "secretsmanager").get_secret_value(SecretId=result["record_location"])["SecretString"]
        )
        assert record["previous"] == {"DATABASE_URL": OLD} and record["target"] == "prod"
        assert not promote.promote(store, {"DATABASE_URL": NEW}, "prod")["changed"]
        assert promote.rollback(store, "prod")["changed"]
        after = client(sm_spec, "secretsmanager").get_secret_value(SecretId=sm_spec["secret_id"])["SecretString"]
        assert json.loads(after) == json.loads(before)
        assert not promote.rollback(store, "prod")["changed"]

    def test_record_name_of_an_arn(self, sm_spec):
        arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:acme/production-AbC123"
        store = envstore.make_store({**sm_spec, "secret_id": arn})
        assert store.default_record_location() == "acme/production-pgdr-rollback"

    def test_access_denied_is_a_clear_error(self, moto_with_iam):
        url, access_key, secret_key = moto_with_iam
        spec = {"type": "secretsmanager", "secret_id": "acme/prod", "endpoint_url": url}
        spec.update(access_key=access_key, secret_key=secret_key)
        with pytest.raises(DRError) as err:
            envstore.make_store(spec).read(["DATABASE_URL"])
        text = str(err.value)
        assert "access denied" in text and "secretsmanager store acme/prod" in text and "Next: grant" in text
