"""The Management API client without the stand-in: validation, window math, the retry policy, and the requests it
sends checked against the documented shapes, written out here independently of the stand-in."""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pgdr.supabase.plugins.module_utils import supabase_api as sa
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

REPO = Path(__file__).resolve().parents[2]
TOKEN = "sbp_" + "0123456789abcdef" * 2 + "01234567"
OAUTH_TOKEN = "sbp_oauth_" + "a" * 40
REF = "abcdefghijklmnopqrst"
MODULES = (
    "pgdr.supabase.supabase_project_info",
    "pgdr.supabase.supabase_backups_info",
    "pgdr.supabase.supabase_pitr_restore",
)

# -- the documented facts, written out here and not taken from the engine or the stand-in --------------------------
SPEC_TOKEN = re.compile(r"^sbp_(oauth_)?[a-f0-9]{40}$")
SPEC_HEALTH_SERVICES = "auth,db,pooler,realtime,rest,storage"


def utc(*args):
    return datetime(*args, tzinfo=UTC)


# -- validation --------------------------------------------------------------------------------------------------


class TestValidation:
    @pytest.mark.parametrize("token", [TOKEN, OAUTH_TOKEN])
    def test_well_formed_tokens_pass(self, token):
        assert sa.validate_token(token) == token

    @pytest.mark.parametrize(
        "token",
        [
            "sbp_" + "A" * 40,  # upper-case hex
            "sbp_" + "a" * 39,
            "sbp_" + "a" * 41,
            "a" * 44,
            "sbp_" + "g" * 40,
            TOKEN + "\n",  # a vault value with its newline
            " " + TOKEN,
            "sbp_oauth" + "a" * 40,
        ],
    )
    def test_malformed_tokens_fail_without_showing_the_token(self, token):
        with pytest.raises(DRError) as caught:
            sa.validate_token(token)
        text = str(caught.value)
        assert "malformed" in text
        assert caught.value.step == "check token"
        assert token.strip() not in text
        assert "40" in caught.value.hint

    @pytest.mark.parametrize("token", [None, ""])
    def test_missing_token_fails(self, token):
        with pytest.raises(DRError, match="no Management API token"):
            sa.validate_token(token)

    def test_the_client_refuses_a_malformed_token_before_any_request(self):
        with pytest.raises(DRError, match="malformed"):
            sa.ManagementAPI("sbp_nothex", base_url="http://127.0.0.1:1")

    def test_the_client_refuses_a_url_that_is_not_http(self):
        with pytest.raises(DRError, match="not an http"):
            sa.ManagementAPI(TOKEN, base_url="file:///etc/passwd")

    @pytest.mark.parametrize("ref", [REF, "z" * 20])
    def test_refs_of_20_lowercase_letters_pass(self, ref):
        assert sa.validate_ref(ref) == ref

    @pytest.mark.parametrize(
        "ref", ["a" * 19, "a" * 21, "A" * 20, "abcdefghijklmnopqrs1", "", None, "abcdefghij-klmnopqrs"]
    )
    def test_other_refs_fail_naming_the_value(self, ref):
        with pytest.raises(DRError) as caught:
            sa.validate_ref(ref)
        assert "20 lowercase letters" in str(caught.value)
        assert caught.value.subject == repr(ref)


# -- retry policy ------------------------------------------------------------------------------------------------


class TestRetryPolicy:
    @pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
    def test_throttling_and_server_errors_are_retried(self, status):
        assert sa.should_retry(status)

    @pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 409, 422, 428, 430, 600])
    def test_other_statuses_are_not(self, status):
        assert not sa.should_retry(status)

    @pytest.mark.parametrize("attempt", range(8))
    def test_backoff_is_full_jitter_within_the_exponential_bound(self, attempt):
        import random

        rng = random.Random(attempt)
        bound = min(4.0, 0.25 * 2**attempt)
        delays = [sa.retry_delay(attempt, base=0.25, cap=4.0, rng=rng.random) for _unused in range(500)]
        assert all(0 <= d <= bound for d in delays)
        # Jittered, not constant: the delays spread over the range.
        assert max(delays) > bound * 0.8
        assert min(delays) < bound * 0.2

    def test_backoff_bounds_at_the_ends_of_the_random_range(self):
        assert sa.retry_delay(3, base=0.5, cap=30, rng=lambda: 0.0) == 0.0
        assert sa.retry_delay(3, base=0.5, cap=30, rng=lambda: 1.0) == 4.0
        assert sa.retry_delay(10, base=0.5, cap=30, rng=lambda: 1.0) == 30.0

    def test_retry_after_wins_over_backoff_and_is_capped(self):
        assert sa.retry_delay(0, retry_after=7, rng=lambda: 1.0) == 7
        assert sa.retry_delay(0, retry_after=3600, max_retry_after=120) == 120

    def test_retry_after_parsing(self):
        now = utc(2026, 11, 28, 10, 0, 0)
        assert sa.parse_retry_after("5") == 5
        assert sa.parse_retry_after("Sat, 28 Nov 2026 10:00:30 GMT", now=now) == 30
        assert sa.parse_retry_after("Sat, 28 Nov 2026 09:00:00 GMT", now=now) == 0
        assert sa.parse_retry_after("soon") is None
        assert sa.parse_retry_after(None) is None


