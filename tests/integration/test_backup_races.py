"""issue 9.1: two backups racing over a dead run's lock never delete a committed backup.

The runs are separate processes released together by a barrier, repeated enough times to catch an
interleaving that shows once in ten races."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import s3_params
from race_helpers import backup_racer, lock_racer, rounds_race

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, logical_backup, selection
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock

pytestmark = pytest.mark.integration

# Enough to catch an interleaving that shows once in ten races (0.9 ** 30 < 5 %).
BACKUP_ROUNDS = 30
LOCK_ROUNDS = 60


def test_two_runs_over_a_stale_lock_take_it_one_at_a_time(sandbox, s3_target, prefix):
    key = catalog.lock_key(prefix, "production")
    doubles = 0
    for outcomes in rounds_race(lock_racer, LOCK_ROUNDS, (s3_params(sandbox), key, 0.3)):
        assert not [o for o in outcomes if o[0] == "crash"], outcomes
        ok = [o for o in outcomes if o[0] == "ok"]
        doubles += len(ok) > 1
        assert len(ok) >= 1, outcomes
        for outcome in outcomes:
            if outcome[0] == "error":
                assert "another run is in progress" in outcome[1], outcome
                assert "lock race on" in outcome[1]  # the holder is named
    assert doubles == 0, f"{doubles} of {LOCK_ROUNDS} races ended with two holders of one lock"
    assert s3_target.get_json(key) is None


def test_racing_backups_over_a_stale_lock_keep_the_committed_backup(sandbox, s3_target, prefix):
    start = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
    args = (s3_params(sandbox), sandbox["production"]["dsn"], prefix, start.isoformat(), 0)
    damaged = []
    for round_, outcomes in enumerate(rounds_race(backup_racer, BACKUP_ROUNDS, args)):
        assert not [o for o in outcomes if o[0] == "crash"], outcomes
        pfx = f"{prefix}-{round_}"
        backup_id = catalog.backup_id_for(start + dt.timedelta(days=round_), "daily")
        manifest = s3_target.get_json(catalog.manifest_key(pfx, "production", backup_id))
        if manifest is None:
            damaged.append((round_, "manifest deleted", outcomes))
            continue
        try:
            selection.verify_objects(s3_target, manifest)
        except DRError as exc:
            damaged.append((round_, str(exc), outcomes))
            continue
        winners = [o for o in outcomes if o[0] == "ok" and o[1]["changed"]]
        assert len(winners) == 1, outcomes
        for outcome in outcomes:
            if outcome[0] == "error":
                assert "another run is in progress" in outcome[1], outcome
    assert not damaged, damaged


def test_racing_backups_that_wait_report_the_winner(sandbox, s3_target, prefix):
    """With lock_wait the second run queues behind the first and reports its backup, changing nothing."""
    now = dt.datetime(2021, 6, 1, tzinfo=dt.UTC)
    args = (s3_params(sandbox), sandbox["production"]["dsn"], prefix, now.isoformat(), 120)
    [outcomes] = rounds_race(backup_racer, 1, args)
    assert [o[0] for o in outcomes] == ["ok", "ok"], outcomes
    assert sorted(o[1]["changed"] for o in outcomes) == [False, True]
    assert len({o[1]["backup_id"] for o in outcomes}) == 1


def test_a_run_that_loses_the_commit_reports_the_other_backup(sandbox, s3_target, prefix, monkeypatch):
    """Another run commits this window's manifest while this one dumps: this one keeps the other's backup (it
    deletes nothing of it) and reports it as its result."""
    req = logical_backup.BackupRequest("production", sandbox["production"]["dsn"], s3_target, prefix=prefix)
    other = logical_backup.run(
        logical_backup.BackupRequest("production", sandbox["production"]["dsn"], s3_target, prefix=prefix + "-o")
    )["manifest"]
    manifest_key = catalog.manifest_key(prefix, "production", req.backup_id)
    real_take = logical_backup._take

    def take_then_lose(*args):
        manifest = real_take(*args)
        # The other run's commit, as it would land between our last object and our manifest.
        body = dict(other, backup_id=req.backup_id, objects=manifest["objects"], started_at="other")
        s3_target.put_bytes(manifest_key, json.dumps(body).encode(), if_none_match=True)
        return manifest

    monkeypatch.setattr(logical_backup, "_take", take_then_lose)
    result = logical_backup.run(req)
    assert result["changed"] is False
    assert result["manifest"]["started_at"] == "other"
    assert "another run committed" in result["msg"]
    committed = s3_target.get_json(manifest_key)
    assert committed["started_at"] == "other"
    selection.check_objects_exist(s3_target, committed)


def test_a_run_whose_lock_was_taken_over_stops_before_committing(sandbox, s3_target, prefix, monkeypatch):
    """A run that stalls past lock_stale_after loses its lock to another; it must not commit, and it removes only
    the objects it wrote itself."""
    req = logical_backup.BackupRequest(
        "production", sandbox["production"]["dsn"], s3_target, prefix=prefix, lock_stale_after=600
    )
    key = catalog.lock_key(prefix, "production")
    real_take = logical_backup._take
    seen = {}

    def take_then_stall(*args):
        manifest = real_take(*args)
        # Another host judges our lock stale (we "stalled") and takes it over.
        thief = SourceLock(s3_target, key, purpose="backup by the other host")
        thief._body.update(host="other-host", pid=1)
        thief.is_stale = lambda holder: True  # as it looks from another host after lock_stale_after
        thief.acquire()
        seen["thief"] = thief
        s3_target.put_bytes(f"{catalog.backup_prefix(prefix, 'production', req.backup_id)}theirs.bin", b"x")
        return manifest

    monkeypatch.setattr(logical_backup, "_take", take_then_stall)
    with pytest.raises(DRError) as info:
        logical_backup.run(req)
    seen["thief"].release()
    assert "lock" in str(info.value) and "other-host" in str(info.value)
    assert s3_target.get_json(catalog.manifest_key(prefix, "production", req.backup_id)) is None
    left = [k for k, _ in s3_target.list_keys(f"{prefix}/")]
    assert left == [f"{catalog.backup_prefix(prefix, 'production', req.backup_id)}theirs.bin"]
