"""Encryption at rest (age on the client, server-side encryption settings) and in transit (TLS to S3 and
PostgreSQL), against the sandbox."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import psycopg
import pyrage
import pytest
from backup_helpers import drop_database
from conftest import s3_params

from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup, logical_restore, selection
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys():
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def backup(state, target, prefix, **kwargs):
    moment = dt.datetime(2021, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=random.randrange(10**8))
    req = logical_backup.BackupRequest(
        "production", state["production"]["dsn"], target, prefix=prefix, window="every_run", now=moment, **kwargs
    )
    return logical_backup.run(req)["manifest"]


def test_encrypted_backup_is_unreadable_without_the_identity_and_restores_with_it(sandbox, s3_target, prefix, keys):
    secret, public = keys
    manifest = backup(sandbox, s3_target, prefix, encryption_recipients=[public])
    for obj in manifest["objects"]:
        assert obj["key"].endswith(".zst.age")
        assert obj["encryption"] == {"algorithm": "age-x25519", "recipients": [public]}
        stored = s3_target.client.get_object(Bucket=s3_target.bucket, Key=obj["key"])["Body"].read()
        assert stored.startswith(b"age-encryption.org/v1")
        assert b"CREATE TABLE" not in stored and b"tenants" not in stored
        assert obj["plain_sha256"] != obj["sha256"]
    # The stored bytes verify without any key (the bucket side can check integrity, not read).
    assert len(selection.verify_objects(s3_target, manifest)) == len(manifest["objects"])

    req = logical_restore.RestoreRequest(
        sandbox["staging"]["dsn"],
        manifest,
        s3_target,
        decryption_identities=[secret],
        template="platform_template",
        skip_extensions=["pg_cron"],
    )
    try:
        result = logical_restore.run(req)
        assert result["changed"]
        with psycopg.connect(f"{sandbox['staging']['dsn'].rsplit('/', 1)[0]}/{result['database']}") as conn:
            tenants = conn.execute("select count(*) from public.tenants").fetchone()[0]
        assert tenants == manifest["tables"]["public.tenants"]
    finally:
        drop_database(sandbox, req.database)


def test_restore_without_or_with_the_wrong_identity_fails_before_writing(sandbox, s3_target, prefix, keys):
    _, public = keys
    manifest = backup(sandbox, s3_target, prefix, encryption_recipients=[public])
    wrong = str(pyrage.x25519.Identity.generate())
    for identities, expected in (((), "no decryption identity was given"), ((wrong,), "cannot decrypt")):
        req = logical_restore.RestoreRequest(
            sandbox["staging"]["dsn"],
            manifest,
            s3_target,
            decryption_identities=identities,
            template="platform_template",
        )
        with pytest.raises(DRError, match=expected) as info:
            logical_restore.run(req)
        assert wrong not in str(info.value)
        with psycopg.connect(sandbox["staging"]["dsn"]) as conn:
            names = [r[0] for r in conn.execute("select datname from pg_database")]
        assert req.database not in names and req.temp_database not in names


def test_a_malformed_recipient_is_refused_before_anything_runs(sandbox, s3_target, prefix):
    with pytest.raises(DRError, match="is not an age recipient"):
        backup(sandbox, s3_target, prefix, encryption_recipients=["age1notakey"])
    assert s3_target.list_keys(f"{prefix}/") == []


def test_server_side_encryption_is_requested_for_every_object(sandbox, s3_target, prefix):
    manifest = backup(sandbox, s3_target, prefix, sse={"algorithm": "AES256"})
    for obj in manifest["objects"]:
        head = s3_target.client.head_object(Bucket=s3_target.bucket, Key=obj["key"])
        assert head.get("ServerSideEncryption") == "AES256", head
        assert obj["server_side_encryption"] == "AES256"


def test_a_missing_kms_key_fails_clearly(sandbox, s3_target, prefix):
    with pytest.raises(DRError) as info:
        backup(sandbox, s3_target, prefix, sse={"algorithm": "aws:kms", "kms_key_id": "alias/no-such-key"})
    assert "S3 answered" in str(info.value) or "KMS" in str(info.value)
    assert s3_target.list_uploads(f"{prefix}/") == []


def test_tls_is_verified_for_s3_and_postgresql(sandbox, prefix, tmp_path):
    # S3 over TLS with the wrong CA is refused.
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
    params = s3_params(sandbox)
    params["ca_bundle"] = str(other_ca)
    with pytest.raises(DRError, match="S3"):
        make_target(params).check_bucket()
    # PostgreSQL with verify-full against the sandbox CA works; against another CA it is refused.
    ca = sandbox["s3"]["ca_file"]
    dsn = f"{sandbox['production']['dsn']}?sslmode=verify-full&sslrootcert={ca}"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()[0] is True
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"{sandbox['production']['dsn']}?sslmode=verify-full&sslrootcert={other_ca}")
