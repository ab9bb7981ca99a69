"""The pgBackRest engine without a sandbox: times, configuration, info parsing, the choice of a base backup, the
restorable window, freshness, verify reports and error classification."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest as pb
from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_repo as pb_repo
from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_restore as pb_restore
from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

SECRET = "s3-secret-abcdef"
CIPHER = "cipher-pass-123456"


def repo(**kw):
    args = {
        "bucket": "b",
        "endpoint": "localhost",
        "port": 9443,
        "path": "/pgbackrest/production",
        "access_key": "AKIA",
        "secret_key": SECRET,
        "ca_file": "/ca.crt",
        "cipher_pass": CIPHER,
    }
    return pb.Repo(**(args | kw))


def info_entry(backups=(), archive_max="000000010000000000000009", code=0, message="ok", repo_message=None):
    return {
        "name": "production",
        "status": {"code": code, "message": message},
        "repo": [{"key": 1, "status": {"code": code, "message": repo_message or message}}],
        "archive": [{"id": "15-1", "min": "000000010000000000000002", "max": archive_max}] if archive_max else [],
        "db": [{"system-id": 7, "version": "15"}],
        "backup": [
            {
                "label": label,
                "type": kind,
                "prior": None,
                "error": False,
                "timestamp": {"start": stop - 5, "stop": stop},
                "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000004"},
                "info": {"size": 10, "repository": {"size": 5}},
            }
            for label, kind, stop in backups
        ],
    }


BACKUPS = [("F1", "full", 1000), ("F1_I2", "incr", 2000), ("F3", "full", 3000)]


def at(ts):
    return datetime.fromtimestamp(ts, tz=UTC)


def summary(newest_wal_ts=5000, **kw):
    s = pb_repo.parse_info(info_entry(BACKUPS, **kw))
    s["newest_wal_ts"] = newest_wal_ts
    return s


def test_parse_time_reads_iso_forms_and_treats_naive_as_utc():
    expected = datetime(2026, 11, 28, 21, 14, 9, tzinfo=UTC)
    for text in ("2026-11-28T21:14:09Z", "2026-11-28 22:14:09+01:00", "2026-11-28T21:14:09", "2026-11-28 21:14:09+00"):
        assert pb.parse_time(text) == expected
    assert pb_restore.pg_time(expected) == "2026-11-28 21:14:09.000000+00"
    assert timefmt.iso_exact(expected.timestamp()) == "2026-11-28T21:14:09Z"
    with pytest.raises(DRError, match="cannot read the target time"):
        pb.parse_time("yesterday")


def test_config_holds_the_repository_and_secrets_only_in_the_file():
    settings = pb.Settings(repo(), lock_path="/w/lock", log_path="/w/log", spool_path="/w/spool", retention_diff=3)
    text = pb.render_config(settings, "production", "/data", 5432, "/run")
    for line in (
        "repo1-type=s3",
        "repo1-s3-endpoint=localhost",
        "repo1-storage-port=9443",
        "repo1-s3-uri-style=path",
        "repo1-storage-ca-file=/ca.crt",
        "repo1-path=/pgbackrest/production",
        "repo1-cipher-type=aes-256-cbc",
        f"repo1-cipher-pass={CIPHER}",
        f"repo1-s3-key-secret={SECRET}",
        "repo1-retention-full=2",
        "repo1-retention-diff=3",
        "compress-type=zst",
        "start-fast=y",
        "lock-path=/w/lock",
        "[production]",
        "pg1-path=/data",
        "pg1-port=5432",
        "pg1-socket-path=/run",
    ):
        assert line in text.splitlines()
    tool = pb.PgBackRest("production", config_file="/c.conf")
    assert SECRET not in " ".join(tool.argv("info")) and CIPHER not in " ".join(tool.argv("info"))
    assert pb.env_options({"repo1-cipher-pass": "x"}) == {"PGBACKREST_REPO1_CIPHER_PASS": "x"}


def test_bad_inputs_are_refused():
    with pytest.raises(DRError, match="no cipher passphrase"):
        repo(cipher_pass=None)
    assert repo(cipher_type="none", cipher_pass=None).options().get("repo1-cipher-type") is None
    with pytest.raises(DRError, match="must be absolute"):
        repo(path="relative")
    with pytest.raises(DRError, match="invalid stanza name"):
        pb.check_stanza_name("../etc")


def test_info_states_missing_stanza_wrong_passphrase_and_no_backups():
    missing = pb_repo.parse_info({"name": "x", "status": {"code": 1, "message": "missing stanza path"}})
    assert not missing["exists"]
    with pytest.raises(DRError, match="stanza 'x' does not exist"):
        pb_repo.check_info(missing)
    wrong = pb_repo.parse_info(
        info_entry(code=99, message="other", repo_message="[FormatError] unable to load info file 'a':\n\x00garbage")
    )
    with pytest.raises(DRError, match="cipher passphrase is wrong") as err:
        pb_repo.check_info(wrong)
    assert "garbage" not in str(err.value)
    pb_repo.check_info(pb_repo.parse_info(info_entry(code=2, message="no valid backups")))


def test_choose_backup_takes_the_newest_ended_before_the_target():
    s = summary()
    assert pb_repo.choose_backup(s, at(2500))[0]["label"] == "F1_I2"
    assert pb_repo.choose_backup(s, at(3000))[0]["label"] == "F3"
    assert pb_repo.choose_backup(s, at(1000))[0]["label"] == "F1"


@pytest.mark.parametrize(
    ("target", "words"),
    [(999, "is before the earliest restorable time 1970-01-01T00:16:40Z"), (5001, "is after the newest archived WAL")],
)
def test_choose_backup_outside_the_window_names_it(target, words):
    with pytest.raises(DRError, match=words) as err:
        pb_repo.choose_backup(summary(), datetime.fromtimestamp(target, tz=UTC))
    assert "1970-01-01T00:16:40Z .. 1970-01-01T01:23:20Z" in str(err.value)


def test_choose_backup_with_no_backups_says_take_one():
    s = pb_repo.parse_info(info_entry(()))
    s["newest_wal_ts"] = None
    with pytest.raises(DRError, match="no complete backup"):
        pb_repo.choose_backup(s, at(100))


def test_freshness_against_thresholds():
    fresh = pb_repo.freshness(summary(newest_wal_ts=5000), now=5100, max_wal_age_s=300, max_base_age_s=1000)
    assert fresh["newest_wal_age_s"] == 100 and fresh["rpo_ok"]
    assert fresh["newest_base_backup_age_s"] == 2100 and not fresh["base_ok"]
    empty = pb_repo.freshness({"backups": [], "newest_wal_ts": None}, now=1)
    assert not empty["rpo_ok"] and not empty["base_ok"] and empty["newest_wal_age_s"] is None


def test_backup_plan_turns_incr_into_full_without_a_full_backup():
    assert pb_repo.backup_plan(pb_repo.parse_info(info_entry(())), "incr")["type"] == "full"
    plan = pb_repo.backup_plan(summary(), "incr")
    assert plan["type"] == "incr" and plan["note"] is None and plan["newest"]["label"] == "F3"


def test_verify_report_is_read_not_its_exit_code():
    good = (
        "stanza: production\nstatus: ok\n  archiveId: 15-1, total WAL checked: 5, total valid WAL: 5\n"
        "    missing: 0, checksum invalid: 0, size invalid: 0, other: 0\n"
    )
    assert pb.parse_verify(good)["ok"]
    bad = (
        "stanza: production\nstatus: error\n"
        "  backup: F1, status: invalid, total files checked: 3, total valid files: 2\n"
        "    missing: 0, checksum invalid: 1, size invalid: 0, other: 0\n"
    )
    report = pb.parse_verify(bad)
    assert not report["ok"] and any("checksum invalid: 1" in p for p in report["problems"])
    assert not pb.parse_verify("")["ok"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ERROR: [055]: unable to load info file: missing stanza path", "stanza does not exist"),
        ("[CryptoError] unable to flush", "cipher passphrase"),
        ("HTTP request failed with 403 (Forbidden) InvalidAccessKeyId", "refused the credentials"),
        ("[HostConnectError] unable to connect to 'localhost:1'", "cannot reach"),
        ("TLS error [1:337047686] certificate verify failed", "TLS"),
    ],
)
def test_classify_names_the_cause(text, words):
    assert words in pb.classify(text)[0]


# --- issue 15: folder names, the reachable window, the record, the restored cluster's password ------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("2026-11-28T18:47:13+00:01", "2026-11-28T18:47:13.0001Z", False),  # the same digits, two instants
        ("2026-11-28T18:47:13Z", "2026-11-28T19:47:13+01:00", True),  # one instant, two spellings
        ("2026-11-28 18:47:13", "2026-11-28T18:47:13.000000Z", True),
        ("2026-11-28T18:47:13.5Z", "2026-11-28T18:47:13.500000+00:00", True),
    ],
)
def test_cluster_names_come_from_the_normalised_utc_instant(a, b, same):
    assert (pb_restore.cluster_name(a) == pb_restore.cluster_name(b)) is same
    assert pb_restore.cluster_name("2026-11-28T18:47:13+00:01") == "pitr-20261128T184613Z"
    assert pb_restore.cluster_name("2026-11-28T18:47:13.0001Z") == "pitr-20261128T184713.000100Z"


WALDUMP = """\
rmgr: Heap        len (rec/tot):     59/    59, tx:        761, lsn: 0/06019DA8, prev 0/06018528, desc: INSERT
rmgr: Transaction len (rec/tot):    421/   421, tx:        761, lsn: 0/07000028, prev 0/06019DE8, desc: COMMIT \
2026-12-01 23:32:54.347447 UTC; inval msgs: catcache 80
rmgr: Transaction len (rec/tot):     34/    34, tx:        762, lsn: 0/070000D8, prev 0/07000028, desc: ABORT \
2026-12-01 23:33:01.000001 UTC
rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/07000100, prev 0/070000D8, desc: SWITCH
pg_waldump: error: error in WAL record at 0/7000100: invalid record length
"""


def test_the_last_transaction_end_is_read_from_pg_waldump_to_the_microsecond():
    moment, lsn = pb.last_commit_in(WALDUMP)
    assert moment == datetime(2026, 12, 1, 23, 33, 1, 1, tzinfo=UTC) and lsn == "0/070000D8"
    assert pb.last_commit_in("rmgr: Heap ... desc: INSERT\n") == (None, None)


def test_the_window_ends_at_the_last_archived_commit_and_a_later_target_names_the_switch():
    s = summary()
    s["last_commit_ts"] = 4000.5
    assert pb_repo.window_text(s) == "1970-01-01T00:16:40Z .. 1970-01-01T01:06:40.500000Z (the last archived commit)"
    assert pb_repo.choose_backup(s, at(4000.5))[0]["label"] == "F3"
    with pytest.raises(DRError, match="is after the last archived commit") as err:
        pb_repo.choose_backup(s, at(4500), after_hint="let the run force a WAL switch")
    assert "replay could not reach it" in str(err.value) and "force a WAL switch" in str(err.value)
    s["last_commit_ts"] = None
    assert "(no commit archived since the backup)" in pb_repo.window_text(s)


def test_the_record_of_the_moment_restored_measures_rpo_against_the_target(tmp_path):
    req = pb_restore.RestoreRequest(
        "production", repo(), pb.parse_time("2026-12-01T10:00:10Z"), str(tmp_path / "c" / "data")
    )
    plan = {"backup": {"label": "F3", "type": "full"}, "window": "w", "restore_to": "2026-12-01T10:00:10Z"}
    point = pb_restore.point_in_time(req, plan, "2026-12-01T10:00:07.250000Z", 2)
    assert point["rpo_s"] == 2.75 and point["timeline"] == 2 and point["base_backup"] == "F3"
    assert point["stopped_by"] == "time" and point["target_time"] == "2026-12-01T10:00:10Z"
    assert pb_restore.point_in_time(req, dict(plan, stop_lsn="0/7000028"), None, 2)["rpo_s"] is None
    assert pb_restore.point_in_time(req, dict(plan, stop_lsn="0/7000028"), None, 2)["stopped_by"] == "lsn 0/7000028"
    assert req.attempt_file == str(tmp_path / "c" / pb_restore.ATTEMPT)


def test_the_runbook_password_is_sent_as_a_scram_verifier():
    import base64
    import hashlib
    import hmac

    salt = b"0123456789abcdef"
    text = pb_restore.scram_verifier("own-password", salt=salt)
    assert text.startswith("SCRAM-SHA-256$4096:") and "own-password" not in text
    head, keys = text.split("$")[1:]
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", b"own-password", salt, 4096)
    assert stored == hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    assert server == hmac.new(salted, b"Server Key", "sha256").digest()
    assert head == "4096:" + base64.b64encode(salt).decode()


def test_a_data_folder_left_by_a_failed_attempt_is_planned_for_cleaning_not_refused(tmp_path, monkeypatch):
    data = tmp_path / "c" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    req = pb_restore.RestoreRequest("production", repo(), at(2500), str(data))
    with pytest.raises(DRError, match="exists and is not empty"):
        pb_restore.restore_plan(req)
    (tmp_path / "c" / pb_restore.ATTEMPT).write_text('{"target_time": "x"}')

    class Reader:
        def info(self):
            return info_entry(BACKUPS)

        def last_archived_commit(self, archive, bin_dir):
            return at(4000), "0/7000028", "000000010000000000000009"

        def newest_wal_time(self, archive):
            return 5000

    monkeypatch.setattr(pb_restore.RestoreRequest, "reader", lambda self: Reader())
    plan = pb_restore.restore_plan(req)
    assert plan["action"] == "restore" and plan["clean_failed"] and plan["failed_attempt"] == {"target_time": "x"}
    assert plan["stop_lsn"] is None and plan["backup"]["label"] == "F1_I2"
    exact = pb_restore.restore_plan(pb_restore.RestoreRequest("production", repo(), at(4000), str(data)))
    assert exact["stop_lsn"] == "0/7000028", "a target at the last commit itself stops by its LSN"
