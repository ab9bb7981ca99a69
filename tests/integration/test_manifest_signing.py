"""issue 9.6: a manifest is trusted only once its signature verified (before any object is read), its keys stay in
the backup's own folder, and it matches its locked copy where one exists; unsigned backups need their id named."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
import uuid

import psycopg
import pytest
from backup_helpers import drop_database, signing_key
from conftest import s3_params
from test_restore_playbooks import restore_vars, staging_databases

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    catalog,
    immutable,
    logical_backup,
    project,
    signing,
    timefmt,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration


def take(state, target, prefix, signed=True, key=None):
    req = logical_backup.BackupRequest(
        "production",
        state["production"]["dsn"],
        target,
        prefix=prefix,
        window="every_run",
        signing_key=key or (signing_key(state) if signed else None),
    )
    result = logical_backup.run(req)
    time.sleep(1.05 - time.time() % 1)  # backup ids have a resolution of one second
    return result["manifest"]


def trusted_keys(state):
    return signing.parse_public_keys([state["signing"]["public_key"]])


def rewrite_manifest(target, prefix, manifest):
    key = catalog.manifest_key(prefix, "production", manifest["backup_id"])
    target.put_bytes(key, json.dumps(manifest, indent=2, sort_keys=True).encode())


def point_data_at(manifest, other):
    """The forgery of the report: the data entry names another backup's object, with its size and digests."""
    forged = copy.deepcopy(manifest)
    data = next(o for o in forged["objects"] if o.get("kind") == "data")
    source = next(o for o in other["objects"] if o.get("kind") == "data")
    data.update({k: source[k] for k in ("key", "size", "sha256", "raw_size")})
    return forged


def data_name(manifest):
    return next(o["name"] for o in manifest["objects"] if o.get("kind") == "data")


@pytest.fixture
def restored(sandbox):
    names = []
    yield names
    for name in names:
        drop_database(sandbox, name)


@pytest.fixture
def secondary(sandbox, prefix):
    target = make_target(s3_params(sandbox, bucket="immutable"))
    yield target
    pages = target.client.get_paginator("list_object_versions").paginate(Bucket=target.bucket, Prefix=f"{prefix}/")
    for page in pages:
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            target.client.delete_object(
                Bucket=target.bucket, Key=item["Key"], VersionId=item["VersionId"], BypassGovernanceRetention=True
            )


def test_a_forged_manifest_is_refused_by_the_runbook(run_playbook, sandbox, s3_target, prefix, tmp_path, restored):
    """The fault as reported: data re-pointed at an older backup's object restored the wrong data, PASSED."""
    older = take(sandbox, s3_target, prefix)
    newer = take(sandbox, s3_target, prefix)
    restored.append(f"restore_{newer['backup_id'].lower()}")
    rewrite_manifest(s3_target, prefix, point_data_at(newer, older))
    before = staging_databases(sandbox)
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path, backup=newer["backup_id"]))
    assert run.rc != 0
    assert f"the signature of backup {newer['backup_id']}'s manifest does not verify" in run.stdout
    assert "RUN REPORT: PASSED" not in run.stdout
    assert staging_databases(sandbox) == before


def test_the_signature_is_checked_before_any_object_is_read(sandbox, s3_target, prefix):
    """A forged entry that names a missing object fails on the signature, not on the object: nothing was read."""
    manifest = take(sandbox, s3_target, prefix)
    forged = copy.deepcopy(manifest)
    forged["objects"][0]["key"] = forged["objects"][0]["key"] + ".gone"
    rewrite_manifest(s3_target, prefix, forged)
    with pytest.raises(DRError) as info:
        signing.trusted_manifest(s3_target, prefix, "production", manifest["backup_id"], trusted_keys(sandbox))
    assert "does not verify" in str(info.value) and "missing" not in str(info.value)


def test_a_manifest_signed_by_an_unknown_key_is_refused(sandbox, s3_target, prefix):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate()
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    manifest = take(sandbox, s3_target, prefix, key=pem)
    with pytest.raises(DRError) as info:
        signing.trusted_manifest(s3_target, prefix, "production", manifest["backup_id"], trusted_keys(sandbox))
    assert f"signed by key {signing.key_id(other.public_key())}, which is not among the trusted keys" in str(info.value)
    # Listing the rotated key trusts it.
    keys = signing.parse_public_keys([sandbox["signing"]["public_key"], signing.public_key_text(other.public_key())])
    _, trust = signing.trusted_manifest(s3_target, prefix, "production", manifest["backup_id"], keys)
    assert trust["signature"] == "valid" and trust["key_id"] == signing.key_id(other.public_key())


def test_keys_outside_the_folder_are_refused_even_for_an_allowed_unsigned_backup(sandbox, s3_target, prefix):
    older = take(sandbox, s3_target, prefix, signed=False)
    newer = take(sandbox, s3_target, prefix, signed=False)
    rewrite_manifest(s3_target, prefix, point_data_at(newer, older))
    with pytest.raises(DRError) as info:
        signing.trusted_manifest(
            s3_target,
            prefix,
            "production",
            newer["backup_id"],
            trusted_keys(sandbox),
            allow_unsigned=newer["backup_id"],
        )
    assert f"object {data_name(newer)} of backup" in str(
        info.value
    ) and "points outside the backup's own folder" in str(info.value)
    assert older["backup_id"] in str(info.value)  # the key it points at is named


