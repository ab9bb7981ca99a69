"""The Management API client, the modules and the PITR playbook against the stand-in (scripts/supabase_api_standin.py),
started in-process on a free port with restore timings of a fraction of a second."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import supabase_api_standin as standin
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pgdr.supabase.plugins.module_utils import supabase_api as sa
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = standin.DEFAULT_TOKEN
REF = standin.DEFAULT_PITR_REF
NOPITR = standin.DEFAULT_NOPITR_REF
FAST = {"restoring": 0.6, "coming_up": 0.3, "services": 0.3}
# Documented shapes: the stand-in must answer with these keys.
PROJECT_KEYS = {
    "id",
    "ref",
    "organization_id",
    "organization_slug",
    "name",
    "region",
    "created_at",
    "status",
    "database",
}
CREATED_KEYS = {"id", "ref", "organization_id", "organization_slug", "name", "region", "created_at", "status"}
SERVICES = "auth,db,pooler,realtime,rest,storage"
CREATE = {"name": "pgdr restore target", "db_pass": "a-db-pass-of-the-test", "organization_slug": "pgdr-sandbox"}
DATABASE_KEYS = {"host", "version", "postgres_engine", "release_channel"}
BACKUPS_KEYS = {"region", "walg_enabled", "pitr_enabled", "backups", "physical_backup_data"}
POOLER_KEYS = {"db_host", "db_port", "db_user", "db_name", "connection_string", "pool_mode", "database_type"}


@pytest.fixture
def server(tmp_path):
    srv = standin.Server(port=0, state_file=tmp_path / "supabase-api.json").start()
    control(srv, "switches", {"timings": FAST})
    yield srv
    srv.stop()


def control(srv, name, body=None):
    data = None if body is None else json.dumps(body).encode()
    url = f"{srv.url}/_standin/{name}"
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310 - loopback http
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback http
        return json.loads(response.read())


def call(srv, method, path, body=None, token=TOKEN):
    """One raw API request: (status, JSON body or None)."""
    return standin.call(srv.url, method, path, body, token=token)


def create(srv, token=TOKEN, **body):
    return call(srv, "POST", "/v1/projects", {**CREATE, "region": "eu-central-1", **body}, token=token)


def phase(srv, ref):
    """(project status, the services' statuses) as the API shows them now."""
    _, project = call(srv, "GET", f"/v1/projects/{ref}")
    _, health = call(srv, "GET", f"/v1/projects/{ref}/health?services={SERVICES}")
    return project["status"], tuple(sorted({h["status"] for h in health}))


def restores(srv, ref=REF):
    return control(srv, "state")["projects"][ref]["restores"]


@pytest.fixture
def api(server):
    return sa.ManagementAPI(TOKEN, base_url=server.url, timeout=5, max_retries=3, backoff=0.01)


def in_window(api, ref=REF, seconds_before_latest=600):
    _earliest, latest = sa.pitr_window(api.backups(ref))
    return int(latest.timestamp()) - seconds_before_latest


class TestShapes:
    def test_project(self, api):
        project = api.project(REF)
        assert set(project) == PROJECT_KEYS
        assert set(project["database"]) == DATABASE_KEYS
        assert project["status"] == "ACTIVE_HEALTHY"
        assert project["status"] in sa.PROJECT_STATUSES

    def test_health(self, api):
        health = api.health(REF)
        assert [s["name"] for s in health] == list(sa.HEALTH_SERVICES)
        assert {s["status"] for s in health} == {"ACTIVE_HEALTHY"}

    def test_backups_with_pitr_have_an_empty_list_and_a_window(self, api):
        response = api.backups(REF)
        assert set(response) == BACKUPS_KEYS
        assert response["backups"] == []
        earliest, latest = sa.pitr_window(response)
        now = datetime.now(UTC)
        # The upper bound lags real time.
        assert 0 < (now - latest).total_seconds() < 180
        assert earliest < latest

    def test_backups_without_pitr_list_daily_backups_and_no_window(self, api):
        response = api.backups(NOPITR)
        assert response["pitr_enabled"] is False
        assert sa.pitr_window(response) is None
        assert {b["status"] for b in response["backups"]} == {"COMPLETED"}
        assert set(response["backups"][0]) == {"id", "is_physical_backup", "status", "inserted_at"}

    def test_api_keys_pooler_and_query(self, api):
        keys = api.api_keys(REF)
        assert {k["name"] for k in keys} >= {"anon", "service_role"}
        assert all("..." in k["api_key"] for k in keys)
        revealed = api.api_keys(REF, reveal=True)
        assert "standinsecretvalue" in json.dumps(revealed)
        pooler = api.pooler_config(REF)
        assert set(pooler[0]) == POOLER_KEYS
        assert "[YOUR-PASSWORD]" in pooler[0]["connection_string"]
        assert api.query(REF, "select 1") == []


class TestRestore:
    def test_restore_moves_through_the_statuses_and_waits_for_the_services(self, api, server):
        target = in_window(api)
        assert api.restore_pitr(REF, target) == 201
        assert api.project(REF)["status"] == "RESTORING"
        done = api.wait_for(REF, timeout=20, poll_interval=0.05)
        statuses = [e["status"] for e in done["timeline"]]
        assert statuses[0] == "RESTORING"
        assert "COMING_UP" in statuses
        assert statuses[-1] == "ACTIVE_HEALTHY"
        # Services stay COMING_UP for a while after the project is ACTIVE_HEALTHY.
        assert any(
            e["status"] == "ACTIVE_HEALTHY" and "COMING_UP" in e.get("services", {}).values() for e in done["timeline"]
        )
        assert restores(server)[0]["recovery_time_target_unix"] == target

    def test_pitr_off_is_a_clear_400_not_retried(self, api, server):
        with pytest.raises(DRError, match="PITR is not enabled for this project") as caught:
            api.restore_pitr(NOPITR, in_window(api))
        assert "add-on" in caught.value.hint
        posts = [r for r in control(server, "requests") if r["method"] == "POST"]
        assert len(posts) == 1

    def test_out_of_range_is_a_400_with_the_window_not_retried(self, api, server):
        with pytest.raises(DRError, match=r"Recovery time target must be within range: \d+ <= t <= \d+"):
            api.restore_pitr(REF, int(time.time()))  # now is past the lagging upper bound
        assert len([r for r in control(server, "requests") if r["method"] == "POST"]) == 1
        assert restores(server) == []

    def test_a_hung_restore_escalates_at_the_deadline(self, api, server):
        control(server, "switches", {"hang_restore": True})
        api.restore_pitr(REF, in_window(api))
        started = time.monotonic()
        with pytest.raises(DRError) as caught:
            api.wait_for(REF, timeout=1, poll_interval=0.1)
        assert time.monotonic() - started < 5
        assert "still RESTORING after 1 s" in str(caught.value)
        assert "no API can cancel a stuck RESTORING" in str(caught.value)
        assert "open a support ticket" in caught.value.hint

    def test_the_state_file_keeps_the_restores(self, api, server, tmp_path):
        api.restore_pitr(REF, in_window(api))
        again = standin.StandIn(state_file=tmp_path / "supabase-api.json")
        assert len(again.state["projects"][REF]["restores"]) == 1


class TestErrors:
    def test_429_is_retried_then_succeeds(self, api, server):
        control(server, "switches", {"throttle_next": 2, "retry_after": 0})
        assert api.project(REF)["ref"] == REF
        assert [r["status"] for r in api.retries] == [429, 429]

    def test_the_per_minute_rate_limit_answers_429_with_retry_after(self, server):
        control(server, "switches", {"rate_limit": 3})
        api = sa.ManagementAPI(TOKEN, base_url=server.url, max_retries=2, max_retry_after=0.01)
        for _ in range(3):
            api.project(REF)
        with pytest.raises(DRError, match="rate limit still exceeded after 3 attempts") as caught:
            api.project(REF)
        assert "wait a minute" in caught.value.hint
        url = f"{server.url}/v1/projects/{REF}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})  # noqa: S310 - loopback
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 - loopback http
        assert answer.value.code == 429
        assert 1 <= int(answer.value.headers["Retry-After"]) <= 60

    def test_500_is_retried(self, api, server):
        control(server, "switches", {"fail_next": 2})
        assert api.backups(REF)["pitr_enabled"] is True
        assert [r["status"] for r in api.retries] == [500, 500]

    def test_500_that_persists_fails_after_the_retries(self, api, server):
        control(server, "switches", {"fail_next": 10})
        with pytest.raises(DRError, match=r"kept failing \(HTTP 500 after 4 attempts"):
            api.backups(REF)

    def test_unknown_token_is_401_token_invalid_or_expired(self, server):
        token = "sbp_" + "f" * 40
        api = sa.ManagementAPI(token, base_url=server.url)
        with pytest.raises(DRError, match="token invalid or expired") as caught:
            api.project(REF)
        assert token not in str(caught.value)
        assert len(control(server, "requests")) == 1

    def test_unknown_ref_is_404(self, api):
        with pytest.raises(DRError, match="unknown project ref zzzzzzzzzzzzzzzzzzzz"):
            api.project("zzzzzzzzzzzzzzzzzzzz")


class TestCreateProject:
    """POST /v1/projects, the statuses a new project goes through, DELETE; without a sandbox a project has no
    database (tests/integration/test_sandbox.py creates real ones)."""

    def test_create_answers_201_with_the_documented_shape_and_the_project_is_listed(self, server):
        status, created = create(server)
        assert status == 201
        assert set(created) == CREATED_KEYS
        assert re.fullmatch(r"[a-z]{20}", created["ref"]) and created["id"] == created["ref"]
        assert created["status"] == "COMING_UP"
        assert (created["organization_slug"], created["organization_id"]) == ("pgdr-sandbox", "pgdr-sandbox")
        _, project = call(server, "GET", f"/v1/projects/{created['ref']}")
        assert set(project) == PROJECT_KEYS and set(project["database"]) == DATABASE_KEYS
        assert project["database"]["host"] == f"db.{created['ref']}.supabase.co"
        assert project["status"] in sa.PROJECT_STATUSES
        _, listed = call(server, "GET", "/v1/projects")
        assert created["ref"] in {p["ref"] for p in listed}
        assert all(set(p) == PROJECT_KEYS for p in listed)

    def test_status_then_services_come_up_in_order(self, server, api):
        _, created = create(server)
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not seen or seen[-1] != ("ACTIVE_HEALTHY", ("ACTIVE_HEALTHY",))):
            now = phase(server, created["ref"])
            if not seen or seen[-1] != now:
                seen.append(now)
            time.sleep(0.02)
        assert seen == [
            ("COMING_UP", ("COMING_UP",)),
            ("ACTIVE_HEALTHY", ("COMING_UP",)),
            ("ACTIVE_HEALTHY", ("ACTIVE_HEALTHY",)),
        ]
        # What the runbooks' waiter makes of it.
        assert api.wait_for(created["ref"], timeout=5, poll_interval=0.05)["status"] == "ACTIVE_HEALTHY"

    def test_the_new_project_has_api_keys_of_its_own(self, server, api):
        _, created = create(server)
        keys = api.api_keys(created["ref"], reveal=True)
        assert {k["name"] for k in keys} >= {"anon", "service_role"}
        assert all(created["ref"][:8] in k["api_key"] for k in keys)
        assert keys != api.api_keys(REF, reveal=True)

    @pytest.mark.parametrize(
        ("change", "named"),
        [
            ({"name": None}, "name"),
            ({"db_pass": None}, "db_pass"),
            ({"db_pass": ""}, "db_pass"),
            ({"region": None}, "region"),
            ({"organization_slug": None}, "organization_slug"),
        ],
    )
    def test_a_missing_field_is_a_400_naming_it_and_creates_nothing(self, server, change, named):
        body = {k: v for k, v in {**CREATE, "region": "eu-central-1", **change}.items() if v is not None}
        status, answer = call(server, "POST", "/v1/projects", body)
        assert status == 400
        assert named in answer["message"]
        assert set(control(server, "state")["projects"]) == {REF, NOPITR}

    def test_an_unknown_organization_is_a_404(self, server):
        status, answer = create(server, organization_slug="no-such-org")
        assert status == 404
        assert "no-such-org" in answer["message"]
        assert set(control(server, "state")["projects"]) == {REF, NOPITR}

    def test_the_organization_may_be_named_by_id_and_is_listed(self, server):
        _, orgs = call(server, "GET", "/v1/organizations")
        assert orgs == [{"id": "pgdr-sandbox", "slug": "pgdr-sandbox", "name": "pgdr sandbox"}]
        body = {**CREATE, "region": "eu-central-1", "organization_id": "pgdr-sandbox"}
        del body["organization_slug"]
        assert call(server, "POST", "/v1/projects", body)[0] == 201

    def test_a_read_only_token_may_read_but_not_create_delete_or_restore(self, server, api):
        reader = "sbp_" + "0123456789" * 4
        control(server, "tokens", {"token": reader, "scopes": ["read"]})
        status, answer = create(server, token=reader)
        assert status == 403
        assert "scope" in answer["message"]
        assert call(server, "DELETE", f"/v1/projects/{NOPITR}", token=reader)[0] == 403
        restore = {"recovery_time_target_unix": in_window(api)}
        assert (
            call(server, "POST", f"/v1/projects/{REF}/database/backups/restore-pitr", restore, token=reader)[0] == 403
        )
        assert set(control(server, "state")["projects"]) == {REF, NOPITR}
        assert restores(server) == []
        # Reads work, through the runbooks' client too; the default token still may write.
        assert call(server, "GET", "/v1/projects", token=reader)[0] == 200
        assert sa.ManagementAPI(reader, base_url=server.url).project(REF)["ref"] == REF
        with pytest.raises(DRError, match="HTTP 403"):
            sa.ManagementAPI(reader, base_url=server.url, backoff=0.01).restore_pitr(REF, in_window(api))
        assert create(server)[0] == 201

    def test_delete_answers_the_project_and_then_it_is_gone(self, server):
        _, created = create(server)
        status, deleted = call(server, "DELETE", f"/v1/projects/{created['ref']}")
        assert status == 200
        assert set(deleted) == {"id", "ref", "name"} and isinstance(deleted["id"], int)
        assert (deleted["ref"], deleted["name"]) == (created["ref"], CREATE["name"])
        assert call(server, "GET", f"/v1/projects/{created['ref']}")[0] == 404
        assert call(server, "GET", f"/v1/projects/{created['ref']}/api-keys")[0] == 404
        assert created["ref"] not in {p["ref"] for p in call(server, "GET", "/v1/projects")[1]}
        assert call(server, "DELETE", f"/v1/projects/{created['ref']}")[0] == 404

    def test_hang_create_keeps_a_project_coming_up_and_it_can_still_be_deleted(self, server, api):
        control(server, "switches", {"hang_create": True})
        _, created = create(server)
        time.sleep(sum(FAST.values()) + 0.3)
        assert phase(server, created["ref"]) == ("COMING_UP", ("COMING_UP",))
        with pytest.raises(DRError, match="COMING_UP"):
            api.wait_for(created["ref"], timeout=0.5, poll_interval=0.1)
        assert call(server, "DELETE", f"/v1/projects/{created['ref']}")[0] == 200

    def test_a_failed_provisioning_is_init_failed_with_unhealthy_services(self, server, api):
        control(server, "switches", {"fail_create": True})
        _, created = create(server)
        assert created["status"] == "COMING_UP"
        _, project = call(server, "GET", f"/v1/projects/{created['ref']}")
        assert project["status"] == "INIT_FAILED"
        _, health = call(server, "GET", f"/v1/projects/{created['ref']}/health?services=db,rest")
        assert {h["status"] for h in health} == {"UNHEALTHY"} and all(h["error"] for h in health)
        with pytest.raises(DRError, match="INIT_FAILED"):
            api.wait_for(created["ref"], timeout=2, poll_interval=0.05)

    def test_requests_are_logged_and_the_password_is_written_nowhere(self, server, tmp_path):
        _, created = create(server)
        call(server, "DELETE", f"/v1/projects/{created['ref']}")
        logged = control(server, "requests")
        assert [(r["method"], r["path"]) for r in logged] == [
            ("POST", "/v1/projects"),
            ("DELETE", f"/v1/projects/{created['ref']}"),
        ]
        state_file = tmp_path / "supabase-api.json"
        assert os.stat(state_file).st_mode & 0o777 == 0o600
        assert CREATE["db_pass"] not in state_file.read_text()
        assert CREATE["db_pass"] not in json.dumps(control(server, "state"))

    def test_a_restart_keeps_the_projects_and_an_interrupted_provisioning_ends_init_failed(self, server, tmp_path):
        _, ready = create(server)
        _, cut_short = create(server)
        state_file = tmp_path / "supabase-api.json"
        saved = json.loads(state_file.read_text())
        # As if the stand-in had stopped while the second project was being provisioned.
        saved["projects"][cut_short["ref"]]["provision"]["state"] = "provisioning"
        state_file.write_text(json.dumps(saved))
        again = standin.StandIn(state_file=state_file)
        assert again.project_body(again.state["projects"][ready["ref"]])["ref"] == ready["ref"]
        assert again.project_body(again.state["projects"][cut_short["ref"]])["status"] == "INIT_FAILED"
        assert "interrupted" in again.state["projects"][cut_short["ref"]]["provision"]["error"]


