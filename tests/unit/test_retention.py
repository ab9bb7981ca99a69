"""The retention plan with a fixed clock: keep, cold, expire; the newest complete backup is never expired; locks
are never fought; policies that cannot be honoured are refused."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import immutable, retention, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def row(days_ago, complete=True, hours=0):
    moment = NOW - dt.timedelta(days=days_ago, hours=hours)
    return {"backup_id": moment.strftime(timefmt.COMPACT_FORMAT), "complete": complete, "size": 10}


def by_age(decisions):
    return {round(d["age_days"]): d["action"] for d in decisions}


def test_keep_cold_expire_by_age():
    backups = [row(1), row(13), row(14), row(30), row(59), row(60), row(90)]
    decisions = retention.plan_retention(backups, NOW, hot_days=14, cold_days=60)
    assert by_age(decisions) == {1: "keep", 13: "keep", 14: "cold", 30: "cold", 59: "cold", 60: "expire", 90: "expire"}
    assert [d["backup_id"] for d in decisions] == sorted((b["backup_id"] for b in backups), reverse=True)
    assert all("reason" in d for d in decisions)


def test_newest_complete_backup_is_never_expired():
    """Backups stopped 100 days ago: the newest complete one stays, even though incomplete ones are newer."""
    backups = [row(100, hours=0), row(120), row(99, complete=False)]
    decisions = {d["backup_id"]: d for d in retention.plan_retention(backups, NOW)}
    assert decisions[backups[0]["backup_id"]]["action"] == "keep"
    assert "never expired" in decisions[backups[0]["backup_id"]]["reason"]
    assert decisions[backups[1]["backup_id"]]["action"] == "expire"
    assert decisions[backups[2]["backup_id"]]["action"] == "expire"


def test_keep_min_keeps_that_many_complete_backups():
    backups = [row(70), row(80), row(90), row(100)]
    decisions = retention.plan_retention(backups, NOW, keep_min=3)
    assert [d["action"] for d in decisions] == ["keep", "keep", "keep", "expire"]


def test_incomplete_backups_expire_after_the_grace_period_only():
    backups = [row(0, complete=False, hours=2), row(0, complete=False, hours=30), row(1)]
    decisions = retention.plan_retention(backups, NOW, grace_hours=24)
    assert [d["action"] for d in decisions] == ["keep", "keep", "expire"]
    assert "grace" in decisions[0]["reason"]


def test_locked_backup_is_kept_not_attempted():
    old = row(70)
    backups = [row(1), old]
    locks = {old["backup_id"]: NOW + dt.timedelta(days=3)}
    decision = retention.plan_retention(backups, NOW, locks=locks)[1]
    assert decision["action"] == "keep"
    assert "locked until" in decision["reason"]
    # A lock that has run out does not stop expiry; a legal hold does.
    assert (
        retention.plan_retention(backups, NOW, locks={old["backup_id"]: NOW - dt.timedelta(seconds=1)})[1]["action"]
        == "expire"
    )
    assert retention.plan_retention(backups, NOW, locks={old["backup_id"]: retention.FOREVER})[1]["action"] == "keep"


def test_backup_already_cold_is_not_moved_again():
    cold = row(20)
    decisions = retention.plan_retention(
        [row(1), cold], NOW, storage_classes={cold["backup_id"]: {"STANDARD_IA"}}, cold_storage_class="STANDARD_IA"
    )
    assert decisions[1]["action"] == "keep"
    assert "cold already" in decisions[1]["reason"]
    partly = retention.plan_retention(
        [row(1), cold], NOW, storage_classes={cold["backup_id"]: {"STANDARD", "STANDARD_IA"}}
    )
    assert partly[1]["action"] == "cold"


def test_no_cold_storage_class_means_no_moves():
    decisions = retention.plan_retention([row(1), row(20)], NOW, cold_storage_class="")
    assert [d["action"] for d in decisions] == ["keep", "keep"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lock_days": 7}, "shorter than the hot retention"),
        ({"lock_days": 61}, "expiry would fight the lock"),
        ({"hot_days": 60, "expire_days": 60}, "must be greater than hot_days"),
        ({"keep_min": 0}, "keep_min must be at least 1"),
        ({"grace_hours": 0}, "grace_hours"),
        ({"hot_days": -1}, "hot_days must be"),
    ],
)
def test_policies_that_cannot_be_honoured_are_refused(kwargs, message):
    with pytest.raises(DRError, match=message):
        retention.validate_policy(**kwargs)


def test_lock_between_hot_and_expiry_is_accepted():
    for lock_days in (None, 0, 14, 30, 60):
        retention.validate_policy(hot_days=14, expire_days=60, lock_days=lock_days)


def test_plan_refuses_a_lock_that_fights_expiry():
    with pytest.raises(DRError, match="longer than the expiry"):
        retention.plan_retention([row(1)], NOW, lock_days=90, cold_days=60)


def test_lifecycle_rule_shape():
    rule = retention.desired_rule("backups", "production", 14, 60, "GLACIER_IR", 24, False)
    assert rule["Filter"] == {"Prefix": "backups/production/logical/"}
    assert rule["Transitions"] == [{"Days": 14, "StorageClass": "GLACIER_IR"}]
    assert "Expiration" not in rule
    assert retention.desired_rule("backups", "production", 14, 60, "", 24, True)["Expiration"] == {"Days": 60}


# The immutable bucket's plan is pure too: drift versus steps.


def state(**overrides):
    base = {
        "bucket": "locked",
        "exists": True,
        "versioning": "Enabled",
        "object_lock": True,
        "default_retention": {"mode": "COMPLIANCE", "days": 30},
        "sse": None,
    }
    base.update(overrides)
    return base


def test_bucket_plan_nothing_to_do():
    assert immutable.plan_bucket(state(), "COMPLIANCE", 30) == {"steps": [], "drift": []}
    # Stronger or longer than asked is fine and never lowered.
    assert immutable.plan_bucket(state(), "GOVERNANCE", 7) == {"steps": [], "drift": []}


def test_bucket_without_lock_is_drift():
    plan = immutable.plan_bucket(state(object_lock=False, default_retention=None, versioning="Disabled"))
    assert plan["steps"] == []
    assert "Object Lock is not enabled" in plan["drift"][0]


def test_shorter_or_weaker_default_retention_is_drift_unless_extended():
    weak = state(default_retention={"mode": "GOVERNANCE", "days": 1})
    assert "weaker than the policy" in immutable.plan_bucket(weak, "COMPLIANCE", 30)["drift"][0]
    plan = immutable.plan_bucket(weak, "COMPLIANCE", 30, extend=True)
    assert plan["drift"] == []
    assert plan["steps"][0]["to"] == {"mode": "COMPLIANCE", "days": 30}
    longer_governance = state(default_retention={"mode": "GOVERNANCE", "days": 90})
    assert immutable.plan_bucket(longer_governance, "GOVERNANCE", 30, extend=True)["steps"] == []


def test_missing_bucket_is_created_with_lock_or_refused():
    plan = immutable.plan_bucket(state(exists=False), "COMPLIANCE", 30, sse={"algorithm": "AES256"})
    assert [s["action"] for s in plan["steps"]] == ["create_bucket", "set_default_retention", "set_encryption"]
    assert immutable.plan_bucket(state(exists=False), create=False)["drift"] == ["the bucket does not exist"]


def test_encryption_plan():
    assert immutable.plan_bucket(state(sse="unsupported"), sse={"algorithm": "AES256"})["drift"]
    assert immutable.plan_bucket(state(sse="unsupported"))["drift"] == []
    other = state(sse={"algorithm": "aws:kms", "kms_key_id": "k1"})
    assert immutable.plan_bucket(other, sse={"algorithm": "AES256"})["drift"]
    assert immutable.plan_bucket(other, sse={"algorithm": "aws:kms", "kms_key_id": "k1"})["drift"] == []
    with pytest.raises(DRError, match="not one of"):
        immutable.plan_bucket(state(), sse={"algorithm": "rot13"})


def test_lock_settings_are_checked():
    with pytest.raises(DRError, match="lock mode"):
        immutable.check_lock_settings("FOREVER", 1)
    with pytest.raises(DRError, match="whole number"):
        immutable.check_lock_settings("COMPLIANCE", -1)


def test_retain_until_follows_the_backup_time():
    assert immutable.retain_until_for("20261128T000000Z", 14) == dt.datetime(2026, 12, 12, tzinfo=dt.UTC)


class RecordTarget:
    """Just enough of S3Target for immutable.record()."""

    def __init__(self, stored):
        self.stored = stored
        self.asked = []

    def get_json(self, key, step=None):
        self.asked.append(key)
        return self.stored


@pytest.mark.parametrize(
    ("stored", "secured", "verified"),
    [
        (None, False, False),
        ({"status": "secured", "verified_at": "2026-11-28T00:00:00Z", "objects": [{"verified": True}]}, True, True),
        ({"status": "not_secured", "verified_at": None, "objects": [{"verified": False}]}, False, False),
    ],
)
def test_record_flags_for_readers(stored, secured, verified):
    target = RecordTarget(stored)
    found = immutable.record(target, "backups", "production", "20261128T000000Z")
    assert target.asked == ["backups/production/logical/20261128T000000Z/secured.json"]
    assert (found["secured"], found["verified"]) == (secured, verified)


# --- issue 9.2 / 9.8: a running backup, a damaged backup ---------------------------------------------------------


def test_an_incomplete_backup_is_aged_by_its_last_write_not_its_id():
    """A daily backup whose window began 30 h ago and still uploads: its id says 30 h, its last write 10 min."""
    late = row(0, complete=False, hours=30)
    late["last_activity"] = NOW - dt.timedelta(minutes=10)
    idle = row(0, complete=False, hours=30)
    idle["backup_id"] = (NOW - dt.timedelta(hours=31)).strftime(timefmt.COMPACT_FORMAT)
    idle["last_activity"] = NOW - dt.timedelta(hours=25)
    decisions = {d["backup_id"]: d for d in retention.plan_retention([late, idle, row(1)], NOW, grace_hours=24)}
    assert decisions[late["backup_id"]]["action"] == "keep"
    assert "last written 0.2 h ago" in decisions[late["backup_id"]]["reason"]
    assert decisions[idle["backup_id"]]["action"] == "expire"
    assert "nothing written to it for 25.0 h" in decisions[idle["backup_id"]]["reason"]


def test_an_incomplete_backup_under_a_live_lock_is_never_touched():
    running = row(5, complete=False)
    running["running"] = "backup 20261123T000000Z on db1 (pid 42) holds s3://b/_lock.json"
    decision = retention.plan_retention([running, row(1)], NOW, grace_hours=24)[1]
    assert decision["action"] == "keep"
    assert "the source's lock is live (backup 20261123T000000Z on db1" in decision["reason"]


def test_a_damaged_backup_never_counts_toward_keep_min():
    """The newest backup lost its objects: keep_min must protect the newest good one instead."""
    damaged, good, older = row(70), row(80), row(90)
    damaged.update(verified=False, problems=["object data of the backup is missing (s3://b/k)"])
    good["verified"] = older["verified"] = True
    decisions = {d["backup_id"]: d for d in retention.plan_retention([damaged, good, older], NOW, keep_min=1)}
    assert decisions[good["backup_id"]]["action"] == "keep"
    assert "never expired" in decisions[good["backup_id"]]["reason"]
    assert decisions[damaged["backup_id"]]["action"] == "expire"
    assert "DAMAGED (object data of the backup is missing" in decisions[damaged["backup_id"]]["reason"]
    assert decisions[damaged["backup_id"]]["verified"] is False
    assert decisions[older["backup_id"]]["action"] == "expire"


def test_unknown_sets_are_refused():
    with pytest.raises(DRError, match="unknown sets"):
        retention.run(None, "backups", "production", sets=("logical", "videos"))


# --- issue 18 item 3: drift is reported, never silently fixed ----------------------------------------------------


def test_a_removed_default_retention_is_a_step_that_names_the_drift():
    plan = immutable.plan_bucket(state(default_retention=None), "GOVERNANCE", 1)
    [step] = plan["steps"]
    assert step["action"] == "set_default_retention" and "no default retention" in step["drift"]
    # Setting up a new bucket is not drift.
    created = immutable.plan_bucket(state(exists=False), "GOVERNANCE", 1)
    assert not any(s.get("drift") for s in created["steps"])
    extended = immutable.plan_bucket(
        state(default_retention={"mode": "GOVERNANCE", "days": 1}), "GOVERNANCE", 2, extend=True
    )
    assert "weaker than the policy's GOVERNANCE 2 days" in extended["steps"][0]["drift"]


def test_drift_lines_say_what_was_found_and_whether_it_was_restored():
    class Target:
        def where(self, key=""):
            return "s3://locked/" + key

    drift = [
        {
            "found": "the bucket has no default retention",
            "action": "set_default_retention",
            "to": {"mode": "GOVERNANCE", "days": 1},
            "restored": True,
            "error": None,
        },
        {
            "found": "the bucket has no default encryption",
            "action": "set_encryption",
            "to": {"algorithm": "AES256"},
            "restored": False,
            "error": "not restored: this identity may not change the bucket (AccessDenied)",
        },
    ]
    lines = immutable.describe_drift(Target(), drift)
    assert lines[0].startswith("DRIFT on s3://locked/: the bucket has no default retention; restored")
    assert lines[1].endswith("not restored: this identity may not change the bucket (AccessDenied)")


def test_an_unreadable_encryption_matters_only_when_the_policy_asks_for_it():
    assert immutable.plan_bucket(state(sse="unreadable"))["drift"] == []
    drift = immutable.plan_bucket(state(sse="unreadable"), sse={"algorithm": "AES256"})["drift"]
    assert "s3:GetEncryptionConfiguration" in drift[0]
