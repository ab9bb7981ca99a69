"""One restore result for every restore method: the same keys whatever the method, rpo_s null (never -1) when not
measured, a connection string with its password masked in the module's result and put back by the filter, the
same RETURN documentation in every restore module, and the record taking the result as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_modules import REPO, load, run_module

from ansible_collections.pgdr.supabase.plugins.module_utils import pg, restore_result

RESTORE_MODULES = ("logical_restore", "pgbackrest_restore", "supabase_pitr_restore")
KEYS = {
    "method",
    "mode",
    "dsn",
    "target",
    "backup",
    "point_in_time",
    "rpo_s",
    "timings",
    "verification",
    "planned",
    "details",
}
PASSWORD = "Rest0re-Pw/with@chars"


def returns(name):
    return yaml.safe_load(load(REPO / "plugins" / "modules" / f"{name}.py", f"_ret_{name}").RETURN)


def test_every_restore_module_documents_the_same_restore_result():
    first, *others = (returns(name)["restore"] for name in RESTORE_MODULES)
    assert all(other == first for other in others)
    for key in KEYS:
        assert f"C({key})" in " ".join(first["description"]), key


@pytest.mark.parametrize("method", restore_result.METHODS)
def test_the_result_has_the_same_keys_whatever_the_method(method):
    result = restore_result.build(method, "m", "", "t", {"id": "x"}, rpo_s=-1)
    assert set(result) == KEYS and set(result["backup"]) >= {"id", "source", "taken_at"}
    assert result["rpo_s"] is None


@pytest.mark.parametrize("value, expected", [(None, None), (-1, None), ("-1", None), ("x", None), (0, 0.0), (2.5, 2.5)])
def test_rpo_is_null_when_not_measured(value, expected):
    assert restore_result.rpo(value) == expected


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://postgres:{pg.quote(PASSWORD, safe='')}@127.0.0.1:5433/postgres?sslmode=disable",
        f"host=127.0.0.1 port=5433 user=postgres password='{PASSWORD}' dbname=postgres",
    ],
)
def test_the_masked_connection_string_gets_its_password_back(dsn):
    from ansible_collections.pgdr.supabase.plugins.filter.dsn import restored_dsn

    masked = pg.mask_password(pg.with_database(dsn, "restore_x"))
    assert PASSWORD not in masked and pg.quote(PASSWORD, safe="") not in masked
    back = restored_dsn({"dsn": masked}, dsn=dsn)
    assert pg.conninfo_to_dict(back) == {**pg.conninfo_to_dict(dsn), "dbname": "restore_x"}
    assert back.startswith("postgresql://") == dsn.startswith("postgresql://")  # a URL stays a URL
    assert restored_dsn({"dsn": pg.url("u", pg.MASK, "h", 5, "d")}, password=PASSWORD).endswith("@h:5/d")
    assert restored_dsn({"dsn": ""}, dsn=dsn) == ""


def test_the_record_takes_the_restore_result_as_it_is(tmp_path, capsys):
    restore = restore_result.build(
        "pitr",
        "new_cluster",
        pg.url("postgres", pg.MASK, "127.0.0.1", 5999, "postgres"),
        "127.0.0.1:5999/postgres",
        {"id": "20261128-000000F", "source": "production", "taken_at": "2026-11-28T00:00:10Z"},
        point_in_time={"target_time": "2026-11-28T14:05:00Z", "restored_to": "2026-11-28T14:04:59Z"},
        rpo_s=1.5,
        timings={"restore_s": 2.0},
        verification={"state": "repository"},
    )
    where = {
        "incidents_path": str(tmp_path / "incidents.md"),
        "jsonl_path": str(tmp_path / "events.jsonl"),
        "report_dir": str(tmp_path / "reports"),
    }
    args = {"kind": "pitr_restore", "outcome": "success", "reason": "unit", "restore": restore, **where}
    args["details"] = {"not_checked": ["content"]}
    code, result = run_module("pgdr.supabase.record", args, capsys)
    assert code == 0, result
    [event] = [json.loads(line) for line in Path(where["jsonl_path"]).read_text().splitlines()]
    assert event["backup"]["id"] == "20261128-000000F" and event["target"] == "127.0.0.1:5999/postgres"
    assert event["point_in_time"] == "2026-11-28T14:05:00Z" and event["rpo_s"] == 1.5
    assert event["durations_s"] == {"restore_s": 2.0}
    assert event["details"]["point_in_time"]["restored_to"] == "2026-11-28T14:04:59Z"
    assert event["details"]["not_checked"] == ["content"]


def test_the_restore_module_takes_a_backup_id_with_where_to_find_it(capsys):
    args = {
        "target_dsn": f"postgresql://postgres:{pg.quote(PASSWORD, safe='')}@127.0.0.1:1/postgres",
        "backup": "20261128T000000Z",
        "s3": {
            "bucket": "b",
            "endpoint_url": "http://127.0.0.1:1",
            "access_key": "AKIAUNITTEST",
            "secret_key": "unit-secret-key-1",
        },
    }
    code, result = run_module("pgdr.supabase.logical_restore", args, capsys)
    assert code != 0 and "required by 'backup'" in result["msg"] and "source" in result["msg"]
    code, result = run_module("pgdr.supabase.logical_restore", {**args, "manifest": {"backup_id": "x"}}, capsys)
    assert code != 0 and "mutually exclusive" in result["msg"]
    assert PASSWORD not in json.dumps(result)
