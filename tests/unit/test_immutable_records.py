"""The locked copy's records and the tampering check against an in-memory S3 with versioning and Object Lock
(moto): which record version is trusted, and what counts as tampering."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import boto3
import pytest
from moto import mock_aws

from ansible_collections.pgdr.supabase.plugins.module_utils import immutable, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3Target, b64_sha256

NOW = dt.datetime.now(dt.UTC)
UNTIL = NOW + dt.timedelta(days=2)
FOLDER = "backups/production/logical/20261128T000000Z/"


@pytest.fixture
def locked():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
        yield S3Target("locked", region="us-east-1", access_key="testing", secret_key="testing")


def put_locked(target, key, body):
    resp = target.client.put_object(
        Bucket=target.bucket,
        Key=key,
        Body=body,
        ChecksumSHA256=b64_sha256(body),
        ChecksumAlgorithm="SHA256",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=UNTIL,
    )
    head = target.client.head_object(Bucket=target.bucket, Key=key, VersionId=resp["VersionId"])
    return {
        "name": key.rsplit("/", 1)[-1],
        "key": key,
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "version_id": resp["VersionId"],
        "etag": head["ETag"].strip('"'),
        "retain_until": timefmt.iso(UNTIL),
        "verified": True,
    }


def secured_set(target):
    data = put_locked(target, FOLDER + "data.pgdump.zst", b"the dump")
    manifest = put_locked(target, FOLDER + "manifest.json", b'{"manifest_version": 1}')
    manifest["name"] = "manifest"
    record = {"status": "secured", "record_version": 2, "objects": [data, manifest]}
    put_locked(target, FOLDER + "secured.json", json.dumps(record).encode())
    return record, data, manifest


def test_untouched_copies_have_no_findings(locked):
    record, _unused, _unused = secured_set(locked)
    assert immutable.inspect_copies(locked, record["objects"], NOW) == []


def test_a_newer_version_and_a_delete_marker_are_tampering(locked):
    record, data, manifest = secured_set(locked)
    locked.client.put_object(Bucket="locked", Key=data["key"], Body=b"ransom")
    locked.client.delete_object(Bucket="locked", Key=manifest["key"])
    findings = immutable.inspect_copies(locked, record["objects"], NOW)
    assert {(f["kind"], f["key"]) for f in findings} == {
        ("newer_version", data["key"]),
        ("delete_marker", manifest["key"]),
    }
    assert immutable.is_tampering(findings)
    line = immutable.describe_tampering(locked, findings)
    assert line.startswith("TAMPERING in the immutable bucket s3://locked/")
    assert "was put on top of the locked version of data.pgdump.zst" in line
    assert "hides the locked version of manifest" in line


def test_a_version_of_another_size_or_etag_and_a_gone_version_are_found(locked):
    _record, data, _unused = secured_set(locked)
    wrong = dict(data, size=data["size"] + 1, etag="0" * 32)
    gone = dict(data, version_id="not-a-version")
    kinds = [f["kind"] for f in immutable.inspect_copies(locked, [wrong, gone], NOW)]
    assert kinds.count("digest") == 2 and "gone" in kinds
    assert not immutable.is_tampering(list(immutable.inspect_copies(locked, [gone], NOW)))


def test_after_the_lock_ends_the_key_is_retentions_business(locked):
    record, data, _unused = secured_set(locked)
    locked.client.put_object(Bucket="locked", Key=data["key"], Body=b"later")
    later = UNTIL + dt.timedelta(seconds=1)
    assert immutable.inspect_copies(locked, record["objects"], later) == []


def test_the_oldest_locked_record_is_trusted_and_a_forged_newer_one_is_named(locked):
    record, data, _unused = secured_set(locked)
    forged = dict(record, objects=[dict(data, version_id="attacker"), record["objects"][1]])
    locked.client.put_object(
        Bucket="locked",
        Key=FOLDER + "secured.json",
        Body=json.dumps(forged).encode(),
        ChecksumSHA256=b64_sha256(json.dumps(forged).encode()),
        ChecksumAlgorithm="SHA256",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=UNTIL,
    )
    found, info = immutable.read_locked_record(locked, FOLDER + "secured.json", NOW)
    assert found["objects"][0]["version_id"] == data["version_id"]
    assert len(info["newer"]) == 1
    [finding] = immutable.inspect_copies(locked, [], NOW, extra_record=info)
    assert finding["kind"] == "record" and "newer version(s) of the secure-copy record" in finding["detail"]


def test_a_record_whose_manifest_version_is_gone_gives_way_to_a_newer_one(locked):
    """Secured again after its versions were removed (an admin's bypass): the newer record names the live ones."""
    old_record, data, manifest = secured_set(locked)
    locked.client.delete_object(
        Bucket="locked", Key=manifest["key"], VersionId=manifest["version_id"], BypassGovernanceRetention=True
    )
    new_manifest = put_locked(locked, FOLDER + "manifest.json", b'{"manifest_version": 1}')
    new_manifest["name"] = "manifest"
    again = dict(old_record, objects=[data, new_manifest])
    locked.client.put_object(
        Bucket="locked",
        Key=FOLDER + "secured.json",
        Body=json.dumps(again).encode(),
        ChecksumSHA256=b64_sha256(json.dumps(again).encode()),
        ChecksumAlgorithm="SHA256",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=UNTIL,
    )
    found, _unused = immutable.read_locked_record(locked, FOLDER + "secured.json", NOW)
    assert found["objects"][1]["version_id"] == new_manifest["version_id"]


def test_no_record_at_all(locked):
    assert immutable.read_locked_record(locked, FOLDER + "secured.json", NOW)[0] is None


def test_versions_of_one_key_are_listed_oldest_first(locked):
    first = locked.client.put_object(Bucket="locked", Key="k", Body=b"1")["VersionId"]
    second = locked.client.put_object(Bucket="locked", Key="k", Body=b"2")["VersionId"]
    locked.client.put_object(Bucket="locked", Key="k2", Body=b"other key")
    rows = immutable.key_versions(locked, "k")
    assert [r["version_id"] for r in rows] == [first, second]
    assert rows[-1]["is_latest"] and not rows[0]["is_latest"]


def test_summary_of_rows_names_the_tampered_sets():
    rows = [
        {"kind": "backup", "backup_id": "a", "status": "secured", "changed": True, "reason": "no secure copy yet"},
        {"kind": "storage run", "backup_id": "b", "status": "tampered", "changed": False, "reason": "TAMPERING x"},
    ]
    summary = immutable.summarize_rows(rows)
    assert summary["changed"] is True and summary["tampered"] == ["b"]
    assert summary["run_warnings"] == ["storage run b: TAMPERING x"]
    assert immutable.describe_rows(rows) == "immutable copy (secured): 1 secured, 1 tampered"


def test_a_backup_older_than_the_lock_period_is_refused(locked):
    with pytest.raises(DRError, match="older than the lock period"):
        immutable.secure_set(
            locked,
            locked,
            [{"name": "manifest", "key": FOLDER + "manifest.json", "size": 1, "sha256": "0" * 64}],
            "backup",
            "20200101T000000Z",
            FOLDER + "secured.json",
            NOW - dt.timedelta(days=1),
            "GOVERNANCE",
        )


def test_the_readers_read_the_version_an_entry_names_whatever_is_current(locked):
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore, selection
    from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import RangedReader

    _record, data, _unused = secured_set(locked)
    locked.client.put_object(Bucket="locked", Key=data["key"], Body=b"a newer, other body")
    entry = {k: data[k] for k in ("name", "key", "size", "sha256")}
    with pytest.raises(DRError, match="corrupted"):
        selection.verify_objects(locked, {"objects": [entry]})
    pinned = dict(entry, version_id=data["version_id"])
    assert selection.verify_objects(locked, {"objects": [pinned]})[0]["ok"] is True
    assert selection.check_objects_exist(locked, {"objects": [pinned]})[0]["ok"] is True
    reader = logical_restore._open_ranged(locked, pinned, "download")
    try:
        assert reader.read() == b"the dump"
    finally:
        reader.close()
    ranged = RangedReader(locked, data["key"], data["size"], data["etag"], chunk=3, version_id=data["version_id"])
    try:
        assert b"".join(ranged.iter_chunks()) == b"the dump"
    finally:
        ranged.close()
