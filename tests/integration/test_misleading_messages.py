"""issue 9.10: each failure names its real cause. S3 dying in the middle of an encrypted object is an S3 failure,
not a wrong key; a missing or wrong decryption identity is reported before the checksum pass, not after it."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pyrage
import pytest
from backup_helpers import signing_key
from conftest import s3_params
from test_restore_playbooks import restore_vars

from ansible_collections.pgdr.supabase.plugins.module_utils import crypto, logical_backup
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import RangedReader

pytestmark = pytest.mark.integration


def encrypted_backup(state, target, prefix):
    req = logical_backup.BackupRequest(
        "production",
        state["production"]["dsn"],
        target,
        prefix=prefix,
        window="every_run",
        encryption_recipients=[state["age"]["recipient"]],
        signing_key=signing_key(state),
    )
    return logical_backup.run(req)["manifest"]


def identity(state):
    return Path(state["age"]["identity_file"]).read_text().strip()


def test_s3_dying_mid_stream_is_named_as_s3_not_as_a_wrong_key(sandbox, sandbox_dir, prefix):
    import sandboxlib

    # Plain HTTP and few retries keep the failure quick; small ranges so most of the object is still to be read.
    target = make_target(s3_params(sandbox, tls=False))
    target.client.meta.config.retries["max_attempts"] = 2
    manifest = encrypted_backup(sandbox, target, prefix)
    obj = max(manifest["objects"], key=lambda o: o["size"])
    head = target.client.head_object(Bucket=target.bucket, Key=obj["key"])
    body = RangedReader(target, obj["key"], obj["size"], head["ETag"], chunk=64 * 1024, workers=1)
    started = threading.Event()

    def slow(_chunk):
        started.set()
        time.sleep(0.05)

    stopper = threading.Thread(target=lambda: started.wait(60) and sandboxlib.stop_s3(sandbox_dir))
    stopper.start()
    try:
        with pytest.raises(DRError) as info:
            crypto.decrypt_stream(body, hashlib.sha256(), crypto.parse_identities([identity(sandbox)]), slow)
    finally:
        stopper.join()
        body.close()
        sandboxlib.start_s3(sandbox_dir)
    message = str(info.value)
    assert "cannot reach the S3 endpoint" in message, message
    assert "decrypt" not in message and "age identity" not in message
    assert info.value.step == "download"


def test_a_wrong_key_is_still_named_as_a_wrong_key(sandbox, s3_target, prefix):
    manifest = encrypted_backup(sandbox, s3_target, prefix)
    obj = manifest["objects"][0]
    head = s3_target.client.head_object(Bucket=s3_target.bucket, Key=obj["key"])
    body = RangedReader(s3_target, obj["key"], obj["size"], head["ETag"])
    with pytest.raises(DRError) as info:
        crypto.decrypt_stream(body, hashlib.sha256(), [pyrage.x25519.Identity.generate()], lambda c: None)
    body.close()
    assert info.value.step == "decrypt" and "use the age identity that matches" in str(info.value)


@pytest.fixture
def hidden_identity(sandbox):
    """The sandbox's identity file moved away for one test, as if the vault file were missing."""
    path = Path(sandbox["age"]["identity_file"])
    away = path.with_suffix(".away")
    path.rename(away)
    yield path
    away.rename(path)


def select_task_failed_first(run):
    failed = [e for e in run.events if e.get("event") == "runner_on_failed"]
    assert failed, run.stdout[-3000:]
    return failed[0]["event_data"]


def test_a_missing_identity_file_is_reported_before_the_checksum_pass(
    run_playbook, sandbox, s3_target, prefix, tmp_path, hidden_identity
):
    manifest = encrypted_backup(sandbox, s3_target, prefix)
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path, backup=manifest["backup_id"]))
    assert run.rc != 0
    first = select_task_failed_first(run)
    # It fails where the select step reads its inputs (argument validation), before any object is read.
    assert "Choose a logical backup and verify its checksums" in first["task"] or first["task"].startswith(
        "Choose the backup"
    ), first["task"]
    assert str(hidden_identity) in run.stdout
    assert "objects verified" not in run.stdout


@pytest.mark.parametrize("given", ["none", "another key"])
def test_no_or_a_wrong_identity_is_reported_before_the_checksum_pass(
    run_playbook, sandbox, s3_target, prefix, tmp_path, given
):
    manifest = encrypted_backup(sandbox, s3_target, prefix)
    identities = [] if given == "none" else [str(pyrage.x25519.Identity.generate())]
    extra = restore_vars(prefix, tmp_path, backup=manifest["backup_id"], pgdr_backup_decryption_identities=identities)
    run = run_playbook("restore.yml", extra)
    assert run.rc != 0
    first = select_task_failed_first(run)
    assert first["task"].startswith("Choose the backup"), first["task"]
    expected = "no decryption identity was given" if given == "none" else "none of the given age identities matches"
    assert expected in run.stdout and "[check decryption]" in run.stdout
    assert identities == [] or identities[0] not in run.stdout