# -- target time, window and decision ----------------------------------------------------------------------------


class TestTargetAndWindow:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2026-11-28T10:15:00Z", utc(2026, 11, 28, 10, 15)),
            ("2026-11-28T11:15:00+01:00", utc(2026, 11, 28, 10, 15)),
            ("2026-11-28T10:15:00.900Z", utc(2026, 11, 28, 10, 15)),
            ("1795860900", utc(2026, 11, 28, 10, 15)),
            (1795860900, utc(2026, 11, 28, 10, 15)),
            ("1795860900.7", utc(2026, 11, 28, 10, 15)),
        ],
    )
    def test_targets_parse_to_whole_utc_seconds(self, value, expected):
        assert sa.parse_target(value) == expected

    def test_a_time_without_zone_is_refused_with_the_fix(self):
        with pytest.raises(DRError, match="no time zone") as caught:
            sa.parse_target("2026-11-28T10:15:00")
        assert "2026-11-28T10:15:00Z" in caught.value.hint

    @pytest.mark.parametrize("value", ["yesterday", "28/11/2026", None, "", True])
    def test_unreadable_targets_fail(self, value):
        with pytest.raises(DRError) as caught:
            sa.parse_target(value)
        assert caught.value.step == "check target time"

    def test_window_from_physical_backup_data_with_an_empty_backups_list(self):
        response = {
            "pitr_enabled": True,
            "walg_enabled": True,
            "backups": [],
            "physical_backup_data": {
                "earliest_physical_backup_date_unix": 1795255200,
                "latest_physical_backup_date_unix": 1795859910,
            },
        }
        assert sa.pitr_window(response) == (utc(2026, 11, 21, 10, 0), utc(2026, 11, 28, 9, 58, 30))

    @pytest.mark.parametrize(
        "response",
        [
            {"pitr_enabled": False, "backups": [], "physical_backup_data": {}},
            {"pitr_enabled": False},
            {"pitr_enabled": True, "physical_backup_data": {}},
            {"pitr_enabled": True, "physical_backup_data": None},
            {
                "pitr_enabled": True,
                "physical_backup_data": {
                    "earliest_physical_backup_date_unix": 1,
                    "latest_physical_backup_date_unix": None,
                },
            },
            None,
        ],
    )
    def test_no_window_without_pitr_or_without_data(self, response):
        assert sa.pitr_window(response) is None

    WINDOW = (utc(2026, 11, 21, 10, 0), utc(2026, 11, 28, 9, 58, 30))

    @pytest.mark.parametrize(
        ("target", "verdict"),
        [
            (utc(2026, 11, 25), "in_range"),
            (utc(2026, 11, 21, 10, 0), "in_range"),  # both bounds are included
            (utc(2026, 11, 28, 9, 58, 30), "in_range"),
            (utc(2026, 11, 28, 9, 58, 30, 999999), "in_range"),  # fractions are dropped before comparing
            (utc(2026, 11, 21, 9, 59, 59), "before_earliest"),
            (utc(2026, 11, 28, 9, 58, 31), "after_latest"),
            (utc(2026, 11, 28, 10, 0), "after_latest"),  # "now" is past the lagging upper bound
        ],
    )
    def test_decision_against_the_window(self, target, verdict):
        decision = sa.clamp_target(target, self.WINDOW)
        assert decision.verdict == verdict
        assert decision.ok is (verdict == "in_range")
        assert "2026-11-21T10:00:00Z .. 2026-11-28T09:58:30Z" in decision.message
        assert decision.target_unix == int(target.replace(microsecond=0).timestamp())

    def test_after_latest_explains_the_lag(self):
        decision = sa.clamp_target(utc(2026, 11, 28, 10, 0), self.WINDOW)
        assert "lags real time" in decision.message
        assert decision.as_dict()["latest_unix"] == 1795859910

    def test_no_window_is_its_own_verdict(self):
        decision = sa.clamp_target(utc(2026, 11, 28), None)
        assert decision.verdict == "no_window"
        assert not decision.ok

    def test_summary_lists_newest_first_and_picks_the_latest_completed(self):
        summary = sa.backups_summary(
            {
                "region": "eu-west-1",
                "pitr_enabled": False,
                "walg_enabled": True,
                "backups": [
                    {"id": 1, "status": "COMPLETED", "inserted_at": "2026-11-26T00:00:00.000Z"},
                    {"id": 3, "status": "FAILED", "inserted_at": "2026-11-28T00:00:00.000Z"},
                    {"id": 2, "status": "COMPLETED", "inserted_at": "2026-11-27T00:00:00.000Z"},
                ],
                "physical_backup_data": {},
            }
        )
        assert [b["id"] for b in summary["backups"]] == [3, 2, 1]
        assert summary["latest_backup"]["id"] == 2
        assert summary["window"] is None
        assert summary["pitr_enabled"] is False

    def test_confirmation_must_be_the_ref(self):
        sa.check_confirmation(REF, REF)
        for wrong in (None, "", "yes", REF.upper(), REF + " "):
            with pytest.raises(DRError) as caught:
                sa.check_confirmation(wrong, REF)
            assert caught.value.hint == f"to go ahead, type: -e confirm={REF}"
            assert "in place" in str(caught.value)