def test_an_unsigned_backup_is_restored_only_when_named(run_playbook, sandbox, s3_target, prefix, tmp_path, restored):
    manifest = take(sandbox, s3_target, prefix, signed=False)
    restored.append(f"restore_{manifest['backup_id'].lower()}")
    refused = run_playbook("restore.yml", restore_vars(prefix, tmp_path, backup=manifest["backup_id"]))
    assert refused.rc != 0
    assert f"backup {manifest['backup_id']} has no signature" in refused.stdout
    assert f"-e allow_unsigned_backup={manifest['backup_id']}" in refused.stdout
    other_id = "20000101T000000Z"
    wrong = run_playbook(
        "restore.yml", restore_vars(prefix, tmp_path, backup=manifest["backup_id"], allow_unsigned_backup=other_id)
    )
    assert wrong.rc != 0 and "has no signature" in wrong.stdout
    run = run_playbook(
        "restore.yml",
        restore_vars(prefix, tmp_path, backup=manifest["backup_id"], allow_unsigned_backup=manifest["backup_id"]),
    )
    assert run.rc == 0, run.stdout[-3000:]
    assert f"unsigned, allowed by allow_unsigned={manifest['backup_id']}" in run.stdout


def secure(primary, secondary, manifest, prefix):
    immutable.secure_backup(
        primary,
        secondary,
        manifest,
        timefmt.utcnow() + dt.timedelta(days=1),
        "GOVERNANCE",
        manifest_key=catalog.manifest_key(prefix, "production", manifest["backup_id"]),
    )


def test_the_primary_is_compared_with_its_locked_copy(sandbox, s3_target, secondary, prefix):
    manifest = take(sandbox, s3_target, prefix)
    keys = trusted_keys(sandbox)
    _, trust = signing.trusted_manifest(s3_target, prefix, "production", manifest["backup_id"], keys, None, secondary)
    assert trust["trusted"] == "primary" and trust["locked_copy"].startswith("none")
    secure(s3_target, secondary, manifest, prefix)
    _, trust = signing.trusted_manifest(s3_target, prefix, "production", manifest["backup_id"], keys, None, secondary)
    assert trust["trusted"] == "primary (byte-identical to the locked copy)" and trust["warnings"] == []
    # Same content, other bytes (a rewrite): still signed, but not the locked bytes: the locked copy is trusted.
    key = catalog.manifest_key(prefix, "production", manifest["backup_id"])
    s3_target.put_bytes(key, json.dumps(s3_target.get_json(key)).encode())
    found, trust = signing.trusted_manifest(
        s3_target, prefix, "production", manifest["backup_id"], keys, None, secondary
    )
    assert trust["trusted"] == "locked" and trust["signature"] == "valid" and found == manifest
    assert "differs from its locked copy" in trust["warnings"][0]
    # A new version written over the locked copy does not replace it: the oldest (locked) version is compared.
    secondary.put_bytes(key, b'{"manifest_version": 1, "forged": true}')
    found, trust = signing.trusted_manifest(
        s3_target, prefix, "production", manifest["backup_id"], keys, None, secondary
    )
    assert found == manifest and any("2 versions" in w for w in trust["warnings"])


def test_restore_yml_trusts_the_locked_copy_over_a_forged_primary(
    run_playbook, sandbox, s3_target, secondary, prefix, tmp_path, restored
):
    older = take(sandbox, s3_target, prefix)
    newer = take(sandbox, s3_target, prefix)
    secure(s3_target, secondary, newer, prefix)
    restored.append(f"restore_{newer['backup_id'].lower()}")
    rewrite_manifest(s3_target, prefix, point_data_at(newer, older))
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path, backup=newer["backup_id"]))
    assert run.rc == 0, run.stdout[-3000:]
    assert "trusted copy: locked" in run.stdout
    assert "the primary manifest differs from its locked copy" in run.stdout
    # The local inventory restores in place (mode project): the staging project's marker names the backup.
    with psycopg.connect(sandbox["staging"]["dsn"]) as conn:
        marker = project.read_marker(conn)
    assert marker["backup_id"] == newer["backup_id"]


def test_the_restore_module_rechecks_the_manifest_it_is_handed(run_playbook, sandbox, s3_target, prefix, tmp_path):
    """Whoever hands the restore a manifest (a playbook of one's own, a survey), it verifies it again."""
    older = take(sandbox, s3_target, prefix)
    newer = take(sandbox, s3_target, prefix)
    playbook = tmp_path / "restore-given.yml"
    playbook.write_text(
        "- hosts: restore_hosts\n  gather_facts: false\n  tasks:\n"
        "    - pgdr.supabase.logical_restore:\n"
        "        target_dsn: '{{ pgdr_restore_target_dsn }}'\n"
        "        manifest: '{{ given }}'\n"
        "        s3: '{{ pgdr_backup_s3 }}'\n"
        "        database: never_made_" + uuid.uuid4().hex[:6] + "\n"
        "        template: platform_template\n"
        "        skip_extensions: [pg_cron]\n"
        "        manifest_public_keys: '{{ pgdr_manifest_public_keys }}'\n"
    )
    run = run_playbook(str(playbook), {"given": point_data_at(newer, older)}, check=True)
    assert run.rc != 0
    assert "[check manifest] the signature of backup" in run.stdout
    good = run_playbook(str(playbook), {"given": newer}, check=True)
    assert good.rc == 0, good.stdout[-3000:]
