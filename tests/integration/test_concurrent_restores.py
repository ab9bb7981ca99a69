"""issue 9.7: two restores into one target, and two promotes of one env store, never interleave; the second names
the first. Racers are separate processes released by a barrier, repeated."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
import uuid

import psycopg
import pytest
from backup_helpers import drop_database, dsn_for, new_database_request
from conftest import s3_params
from race_helpers import promote_racer, race, restore_racer

from ansible_collections.pgdr.supabase.plugins.module_utils import envstore, logical_backup, logical_restore, promote
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.target_lock import RestoreTargetLock

pytestmark = pytest.mark.integration

RESTORE_ROUNDS = 6
PROMOTE_ROUNDS = 30


@pytest.fixture(scope="module")
def manifest(sandbox):
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target

    moment = dt.datetime(2020, 3, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=random.randrange(10**7))
    req = logical_backup.BackupRequest(
        "production",
        sandbox["production"]["dsn"],
        s3_target(s3_params(sandbox)),
        prefix=f"conc-{uuid.uuid4().hex[:8]}",
        window="every_run",
        now=moment,
    )
    return logical_backup.run(req)["manifest"]


def staging_databases(state):
    with psycopg.connect(dsn_for(state, "staging", "postgres")) as conn:
        return {r[0] for r in conn.execute("select datname from pg_database")}


@pytest.fixture
def databases(sandbox):
    names = []
    yield names
    for name in names:
        drop_database(sandbox, name)
        drop_database(sandbox, name[:46] + logical_restore.TEMP_SUFFIX)


def test_two_restores_into_one_target_never_interleave(sandbox, manifest, databases):
    refusals = 0
    for _ in range(RESTORE_ROUNDS):
        name = f"race_{uuid.uuid4().hex[:8]}"
        databases.append(name)
        args = (s3_params(sandbox), sandbox["staging"]["dsn"], manifest, name)
        outcomes = race(restore_racer, [args, args])
        assert not [o for o in outcomes if o[0] == "crash"], outcomes
        done = [o for o in outcomes if o[0] == "ok"]
        assert done, outcomes  # one of them always restores
        assert sum(o[1]["changed"] for o in done) == 1, outcomes
        for outcome in outcomes:
            if outcome[0] == "error":
                refusals += 1
                assert outcome[2] == "lock restore target", outcome
                assert f"another restore into {name} is running: restore {manifest['backup_id']} by" in outcome[1]
                assert "backend pid" in outcome[1]
        present = staging_databases(sandbox)
        assert name in present and name[:46] + logical_restore.TEMP_SUFFIX not in present
        with psycopg.connect(dsn_for(sandbox, "staging", name)) as conn:
            marker = logical_restore.read_marker(conn, name)
        assert marker["status"] == "complete" and marker["backup_id"] == manifest["backup_id"]
    assert refusals >= 1, "the racers never overlapped: the test did not race"


def test_a_held_target_is_refused_naming_the_holder_and_lock_wait_queues(sandbox, s3_target, manifest, databases):
    name = f"held_{uuid.uuid4().hex[:8]}"
    databases.append(name)
    holder = RestoreTargetLock(sandbox["staging"]["dsn"], name, purpose="restore by the on-call").acquire()
    try:
        request = new_database_request(sandbox["staging"]["dsn"], manifest, s3_target, database=name)
        with pytest.raises(DRError) as info:
            logical_restore.run(request)
        assert f"another restore into {name} is running: restore by the on-call by" in str(info.value)
        assert "lock_wait" in str(info.value)
        assert name not in staging_databases(sandbox)
        threading.Timer(3, holder.release).start()
        started = time.monotonic()
        request = new_database_request(sandbox["staging"]["dsn"], manifest, s3_target, database=name, lock_wait=60)
        assert logical_restore.run(request)["changed"] is True
        assert time.monotonic() - started >= 2.5
    finally:
        holder.release()


ORIGINAL = "postgresql://postgres:Original-Pw-000@db.prod.example:5432/postgres"


def test_two_promotes_of_one_store_never_interleave(tmp_path):
    refusals = 0
    for round_ in range(PROMOTE_ROUNDS):
        env_file = tmp_path / f"production-{round_}.env"
        env_file.write_text(f"DATABASE_URL={ORIGINAL}\n")
        env_file.chmod(0o600)
        a = f"postgresql://postgres:A-Pw-{round_}@db.a.example:5432/restored"
        b = f"postgresql://postgres:B-Pw-{round_}@db.b.example:5432/restored"
        outcomes = race(promote_racer, [(str(env_file), a, "prod"), (str(env_file), b, "prod")])
        assert not [o for o in outcomes if o[0] == "crash"], outcomes
        done = [o[1]["value"] for o in outcomes if o[0] == "ok"]
        for outcome in outcomes:
            if outcome[0] == "error":
                refusals += 1
                assert outcome[2] == "lock env store", outcome
                assert "another promote or rollback of this store is running: promote prod on" in outcome[1]
        store = envstore.make_store({"type": "dotenv", "path": str(env_file)})
        final = store.read(["DATABASE_URL"])["DATABASE_URL"]
        record = json.loads((tmp_path / f"production-{round_}.env.pgdr-rollback.json").read_text())
        # Whatever the order, the record's previous value is what the last promote really replaced.
        if len(done) == 1:
            assert final == done[0] and record["previous"]["DATABASE_URL"] == ORIGINAL
        else:
            other = a if final == b else b
            assert record["previous"]["DATABASE_URL"] == other, (round_, outcomes, record["previous"])
        rolled = promote.rollback(store, "prod")
        assert rolled["changed"] is True
        expected = ORIGINAL if len(done) == 1 else (a if final == b else b)
        assert store.read(["DATABASE_URL"])["DATABASE_URL"] == expected
    assert refusals >= 1, "the racers never overlapped: the test did not race"


def test_a_rollback_waits_for_no_one_but_is_refused_while_a_promote_holds_the_store(tmp_path):
    env_file = tmp_path / "production.env"
    env_file.write_text(f"DATABASE_URL={ORIGINAL}\n")
    store = envstore.make_store({"type": "dotenv", "path": str(env_file)})
    promote.promote(store, {"DATABASE_URL": "postgresql://x:y@h/restored"}, "prod")
    with store.lock("promote prod (held by the test)"):
        with pytest.raises(DRError) as info:
            promote.rollback(envstore.make_store({"type": "dotenv", "path": str(env_file)}), "prod")
        assert "promote prod (held by the test) on" in str(info.value)
        # Check mode reads and plans only: it needs no lock.
        plan = promote.rollback(envstore.make_store({"type": "dotenv", "path": str(env_file)}), "prod", check_mode=True)
        assert plan["changed"] is True
    assert promote.rollback(store, "prod")["changed"] is True