# -- a recording server: the raw requests, and scripted answers ---------------------------------------------------


class Recorder:
    """A tiny HTTP server that records every request and answers from a script (or spec-shaped defaults)."""

    def __init__(self):
        self.requests = []
        self.script = []  # (status, headers, body bytes), consumed in order before the defaults apply
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                return

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path, _unused, query = self.path.partition("?")
                recorder.requests.append(
                    {"method": self.command, "path": path, "query": query, "headers": dict(self.headers), "body": raw}
                )
                status, headers, body = (
                    recorder.script.pop(0) if recorder.script else recorder.default(self.command, path)
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @staticmethod
    def default(method, path):
        if method == "POST" and path.endswith("/restore-pitr"):
            return 201, {}, b""
        if method == "POST" and path.endswith("/database/query"):
            return 201, {"Content-Type": "application/json"}, b"[]"
        if path.endswith(("/health", "/api-keys", "/pooler")):
            return 200, {"Content-Type": "application/json"}, b"[]"
        return 200, {"Content-Type": "application/json"}, json.dumps({"ref": REF, "status": "ACTIVE_HEALTHY"}).encode()

    def answer(self, status, body=None, **headers):
        data = b"" if body is None else json.dumps(body).encode()
        self.script.append((status, {"Content-Type": "application/json", **headers}, data))

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.stop()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def api(recorder, sleeps):
    return sa.ManagementAPI(TOKEN, base_url=recorder.url, timeout=5, max_retries=3, sleep=sleeps.append)


class TestProjects:
    """Creating, finding and deleting projects (restore_mode new_project), on the raw requests."""

    CREATED = {"id": REF, "ref": REF, "name": "drill", "organization_slug": "acme", "status": "COMING_UP"}

    def test_create_sends_the_documented_body_once(self, api, recorder):
        recorder.answer(201, self.CREATED)
        created = api.create_project("drill", "acme", "eu-west-1", "pw-1", instance_size="small")
        assert created["ref"] == REF
        [request] = recorder.requests
        assert (request["method"], request["path"]) == ("POST", "/v1/projects")
        assert json.loads(request["body"]) == {
            "name": "drill",
            "organization_slug": "acme",
            "region": "eu-west-1",
            "db_pass": "pw-1",
            "desired_instance_size": "small",
        }

    def test_a_create_that_may_have_arrived_is_not_sent_again(self, api, recorder):
        # The POST fails with a 502 after the API made the project: the client lists the projects, finds it, and
        # takes it instead of creating a second one.
        recorder.answer(502, {"message": "bad gateway"})
        recorder.answer(200, [self.CREATED, {**self.CREATED, "name": "other", "ref": "b" * 20}])
        created = api.create_project("drill", "acme", "eu-west-1", "pw-1")
        assert created["ref"] == REF
        assert [(r["method"], r["path"]) for r in recorder.requests] == [
            ("POST", "/v1/projects"),
            ("GET", "/v1/projects"),
        ]

    def test_a_read_only_token_fails_naming_the_organization_and_that_nothing_was_created(self, api, recorder):
        recorder.answer(403, {"message": "Missing required scope: projects_write"})
        with pytest.raises(DRError) as caught:
            api.create_project("drill", "acme", "eu-west-1", "pw-1")
        text = str(caught.value)
        assert "not allowed to create a project" in text and "projects_write" in text
        assert "organization acme" in caught.value.hint and "nothing was created" in caught.value.hint
        assert len(recorder.requests) == 1

    def test_delete_is_done_when_the_project_is_gone(self, api, recorder):
        recorder.answer(200, {"id": REF, "ref": REF, "name": "drill"})
        recorder.answer(404, {"message": "Project not found"})
        assert api.delete_project(REF) is True
        assert api.delete_project(REF) is False
        assert [(r["method"], r["path"]) for r in recorder.requests] == [("DELETE", f"/v1/projects/{REF}")] * 2

    def test_two_projects_of_one_name_are_refused(self, api, recorder):
        recorder.answer(200, [self.CREATED, {**self.CREATED, "ref": "b" * 20}])
        with pytest.raises(DRError) as caught:
            api.find_project("drill", "acme")
        assert REF in str(caught.value) and "b" * 20 in str(caught.value)


class TestRequestShapes:
    """What the client sends, against the documented facts, not against the stand-in."""

    def check_common(self, request):
        headers = {k.lower(): v for k, v in request["headers"].items()}
        scheme, _unused, token = headers["authorization"].partition(" ")
        assert scheme == "Bearer"
        assert SPEC_TOKEN.match(token)
        assert headers["accept"] == "application/json"
        return headers

    def test_every_endpoint(self, api, recorder):
        api.project(REF)
        api.health(REF)
        api.backups(REF)
        api.restore_pitr(REF, 1795859910)
        api.api_keys(REF, reveal=True)
        api.api_keys(REF)
        api.pooler_config(REF)
        api.query(REF, "select 1")
        seen = [(r["method"], r["path"], r["query"]) for r in recorder.requests]
        assert seen == [
            ("GET", f"/v1/projects/{REF}", ""),
            ("GET", f"/v1/projects/{REF}/health", f"services={SPEC_HEALTH_SERVICES}"),
            ("GET", f"/v1/projects/{REF}/database/backups", ""),
            ("POST", f"/v1/projects/{REF}/database/backups/restore-pitr", ""),
            ("GET", f"/v1/projects/{REF}/api-keys", "reveal=true"),
            ("GET", f"/v1/projects/{REF}/api-keys", "reveal=false"),
            ("GET", f"/v1/projects/{REF}/config/database/pooler", ""),
            ("POST", f"/v1/projects/{REF}/database/query", ""),
        ]
        for request in recorder.requests:
            headers = self.check_common(request)
            if request["method"] == "GET":
                assert request["body"] == b""
            else:
                assert headers["content-type"] == "application/json"

    def test_restore_body_is_exactly_the_integer_target(self, api, recorder):
        assert api.restore_pitr(REF, 1795859910) == 201
        body = json.loads(recorder.requests[0]["body"])
        assert body == {"recovery_time_target_unix": 1795859910}
        # An int, not a bool (bool is a subclass of int).
        assert isinstance(body["recovery_time_target_unix"], int)
        assert not isinstance(body["recovery_time_target_unix"], bool)

    @pytest.mark.parametrize("target", [1795859910.5, "1795859910", True, None])
    def test_restore_refuses_a_target_that_is_not_an_int_before_sending(self, api, recorder, target):
        with pytest.raises(DRError, match="integer"):
            api.restore_pitr(REF, target)
        assert recorder.requests == []

    def test_query_body_is_exactly_the_sql(self, api, recorder):
        assert api.query(REF, "select version()") == []
        assert json.loads(recorder.requests[0]["body"]) == {"query": "select version()"}

    def test_health_of_a_subset_and_unknown_services(self, api, recorder):
        api.health(REF, ["db", "rest"])
        assert recorder.requests[0]["query"] == "services=db,rest"
        with pytest.raises(DRError, match="unknown health service"):
            api.health(REF, ["db", "graphql"])
        assert len(recorder.requests) == 1

    def test_a_bad_ref_sends_nothing(self, api, recorder):
        with pytest.raises(DRError, match="20 lowercase letters"):
            api.backups("Not-A-Ref")
        assert recorder.requests == []

    def test_api_key_values_are_masked_unless_revealed(self, api, recorder):
        keys = [{"name": "service_role", "api_key": "eyJhbGciOiJIUzI1NiJ9.secretpart", "type": "legacy"}]
        recorder.answer(200, keys)
        recorder.answer(200, keys)
        masked = api.api_keys(REF)
        assert "secretpart" not in json.dumps(masked)
        assert masked[0]["name"] == "service_role"
        assert api.api_keys(REF, reveal=True)[0]["api_key"] == keys[0]["api_key"]


class TestRetriesAgainstScriptedAnswers:
    def test_429_is_retried_honouring_retry_after(self, api, recorder, sleeps):
        recorder.answer(429, {"message": "Too many requests"}, **{"Retry-After": "7"})
        assert api.project(REF)["status"] == "ACTIVE_HEALTHY"
        assert len(recorder.requests) == 2
        assert sleeps == [7.0]

    def test_429_without_retry_after_uses_jittered_backoff(self, recorder, sleeps):
        api = sa.ManagementAPI(TOKEN, base_url=recorder.url, backoff=0.5, sleep=sleeps.append, rng=lambda: 1.0)
        for _unused in range(3):
            recorder.answer(429, {"message": "Too many requests"})
        api.project(REF)
        assert sleeps == [0.5, 1.0, 2.0]

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_5xx_is_retried(self, api, recorder, status):
        recorder.answer(status, {"message": "boom"})
        recorder.answer(status, {"message": "boom"})
        api.backups(REF)
        assert len(recorder.requests) == 3

    @pytest.mark.parametrize("status", [400, 403, 409, 422])
    def test_other_4xx_are_not_retried(self, api, recorder, sleeps, status):
        recorder.answer(status, {"message": "nope"})
        with pytest.raises(DRError, match=f"HTTP {status}"):
            api.project(REF)
        assert len(recorder.requests) == 1
        assert sleeps == []

    def test_429_that_persists_ends_with_the_rate_limit_message(self, api, recorder):
        for _unused in range(4):
            recorder.answer(429, {"message": "Too many requests"}, **{"Retry-After": "60"})
        with pytest.raises(DRError) as caught:
            api.project(REF)
        assert len(recorder.requests) == 4  # the first try and max_retries=3 retries
        assert "rate limit" in str(caught.value)
        assert "60 requests per minute" in str(caught.value)
        assert "wait a minute" in caught.value.hint

    def test_5xx_that_persists_names_the_status(self, api, recorder):
        for _unused in range(4):
            recorder.answer(503, {"message": "upstream down"})
        with pytest.raises(DRError, match=r"kept failing \(HTTP 503 after 4 attempts: upstream down\)"):
            api.project(REF)

    def test_401_says_token_invalid_or_expired_and_never_prints_it(self, api, recorder):
        recorder.answer(401, {"message": f"bad token {TOKEN}"})
        with pytest.raises(DRError) as caught:
            api.project(REF)
        text = str(caught.value)
        assert "token invalid or expired" in text
        assert "Access Tokens" in caught.value.hint
        assert TOKEN not in text
        assert len(recorder.requests) == 1

    def test_404_names_the_unknown_ref(self, api, recorder):
        recorder.answer(404, {"message": "Project not found"})
        with pytest.raises(DRError, match=f"unknown project ref {REF}"):
            api.project(REF)

    def test_400_pitr_not_enabled(self, api, recorder):
        recorder.answer(400, {"message": "PITR is not enabled for this project."})
        with pytest.raises(DRError) as caught:
            api.restore_pitr(REF, 1795859910)
        assert "PITR is not enabled" in str(caught.value)
        assert "add-on" in caught.value.hint
        assert len(recorder.requests) == 1

    def test_400_out_of_range_keeps_the_servers_window(self, api, recorder):
        recorder.answer(400, {"message": "Recovery time target must be within range: 1 <= t <= 2"})
        with pytest.raises(DRError, match=r"outside the PITR window.*1 <= t <= 2") as caught:
            api.restore_pitr(REF, 5)
        assert "target_time" in caught.value.hint

    def test_unreachable_api_names_the_url(self, sleeps):
        api = sa.ManagementAPI(TOKEN, base_url="http://127.0.0.1:1", timeout=2, max_retries=1, sleep=sleeps.append)
        with pytest.raises(DRError, match=r"cannot reach the Management API at http://127.0.0.1:1 after 2 attempt"):
            api.project(REF)
        assert len(sleeps) == 1

    def test_restore_is_not_sent_twice_when_the_first_one_got_through(self, api, recorder):
        recorder.answer(502, {"message": "bad gateway"})
        recorder.answer(200, {"ref": REF, "status": "RESTORING"})
        assert api.restore_pitr(REF, 1795859910) == 201
        assert [r["method"] for r in recorder.requests] == ["POST", "GET"]

    def test_restore_is_sent_again_when_the_project_did_not_start_restoring(self, api, recorder):
        recorder.answer(502, {"message": "bad gateway"})
        recorder.answer(200, {"ref": REF, "status": "ACTIVE_HEALTHY"})
        assert api.restore_pitr(REF, 1795859910) == 201
        assert [r["method"] for r in recorder.requests] == ["POST", "GET", "POST"]

    def test_non_json_answer_says_where_to_look(self, api, recorder):
        recorder.script.append((200, {"Content-Type": "text/html"}, b"<html>hello</html>"))
        with pytest.raises(DRError, match="not JSON"):
            api.project(REF)


# -- waiting, with a fake API and a fake clock -------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Scripted(sa.ManagementAPI):
    """Statuses by time: a list of (from_second, project status, services status)."""

    def __init__(self, phases, clock):
        super().__init__(TOKEN, base_url="http://127.0.0.1:1", sleep=clock.sleep)
        self.phases = phases
        self.clock = clock

    def _phase(self):
        return [p for p in self.phases if p[0] <= self.clock.now][-1]

    def project(self, ref):
        return {"ref": ref, "status": self._phase()[1]}

    def health(self, ref, services=sa.HEALTH_SERVICES):
        return [{"name": s, "status": self._phase()[2]} for s in services]


class TestWaitFor:
    def test_waits_through_restoring_and_coming_up_services(self):
        clock = FakeClock()
        api = Scripted(
            [
                (0, "RESTORING", "COMING_UP"),
                (30, "COMING_UP", "COMING_UP"),
                (50, "ACTIVE_HEALTHY", "COMING_UP"),
                (70, "ACTIVE_HEALTHY", "ACTIVE_HEALTHY"),
            ],
            clock,
        )
        done = api.wait_for(REF, timeout=300, poll_interval=10, clock=clock)
        assert done["elapsed"] == 70
        assert [e["status"] for e in done["timeline"]] == ["RESTORING", "COMING_UP", "ACTIVE_HEALTHY", "ACTIVE_HEALTHY"]

    def test_stuck_restoring_escalates_at_the_deadline(self):
        clock = FakeClock()
        api = Scripted([(0, "RESTORING", "COMING_UP")], clock)
        with pytest.raises(DRError) as caught:
            api.wait_for(REF, timeout=60, poll_interval=10, clock=clock)
        assert "still RESTORING after 60 s" in str(caught.value)
        assert caught.value.hint == sa.STUCK_RESTORING
        assert "support ticket" in str(caught.value)
        assert clock.now == 60

    def test_services_that_stay_down_are_named_at_the_deadline(self):
        clock = FakeClock()
        api = Scripted([(0, "ACTIVE_HEALTHY", "UNHEALTHY")], clock)
        with pytest.raises(DRError, match="services are not healthy after 30 s: auth=UNHEALTHY"):
            api.wait_for(REF, timeout=30, poll_interval=10, clock=clock)

    def test_restore_failed_stops_at_once(self):
        clock = FakeClock()
        api = Scripted([(0, "RESTORING", "COMING_UP"), (20, "RESTORE_FAILED", "UNHEALTHY")], clock)
        with pytest.raises(DRError, match="RESTORE_FAILED; waiting will not change that"):
            api.wait_for(REF, timeout=600, poll_interval=10, clock=clock)
        assert clock.now == 20

    def test_a_healthy_read_before_the_restore_shows_up_is_not_the_end(self):
        clock = FakeClock()
        api = Scripted(
            [
                (0, "ACTIVE_HEALTHY", "ACTIVE_HEALTHY"),
                (5, "RESTORING", "COMING_UP"),
                (40, "ACTIVE_HEALTHY", "ACTIVE_HEALTHY"),
            ],
            clock,
        )
        done = api.wait_for(REF, timeout=300, poll_interval=5, expect_transition_within=60, clock=clock)
        assert done["elapsed"] == 40
        assert [e["status"] for e in done["timeline"]] == ["ACTIVE_HEALTHY", "RESTORING", "ACTIVE_HEALTHY"]

    def test_without_any_transition_the_grace_period_ends_the_wait(self):
        clock = FakeClock()
        api = Scripted([(0, "ACTIVE_HEALTHY", "ACTIVE_HEALTHY")], clock)
        done = api.wait_for(REF, timeout=300, poll_interval=5, expect_transition_within=20, clock=clock)
        assert done["elapsed"] == 20


# -- the modules, without a server -------------------------------------------------------------------------------


def load_module(name):
    spec = importlib.util.spec_from_file_location(
        f"_pgdr_sb_{name}", REPO / "plugins" / "modules" / f"{name.rsplit('.', 1)[-1]}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_module(name, args, capsys, check_mode=False):
    module = load_module(name)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    return exited.value.code, json.loads(capsys.readouterr().out)


class _Captured(Exception):
    pass


def argument_spec_of(name):
    module = load_module(name)
    captured = {}

    def capture(argument_spec, **kwargs):
        captured.update(spec=argument_spec, kwargs=kwargs)
        raise _Captured

    module.AnsibleModule = capture
    with pytest.raises(_Captured):
        module.main()
    return captured["spec"], captured["kwargs"]


class TestModules:
    @pytest.mark.parametrize("name", [*MODULES, "pgdr.supabase.supabase_project"])
    def test_the_token_is_no_log(self, name):
        """Docs against the spec: validate-modules (make sanity). Here: the token is no_log=True."""
        spec, kwargs = argument_spec_of(name)
        assert kwargs["supports_check_mode"] is True
        assert spec["token"]["no_log"] is True

    @pytest.mark.parametrize("check_mode", [False, True])
    @pytest.mark.parametrize("confirm", [None, "yes", "abcdefghijklmnopqrsx"])
    def test_restore_without_the_right_confirmation_fails_before_any_call(self, capsys, check_mode, confirm):
        args = {
            "token": TOKEN,
            "project_ref": REF,
            "target_time": "2026-11-28T10:00:00Z",
            "api_url": "http://127.0.0.1:1",
        }
        if confirm is not None:
            args["confirm"] = confirm
        code, result = run_module("pgdr.supabase.supabase_pitr_restore", args, capsys, check_mode=check_mode)
        assert code == 1
        assert result["error"]["step"] == "confirm restore"
        assert f"-e confirm={REF}" in result["msg"]
        assert TOKEN not in json.dumps(result)

    def test_restore_with_a_bad_target_fails_before_the_confirmation(self, capsys):
        args = {"token": TOKEN, "project_ref": REF, "target_time": "2026-11-28 10:00", "confirm": REF}
        code, result = run_module("pgdr.supabase.supabase_pitr_restore", args, capsys)
        assert code == 1
        assert result["error"]["step"] == "check target time"

    @pytest.mark.parametrize("name", MODULES)
    def test_malformed_token_fails_without_showing_it(self, capsys, name):
        token = "sbp_" + "Z" * 40
        args = {"token": token, "project_ref": REF, "api_url": "http://127.0.0.1:1"}
        if name == "pgdr.supabase.supabase_pitr_restore":
            args.update(target_time="1795859910", confirm=REF)
        code, result = run_module(name, args, capsys)
        assert code == 1
        assert result["error"]["step"] == "check token"
        assert token not in json.dumps(result)

    @pytest.mark.parametrize("name", MODULES)
    def test_unreachable_api_fails_naming_the_url(self, capsys, name, monkeypatch):
        monkeypatch.setattr(sa.time, "sleep", lambda s: None)
        args = {"token": TOKEN, "project_ref": REF, "api_url": "http://127.0.0.1:1", "timeout": 1}
        if name == "pgdr.supabase.supabase_pitr_restore":
            args.update(target_time=str(int((datetime.now(UTC) - timedelta(hours=1)).timestamp())), confirm=REF)
        code, result = run_module(name, args, capsys)
        assert code == 1
        assert "cannot reach the Management API at http://127.0.0.1:1" in result["msg"]
        assert TOKEN not in json.dumps(result)
