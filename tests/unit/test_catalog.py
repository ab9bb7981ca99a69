"""catalog: backup ids per window, the key layout, manifests and the listing built from them."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

MOMENT = dt.datetime(2026, 11, 28, 13, 45, 12, 345678, tzinfo=dt.UTC)


class TestBackupIds:
    @pytest.mark.parametrize(
        ("window", "expected"),
        [("daily", "20261128T000000Z"), ("hourly", "20261128T130000Z"), ("every_run", "20261128T134512Z")],
    )
    def test_id_is_the_start_of_the_window(self, window, expected):
        assert catalog.backup_id_for(MOMENT, window) == expected

    def test_two_moments_in_one_day_share_the_daily_id(self):
        late = MOMENT.replace(hour=23, minute=59, second=59)
        assert catalog.backup_id_for(MOMENT, "daily") == catalog.backup_id_for(late, "daily")
        assert catalog.backup_id_for(MOMENT, "hourly") != catalog.backup_id_for(late, "hourly")

    def test_id_is_in_utc_whatever_the_moment_zone(self):
        # 00:30 in UTC+2 is 22:30 the day before in UTC.
        moment = dt.datetime(2026, 11, 28, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        assert catalog.backup_id_for(moment, "daily") == "20261127T000000Z"
        assert catalog.backup_id_for(moment, "hourly") == "20261127T220000Z"

    def test_ids_sort_in_time_order(self):
        moments = [MOMENT + dt.timedelta(hours=h) for h in (0, 5, 30, 24 * 40, 24 * 400)]
        ids = [catalog.backup_id_for(m, "hourly") for m in moments]
        assert ids == sorted(ids)

    @pytest.mark.parametrize("window", ["weekly", "", None, "Daily"])
    def test_unknown_window_raises_drerror_naming_it_and_the_choices(self, window):
        with pytest.raises(DRError) as caught:
            catalog.backup_id_for(MOMENT, window)
        text = str(caught.value)
        assert repr(window) in text
        assert "daily, hourly, every_run" in text
        assert caught.value.step == "plan"

    def test_parse_round_trips(self):
        backup_id = catalog.backup_id_for(MOMENT, "every_run")
        assert catalog.parse_backup_id(backup_id) == MOMENT.replace(microsecond=0)
        assert catalog.parse_backup_id(backup_id).tzinfo == dt.UTC

    @pytest.mark.parametrize(
        "bad", ["latest", "2026-11-28", "20261128T000000", "20261128t000000z", "", " 20261128T000000Z"]
    )
    def test_parse_bad_input_names_the_input(self, bad):
        with pytest.raises(DRError) as caught:
            catalog.parse_backup_id(bad)
        assert repr(bad) in str(caught.value)
        assert caught.value.step == "select backup"
        assert "list_backups.yml" in caught.value.hint

    def test_parse_none_is_refused(self):
        with pytest.raises(DRError, match="None is not a backup id"):
            catalog.parse_backup_id(None)

    def test_parse_impossible_date_is_a_drerror(self):
        with pytest.raises(DRError) as caught:
            catalog.parse_backup_id("20261332T000000Z")
        assert "20261332T000000Z" in str(caught.value)


class TestKeyLayout:
    def test_manifest_key(self):
        key = catalog.manifest_key("backups", "production", "20261128T000000Z")
        assert key == "backups/production/logical/20261128T000000Z/manifest.json"

    def test_backup_prefix_ends_with_a_slash(self):
        assert catalog.backup_prefix("backups", "prod", "20261128T000000Z") == "backups/prod/logical/20261128T000000Z/"

    @pytest.mark.parametrize(
        ("prefix", "expected"), [("/a/b/", "a/b/prod/logical/"), ("", "prod/logical/"), ("/", "prod/logical/")]
    )
    def test_prefix_slashes_are_normalised(self, prefix, expected):
        assert catalog.source_prefix(prefix, "prod") == expected

    def test_lock_sits_beside_the_backups_of_its_source(self):
        assert catalog.lock_key("backups", "prod") == "backups/prod/logical/_lock.json"
        # Never mistaken for a backup folder.
        assert not catalog.BACKUP_ID_RE.match("_lock.json")

    @pytest.mark.parametrize("good", ["production", "prod-eu.1", "a", "A_b"])
    def test_usable_source_names(self, good):
        catalog.check_source_name(good)

    @pytest.mark.parametrize("bad", ["", "a/b", "-lead", ".hidden", "with space", "x" * 64, None])
    def test_unusable_source_names(self, bad):
        with pytest.raises(DRError, match="not usable in object keys"):
            catalog.check_source_name(bad)


def manifest(backup_id="20261128T000000Z", version=catalog.MANIFEST_VERSION, **extra):
    body = {
        "manifest_version": version,
        "backup_id": backup_id,
        "source": {"name": "production", "database": "postgres", "server_version": "15.18"},
        "started_at": "2026-11-28T00:00:01.000000Z",
        "finished_at": "2026-11-28T00:00:05.000000Z",
        "duration_s": 4.0,
        "objects": [{"name": "roles", "size": 100}, {"name": "schema", "size": 2000}, {"name": "data", "size": 30000}],
        "migrations": {"versions": ["20240101000000", "20240201000000"]},
    }
    body.update(extra)
    return body


class TestManifest:
    def test_current_version_is_accepted(self):
        body = manifest()
        assert catalog.validate_manifest(body, "s3://b/k") is body

    def test_older_version_is_accepted(self):
        catalog.validate_manifest(manifest(version=0), "s3://b/k")

    def test_newer_version_is_refused_with_a_hint(self):
        with pytest.raises(DRError) as caught:
            catalog.validate_manifest(manifest(version=catalog.MANIFEST_VERSION + 1), "s3://b/k")
        err = caught.value
        assert f"manifest version {catalog.MANIFEST_VERSION + 1} is newer" in str(err)
        assert err.subject == "s3://b/k"
        assert "upgrade" in err.hint

    @pytest.mark.parametrize("body", [{}, [], None, "manifest", {"backup_id": "20261128T000000Z"}])
    def test_not_a_manifest(self, body):
        with pytest.raises(DRError, match="not a backup manifest"):
            catalog.validate_manifest(body, "s3://b/k")

    def test_summary(self):
        row = catalog.summarize(manifest())
        assert row["backup_id"] == "20261128T000000Z"
        assert row["complete"] is True
        assert row["source"] == "production"
        assert row["size"] == 32100
        assert row["objects"] == 3
        assert row["migrations"] == 2

    def test_summary_without_migrations(self):
        body = manifest()
        del body["migrations"]
        assert catalog.summarize(body)["migrations"] == 0


class FakeTarget:
    """The part of S3Target the listing uses, over a dict of key -> JSON body (or raw size)."""

    def __init__(self, bucket="b"):
        self.bucket = bucket
        self.objects = {}

    def where(self, key=""):
        return f"s3://{self.bucket}/{key}"

    def put(self, key, body=None, size=10):
        self.objects[key] = (body, size)

    def get_json(self, key, step=None):
        entry = self.objects.get(key)
        return entry[0] if entry else None

    def list_keys(self, prefix, step=None):
        return sorted((k, s) for k, (_unused, s) in self.objects.items() if k.startswith(prefix))

    def list_common_prefixes(self, prefix, step=None):
        found = set()
        for key in self.objects:
            if key.startswith(prefix) and "/" in key[len(prefix) :]:
                found.add(prefix + key[len(prefix) :].split("/", 1)[0] + "/")
        return sorted(found)


@pytest.fixture
def target():
    t = FakeTarget()
    for backup_id in ("20261126T000000Z", "20261128T000000Z"):
        t.put(catalog.manifest_key("backups", "production", backup_id), manifest(backup_id))
    # An unfinished run: objects, no manifest.
    t.put("backups/production/logical/20261127T000000Z/roles.sql.zst", size=7)
    t.put("backups/production/logical/20261127T000000Z/schema.pgdump.zst", size=11)
    # Not backups: the lock and a stray folder.
    t.put(catalog.lock_key("backups", "production"), {"host": "h"})
    t.put("backups/production/logical/notes/readme.txt", size=1)
    t.put(catalog.manifest_key("backups", "staging", "20261120T000000Z"), manifest("20261120T000000Z"))
    t.put("backups/misc/file.txt", size=1)
    return t


class TestListing:
    def test_newest_first_with_incomplete_rows(self, target):
        rows = catalog.list_backups(target, "backups", "production")
        assert [r["backup_id"] for r in rows] == ["20261128T000000Z", "20261127T000000Z", "20261126T000000Z"]
        assert [r["complete"] for r in rows] == [True, False, True]
        assert rows[1]["size"] == 18
        assert rows[1]["objects"] == 2

    def test_incomplete_rows_can_be_left_out(self, target):
        rows = catalog.list_backups(target, "backups", "production", include_incomplete=False)
        assert [r["backup_id"] for r in rows] == ["20261128T000000Z", "20261126T000000Z"]

    def test_a_newer_manifest_stops_the_listing(self, target):
        target.put(
            catalog.manifest_key("backups", "production", "20261129T000000Z"), manifest("20261129T000000Z", version=99)
        )
        with pytest.raises(DRError, match="newer than this tool reads") as caught:
            catalog.list_backups(target, "backups", "production")
        assert "20261129T000000Z/manifest.json" in caught.value.subject

    def test_unknown_source_lists_nothing(self, target):
        assert catalog.list_backups(target, "backups", "nothing-here") == []

    def test_sources_are_the_folders_with_a_logical_folder(self, target):
        assert catalog.list_sources(target, "backups") == ["production", "staging"]