# -- the modules against the stand-in ---------------------------------------------------------------------------


def run_module(name, args, capsys, check_mode=False):
    spec = importlib.util.spec_from_file_location(
        f"_pgdr_it_{name}", REPO / "plugins" / "modules" / f"{name.rsplit('.', 1)[-1]}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    return exited.value.code, json.loads(capsys.readouterr().out)


def restore_args(server, target, **overrides):
    args = {
        "token": TOKEN,
        "project_ref": REF,
        "api_url": server.url,
        "target_time": str(target),
        "confirm": REF,
        "reason": "test",
        "wait_timeout": 20,
        "poll_interval": 0.05,
    }
    args.update(overrides)
    return args


class TestModules:
    def test_check_mode_reports_the_plan_and_restores_nothing(self, api, server, capsys):
        target = in_window(api)
        code, result = run_module(
            "pgdr.supabase.supabase_pitr_restore", restore_args(server, target), capsys, check_mode=True
        )
        assert code == 0, result
        assert result["changed"] is True
        assert result["target_unix"] == target
        assert result["plan"]["target"]["verdict"] == "in_range"
        assert result["window"]["earliest_unix"] <= target <= result["window"]["latest_unix"]
        assert "requested_at" not in result
        assert restores(server) == []
        assert TOKEN not in json.dumps(result)

    def test_restore_waits_until_healthy(self, api, server, capsys):
        target = in_window(api)
        code, result = run_module("pgdr.supabase.supabase_pitr_restore", restore_args(server, target), capsys)
        assert code == 0, result
        assert result["changed"] is True
        assert result["wait"]["status"] == "ACTIVE_HEALTHY"
        assert result["wait"]["timeline"][0]["status"] == "RESTORING"
        assert [r["recovery_time_target_unix"] for r in restores(server)] == [target]
        assert result["reason"] == "test"

    @pytest.mark.parametrize("check_mode", [False, True])
    def test_out_of_window_fails_early_with_the_window(self, server, capsys, check_mode):
        args = restore_args(server, "2020-01-01T00:00:00Z")
        code, result = run_module("pgdr.supabase.supabase_pitr_restore", args, capsys, check_mode=check_mode)
        assert code == 1
        assert result["error"]["step"] == "check target time"
        assert "before the earliest restorable time" in result["msg"]
        assert "choose a target_time between" in result["msg"]
        assert [r for r in control(server, "requests") if r["method"] == "POST"] == []

    def test_pitr_off_fails_in_check_mode_too(self, api, server, capsys):
        args = restore_args(server, in_window(api), project_ref=NOPITR, confirm=NOPITR)
        code, result = run_module("pgdr.supabase.supabase_pitr_restore", args, capsys, check_mode=True)
        assert code == 1
        assert "PITR is not enabled" in result["msg"]

    def test_a_project_still_restoring_is_not_restored_again(self, api, server, capsys):
        control(server, "switches", {"hang_restore": True})
        api.restore_pitr(REF, in_window(api))
        code, result = run_module("pgdr.supabase.supabase_pitr_restore", restore_args(server, in_window(api)), capsys)
        assert code == 1
        assert "is RESTORING" in result["msg"]
        assert "already running" in result["msg"]
        assert len(restores(server)) == 1

    def test_a_hung_restore_fails_with_the_escalation(self, api, server, capsys):
        control(server, "switches", {"hang_restore": True})
        args = restore_args(server, in_window(api), wait_timeout=1, poll_interval=0.1)
        code, result = run_module("pgdr.supabase.supabase_pitr_restore", args, capsys)
        assert code == 1
        assert "no API can cancel a stuck RESTORING" in result["msg"]

    def test_info_modules(self, server, capsys):
        base = {"token": TOKEN, "project_ref": REF, "api_url": server.url}
        code, info = run_module("pgdr.supabase.supabase_project_info", base, capsys, check_mode=True)
        assert code == 0
        assert info["ready"] is True
        assert info["changed"] is False
        code, backups = run_module("pgdr.supabase.supabase_backups_info", base, capsys)
        assert code == 0
        assert backups["pitr_enabled"] is True
        assert backups["window"]["latest_unix"] > backups["window"]["earliest_unix"]
        assert backups["changed"] is False


# -- the playbook, through ansible-runner ------------------------------------------------------------------------


class TestPlaybook:
    PLAYBOOK = "playbooks/supabase_pitr_restore.yml"

    def extravars(self, server, target, **more):
        return {
            "pgdr_supabase_api_url": server.url,
            "target_time": datetime.fromtimestamp(target, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "confirm": REF,
            "reason": "playbook test",
            "supabase_pitr_poll_interval": 0.1,
            "supabase_pitr_wait_timeout": 30,
            **more,
        }

    def test_check_then_real_run(self, api, server, run_playbook):
        target = in_window(api)
        before = control(server, "state")["projects"]
        checked = run_playbook(self.PLAYBOOK, self.extravars(server, target), check=True, diff=True)
        assert checked.rc == 0, checked.stdout
        assert control(server, "state")["projects"] == before
        assert "would restore project" in checked.stdout
        assert TOKEN not in checked.stdout

        real = run_playbook(self.PLAYBOOK, self.extravars(server, target))
        assert real.rc == 0, real.stdout
        assert real.changed() == 1
        [result] = real.results("pgdr.supabase.supabase_pitr_restore")
        assert result["wait"]["status"] == "ACTIVE_HEALTHY"
        assert [r["recovery_time_target_unix"] for r in restores(server)] == [target]
        assert TOKEN not in real.stdout
        assert TOKEN not in json.dumps(real.events)

    @pytest.mark.parametrize("confirm", ["", "yes", NOPITR])
    def test_wrong_confirm_fails_naming_the_value_and_restores_nothing(self, api, server, run_playbook, confirm):
        run = run_playbook(self.PLAYBOOK, self.extravars(server, in_window(api), confirm=confirm))
        assert run.rc != 0
        assert f"-e confirm={REF}" in run.stdout
        assert restores(server) == []
        assert TOKEN not in run.stdout

    def test_missing_reason_fails(self, api, server, run_playbook):
        run = run_playbook(self.PLAYBOOK, self.extravars(server, in_window(api), reason=""))
        assert run.rc != 0
        assert "needs a reason" in run.stdout
        assert restores(server) == []

    def test_backups_info_playbook_is_read_only(self, server, run_playbook):
        run = run_playbook("playbooks/supabase_backups_info.yml", {"pgdr_supabase_api_url": server.url})
        assert run.rc == 0, run.stdout
        assert run.changed() == 0
        assert "PITR window:" in run.stdout
        assert TOKEN not in run.stdout
