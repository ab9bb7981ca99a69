#!/usr/bin/env python3
"""A local stand-in for the Supabase Management API (v1), answering the documented shapes for the
endpoints the runbooks use, so that the hosted-Supabase paths run on one machine without an account.

    python scripts/supabase_api_standin.py --port 54380 [--state FILE] [--speed 1.0] [--sandbox DIR --db-port 5432]

Projects live in memory, and in FILE (JSON, mode 600) when --state is given: loaded at start, written after each
change. A new state holds the sandbox's fake token, one organization (slug `pgdr-sandbox`) and two projects, one
with PITR on and one without (see DEFAULT_*).

POST /v1/projects creates a project: COMING_UP while it is provisioned and for `timings.coming_up` seconds after,
then ACTIVE_HEALTHY, its services COMING_UP for `timings.services` seconds more; INIT_FAILED when provisioning
fails. With --sandbox, provisioning makes a real PostgreSQL server (scripts/sandboxlib/projects.py) reached at the
project's `database.host` on --db-port, database `postgres`, user `postgres`, password the POST's db_pass; without
it a project has no database (`db.<ref>.supabase.co`) and is provisioned at once. DELETE /v1/projects/{ref}
stops and removes the server.

A restore moves the project through RESTORING -> COMING_UP -> ACTIVE_HEALTHY on a timer; its services stay
COMING_UP for a while after that. Switches for tests, under /_standin/ (never part of the API):

    GET  /_standin/state                 the whole state (projects, restores, switches, request count)
    GET  /_standin/requests              the API requests received (method, path, query)
    POST /_standin/switches              {"throttle_next": N, "retry_after": S, "fail_next": N, "fail_status": 500,
                                          "rate_limit": N-per-minute or null, "hang_restore": bool,
                                          "hang_create": bool (new projects stay COMING_UP),
                                          "fail_create": bool (new projects end INIT_FAILED),
                                          "timings": {"restoring": s, "coming_up": s, "services": s}}
    POST /_standin/tokens                {"token": ..., "scopes": ["read"] | null} adds a token; a token whose
                                          scopes lack "write" gets 403 on every request but GET
    POST /_standin/projects              {"ref": ..., "pitr_enabled": ..., ...} adds or updates a project
    POST /_standin/reset                 back to the default world
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import string
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

# The sandbox's fake token: well-formed (sbp_ + 40 lowercase hex digits), accepted only here.
DEFAULT_TOKEN = "sbp_" + "5a17e1" + "0" * 34
DEFAULT_PITR_REF = "pgdrsandboxprojpitra"
DEFAULT_NOPITR_REF = "pgdrsandboxprojnopit"
SERVICES = ("auth", "db", "pooler", "realtime", "rest", "storage")
DEFAULT_TIMINGS = {"restoring": 3.0, "coming_up": 2.0, "services": 2.0}
DEFAULT_ORGANIZATION = {"id": "pgdr-sandbox", "slug": "pgdr-sandbox", "name": "pgdr sandbox"}
# A token's scopes: without "write" it may only read (GET).
WRITE_SCOPE = "write"
# The upper bound of the PITR window lags real time (WAL is archived every 2 minutes).
LATEST_LAG_SECONDS = 90
PITR_DAYS = 7


def _iso(unix):
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def new_project(ref, name, pitr_enabled=True, now=None, internal_id=None, **extra):
    now = int(now or time.time())
    project = {
        "id": ref,
        "internal_id": internal_id,
        "ref": ref,
        "name": name,
        "region": "eu-central-1",
        "organization_id": DEFAULT_ORGANIZATION["id"],
        "organization_slug": DEFAULT_ORGANIZATION["slug"],
        "created_at": _iso(now - 30 * 86400),
        "status": "ACTIVE_HEALTHY",
        "database": {
            "host": f"db.{ref}.supabase.co",
            "version": "15.8.1.085",
            "postgres_engine": "15",
            "release_channel": "ga",
        },
        "pitr_enabled": pitr_enabled,
        "walg_enabled": True,
        "pitr_earliest_unix": now - PITR_DAYS * 86400,
        # Daily backups; with PITR on the API may list none and give the window instead.
        "daily_backups": [] if pitr_enabled else [now - d * 86400 for d in range(1, 4)],
        "restores": [],
        "query_rows": [],
    }
    project.update(extra)
    return project


def new_ref():
    """A project ref: 20 lowercase letters."""
    return "".join(secrets.choice(string.ascii_lowercase) for _unused in range(20))


def default_state():
    return {
        "tokens": [DEFAULT_TOKEN],
        # token -> scopes; a token not listed may do everything.
        "token_scopes": {},
        "organizations": [dict(DEFAULT_ORGANIZATION)],
        "next_internal_id": 3,
        "projects": {
            DEFAULT_PITR_REF: new_project(DEFAULT_PITR_REF, "pgdr sandbox (PITR)", pitr_enabled=True, internal_id=1),
            DEFAULT_NOPITR_REF: new_project(
                DEFAULT_NOPITR_REF, "pgdr sandbox (no PITR)", pitr_enabled=False, internal_id=2
            ),
        },
        "switches": {
            "throttle_next": 0,
            "retry_after": 1,
            "fail_next": 0,
            "fail_status": 500,
            "rate_limit": None,
            "hang_restore": False,
            "hang_create": False,
            "fail_create": False,
            "timings": dict(DEFAULT_TIMINGS),
        },
    }


def _upgrade(state):
    """Fields added since a state file was written (a sandbox made before project creation existed)."""
    fresh = default_state()
    for key in ("token_scopes", "organizations", "next_internal_id"):
        state.setdefault(key, fresh[key])
    for key, value in fresh["switches"].items():
        state["switches"].setdefault(key, value)
    for number, project in enumerate(sorted(state["projects"].values(), key=lambda p: p["ref"]), start=1):
        project.setdefault("id", project["ref"])
        project.setdefault("internal_id", number)
        project.setdefault("organization_id", DEFAULT_ORGANIZATION["id"])
    state["next_internal_id"] = max(state["next_internal_id"], len(state["projects"]) + 1)
    return state


class StandIn:
    """The state and behaviour behind the HTTP handler; thread-safe.

    provisioner: None (projects have no database), or an object with plan(ref) -> cluster, provision(ref,
    cluster, db_pass), resume(ref, cluster), remove(ref, cluster), close() (sandboxlib.projects.Provisioner).
    """

    def __init__(self, state_file=None, speed=1.0, clock=time.time, provisioner=None):
        self.state_file = Path(state_file) if state_file else None
        self.speed = speed
        self.clock = clock
        self.provisioner = provisioner
        self.lock = threading.RLock()
        self.requests = []
        self.calls = []  # time of every API call, for the per-minute rate limit
        self.blocked_until = 0.0
        self.workers = {}  # ref -> the thread provisioning it
        if self.state_file and self.state_file.exists():
            self.state = _upgrade(json.loads(self.state_file.read_text()))
            self._resume()
        else:
            self.state = default_state()
        self.save()

    def save(self):
        if self.state_file:
            # Mode 600: the state holds the provisioned clusters' superuser and platform passwords.
            tmp = self.state_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.state, indent=1, sort_keys=True))
            os.chmod(tmp, 0o600)
            tmp.replace(self.state_file)

    def _resume(self):
        """After a restart: provisioned clusters are started again; a provisioning cut short cannot finish (the
        db_pass was never stored), so that project ends INIT_FAILED."""
        for ref, project in self.state["projects"].items():
            provision = project.get("provision")
            if not provision:
                continue
            if provision["state"] == "provisioning":
                provision.update(state="failed", error="provisioning was interrupted by a stand-in restart")
            elif provision["state"] == "ready" and project.get("cluster") and self.provisioner:
                try:
                    self.provisioner.resume(ref, project["cluster"])
                    provision.pop("unhealthy", None)
                except Exception as exc:  # reported as the project's health
                    provision["unhealthy"] = _short(exc)
                    print(f"project {ref}: could not start its database: {_short(exc)}", flush=True)

    def close(self):
        for thread in list(self.workers.values()):
            thread.join(timeout=60)
        if self.provisioner:
            self.provisioner.close()

    # -- time-driven status ----------------------------------------------------------------------------------

    def _timings(self):
        return {**DEFAULT_TIMINGS, **(self.state["switches"].get("timings") or {})}

    def _phase(self, project):
        """(project status, services status) now, from the last restore's start (or the project's provisioning)
        and the timings."""
        restores = project.get("restores") or []
        if not restores:
            return self._creation_phase(project)
        restoring = self._timings()["restoring"]
        elapsed = (self.clock() - restores[-1]["requested_at"]) * self.speed
        if restores[-1].get("hang") or elapsed < restoring:
            return "RESTORING", "COMING_UP"
        return self._settling(elapsed - restoring)

    def _settling(self, elapsed):
        """After a restore or a provisioning ended: COMING_UP, then ACTIVE_HEALTHY with the services still
        COMING_UP, then all healthy."""
        timings = self._timings()
        if elapsed < timings["coming_up"]:
            return "COMING_UP", "COMING_UP"
        if elapsed < timings["coming_up"] + timings["services"]:
            return "ACTIVE_HEALTHY", "COMING_UP"
        return "ACTIVE_HEALTHY", "ACTIVE_HEALTHY"

    def _creation_phase(self, project):
        provision = project.get("provision")
        if not provision:
            return project["status"], "ACTIVE_HEALTHY"
        if provision["state"] == "failed":
            return "INIT_FAILED", "UNHEALTHY"
        if provision.get("hang") or provision["state"] != "ready":
            return "COMING_UP", "COMING_UP"
        if provision.get("unhealthy"):
            return "ACTIVE_UNHEALTHY", "UNHEALTHY"
        return self._settling((self.clock() - provision["ready_at"]) * self.speed)

    def window(self, project):
        now = int(self.clock())
        return project["pitr_earliest_unix"], now - LATEST_LAG_SECONDS

    # -- API answers -----------------------------------------------------------------------------------------

    def gate(self, method, headers):
        """Switches and auth, in the order a real gateway applies them; (status, body, extra headers) or None."""
        switches = self.state["switches"]
        now = self.clock()
        if switches.get("throttle_next", 0) > 0:
            switches["throttle_next"] -= 1
            return 429, {"message": "Too many requests"}, {"Retry-After": str(switches.get("retry_after", 1))}
        limit = switches.get("rate_limit")
        if limit:
            if now < self.blocked_until:
                wait = max(1, math.ceil(self.blocked_until - now))
                return 429, {"message": "Too many requests"}, {"Retry-After": str(wait)}
            self.calls = [t for t in self.calls if now - t < 60] + [now]
            if len(self.calls) > limit:
                self.blocked_until = now + 60
                return 429, {"message": "Too many requests"}, {"Retry-After": "60"}
        if switches.get("fail_next", 0) > 0:
            switches["fail_next"] -= 1
            return switches.get("fail_status", 500), {"message": "Internal server error"}, {}
        return self._auth(method, headers)

    def _auth(self, method, headers):
        """401 for an unknown token; 403 for a read-only one on anything but GET."""
        auth = headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if token not in self.state["tokens"]:
            return 401, {"message": "Unauthorized"}, {}
        scopes = self.state.get("token_scopes", {}).get(token)
        if method != "GET" and scopes is not None and WRITE_SCOPE not in scopes:
            return (
                403,
                {"message": f"Your access token does not have the required scope ({WRITE_SCOPE}) for {method}"},
                {},
            )
        return None

    def handle(self, method, path, query, headers, body):
        with self.lock:
            self.requests.append({"method": method, "path": path, "query": query})
            gated = self.gate(method, headers)
            if gated:
                return gated
            parts = path.strip("/").split("/")
            top = {
                ("GET", "v1/organizations"): lambda: (200, [dict(o) for o in self.state["organizations"]], {}),
                # Every project the token sees (the CLI's `projects list` and ref lookups).
                ("GET", "v1/projects"): lambda: (
                    200,
                    [self.project_body(p) for _unused, p in sorted(self.state["projects"].items())],
                    {},
                ),
                ("POST", "v1/projects"): lambda: self.create(body),
            }
            if (method, "/".join(parts)) in top:
                return top[(method, "/".join(parts))]()
            # /v1/projects/{ref}[/...]
            if len(parts) < 3 or parts[:2] != ["v1", "projects"]:
                return 404, {"message": "Not found"}, {}
            project = self.state["projects"].get(parts[2])
            if project is None:
                return 404, {"message": "Project not found"}, {}
            rest = "/".join(parts[3:])
            if (method, rest) != ("DELETE", ""):
                return self._project_route(project, method, rest, query, body)
            project = self.state["projects"].pop(parts[2])
            self.save()
        # DELETE, outside the lock: the project is gone from the API; its database is stopped and removed
        # (after its provisioning, if that still runs) before the answer.
        return self.delete(project)

    def _project_route(self, project, method, rest, query, body):
        routes = {
            ("GET", ""): lambda: (200, self.project_body(project), {}),
            ("GET", "health"): lambda: self.health(project, query),
            ("GET", "database/backups"): lambda: (200, self.backups_body(project), {}),
            ("POST", "database/backups/restore-pitr"): lambda: self.restore(project, body),
            ("GET", "api-keys"): lambda: (200, self.api_keys(project, query), {}),
            ("GET", "config/database/pooler"): lambda: (200, self.pooler(project), {}),
            ("POST", "database/query"): lambda: self.query(project, body),
        }
        route = routes.get((method, rest))
        return route() if route else (404, {"message": "Not found"}, {})

    def create(self, body):
        """POST /v1/projects: validate, record the project COMING_UP, provision it in a thread."""
        if not isinstance(body, dict) or body.get("_unparsable"):
            return 400, {"message": "the body must be a JSON object"}, {}
        for field in ("name", "db_pass", "region"):
            if not isinstance(body.get(field), str) or not body[field].strip():
                return 400, {"message": f"{field} is required and must be a non-empty string"}, {}
        slug = body.get("organization_slug") or body.get("organization_id")
        if not isinstance(slug, str) or not slug:
            return 400, {"message": "organization_slug (or organization_id) is required"}, {}
        organization = next((o for o in self.state["organizations"] if slug in (o["id"], o.get("slug"))), None)
        if organization is None:
            return 404, {"message": f"Organization {slug} not found"}, {}
        ref = new_ref()
        while ref in self.state["projects"]:
            ref = new_ref()
        now = self.clock()
        switches = self.state["switches"]
        project = new_project(
            ref,
            body["name"],
            pitr_enabled=False,
            now=now,
            internal_id=self._next_id(),
            region=body["region"],
            organization_id=organization["id"],
            organization_slug=organization.get("slug", organization["id"]),
            created_at=_iso(now),
            status="COMING_UP",
            daily_backups=[],
            provision={"state": "provisioning", "hang": bool(switches.get("hang_create"))},
        )
        project["pitr_earliest_unix"] = int(now)
        if body.get("desired_instance_size"):
            project["desired_instance_size"] = body["desired_instance_size"]
        if switches.get("fail_create"):
            project["provision"].update(state="failed", error="provisioning failed (the fail_create switch)")
        elif self.provisioner is None:
            project["provision"].update(state="ready", ready_at=now)
        else:
            try:
                project["cluster"] = self.provisioner.plan(ref)
            except Exception as exc:  # the project says why
                project["provision"].update(state="failed", error=_short(exc))
            else:
                project["database"]["host"] = project["cluster"]["host"]
                worker = threading.Thread(
                    target=self._provision, args=(ref, project["cluster"], body["db_pass"]), daemon=True
                )
                self.workers[ref] = worker
                worker.start()
        self.state["projects"][ref] = project
        self.save()
        keys = ("id", "ref", "organization_id", "organization_slug", "name", "region", "created_at")
        return 201, {**{k: project[k] for k in keys}, "status": "COMING_UP"}, {}

    def _provision(self, ref, cluster, db_pass):
        started = self.clock()
        try:
            self.provisioner.provision(ref, cluster, db_pass)
            outcome = {"state": "ready", "ready_at": self.clock()}
        except Exception as exc:  # INIT_FAILED, with the reason
            outcome = {"state": "failed", "error": _short(exc)}
        outcome["seconds"] = round(self.clock() - started, 2)
        with self.lock:
            project = self.state["projects"].get(ref)
            if project is not None:  # not deleted meanwhile
                project["provision"].update(outcome)
                self.save()
            self.workers.pop(ref, None)
        print(f"project {ref}: provisioning {outcome['state']} in {outcome['seconds']} s", flush=True)

    def delete(self, project):
        ref = project["ref"]
        worker = self.workers.get(ref)
        if worker is not None:
            worker.join()
        if project.get("cluster") and self.provisioner is not None:
            self.provisioner.remove(ref, project["cluster"])
        return 200, {"id": project["internal_id"], "ref": ref, "name": project["name"]}, {}

    def query(self, project, body):
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return 400, {"message": "query is required"}, {}
        return 201, project.get("query_rows") or [], {}

    def project_body(self, project):
        status, _services = self._phase(project)
        keys = ("id", "ref", "organization_id", "organization_slug", "name", "region", "created_at", "database")
        return {**{k: project[k] for k in keys}, "status": status}

    def health(self, project, query):
        names = ",".join(query.get("services", [])).split(",") if query.get("services") else []
        names = [n for n in names if n]
        if not names or set(names) - set(SERVICES):
            return 400, {"message": "services must be a list of: " + ", ".join(SERVICES)}, {}
        _status, services = self._phase(project)
        if services == "UNHEALTHY":
            provision = project.get("provision") or {}
            error = provision.get("error") or provision.get("unhealthy") or "unhealthy"
            return 200, [{"name": n, "status": services, "error": error} for n in names], {}
        return 200, [{"name": n, "status": services} for n in names], {}

    def backups_body(self, project):
        earliest, latest = self.window(project)
        backups = [
            {"id": i + 1, "is_physical_backup": True, "status": "COMPLETED", "inserted_at": _iso(t)}
            for i, t in enumerate(project.get("daily_backups") or [])
        ]
        return {
            "region": project["region"],
            "walg_enabled": project.get("walg_enabled", True),
            "pitr_enabled": project["pitr_enabled"],
            "backups": backups,
            "physical_backup_data": {
                "earliest_physical_backup_date_unix": earliest,
                "latest_physical_backup_date_unix": latest,
            }
            if project["pitr_enabled"]
            else {},
        }

    def restore(self, project, body):
        if not project["pitr_enabled"]:
            return 400, {"message": "PITR is not enabled for this project."}, {}
        target = body.get("recovery_time_target_unix") if isinstance(body, dict) else None
        if isinstance(target, bool) or not isinstance(target, int):
            return 400, {"message": "recovery_time_target_unix must be an integer"}, {}
        earliest, latest = self.window(project)
        if not earliest <= target <= latest:
            return 400, {"message": f"Recovery time target must be within range: {earliest} <= t <= {latest}"}, {}
        project["restores"].append(
            {
                "recovery_time_target_unix": target,
                "requested_at": self.clock(),
                "hang": bool(self.state["switches"].get("hang_restore")),
            }
        )
        self.save()
        return 201, None, {}

    def api_keys(self, project, query):
        reveal = (query.get("reveal") or ["false"])[0] == "true"
        ref = project["ref"]
        secret = f"sb_secret_{ref[:8]}standinsecretvalue"
        return [
            {"name": "anon", "api_key": f"eyJstandin.{ref}.anon", "type": "legacy"},
            {"name": "service_role", "api_key": f"eyJstandin.{ref}.service_role", "type": "legacy"},
            {"name": "default", "api_key": f"sb_publishable_{ref[:8]}standin", "type": "publishable"},
            {"name": "default", "api_key": secret if reveal else secret[:14] + "··········", "type": "secret"},
        ]

    def pooler(self, project):
        ref = project["ref"]
        host = f"aws-0-{project['region']}.pooler.supabase.com"
        return [
            {
                "db_host": host,
                "db_port": 6543,
                "db_user": f"postgres.{ref}",
                "db_name": "postgres",
                "connection_string": f"postgresql://postgres.{ref}:[YOUR-PASSWORD]@{host}:6543/postgres",
                "pool_mode": "transaction",
                "database_type": "PRIMARY",
            }
        ]

    # -- control ---------------------------------------------------------------------------------------------

    def _next_id(self):
        number = self.state["next_internal_id"]
        self.state["next_internal_id"] += 1
        return number

    def control(self, method, path, body):
        routes = {
            ("GET", "/_standin/state"): self._control_state,
            ("GET", "/_standin/requests"): lambda _body: (200, self.requests, {}),
            ("POST", "/_standin/switches"): self._control_switches,
            ("POST", "/_standin/tokens"): self._control_tokens,
            ("POST", "/_standin/projects"): self._control_projects,
            ("POST", "/_standin/reset"): self._control_reset,
        }
        route = routes.get((method, path))
        if route is None:
            return 404, {"message": "unknown control endpoint"}, {}
        with self.lock:
            return route(body)

    def _control_state(self, _body):
        sessions = self.provisioner.sessions.snapshot() if self.provisioner else {}
        return 200, {**self.state, "request_count": len(self.requests), "sessions": sessions}, {}

    def _control_switches(self, body):
        switches = self.state["switches"]
        for key, value in (body or {}).items():
            if key == "timings":
                switches["timings"] = {**switches.get("timings", {}), **value}
            else:
                switches[key] = value
        if "rate_limit" in (body or {}):
            self.calls, self.blocked_until = [], 0.0
        self.save()
        return 200, switches, {}

    def _control_tokens(self, body):
        body = body or {}
        token, scopes = body.get("token"), body.get("scopes")
        if not isinstance(token, str) or not token:
            return 400, {"message": "token is required"}, {}
        if token not in self.state["tokens"]:
            self.state["tokens"].append(token)
        if scopes is None:
            self.state["token_scopes"].pop(token, None)
        else:
            self.state["token_scopes"][token] = list(scopes)
        self.save()
        return 200, {"tokens": len(self.state["tokens"]), "token_scopes": self.state["token_scopes"]}, {}

    def _control_projects(self, body):
        body = dict(body or {})
        ref = body.pop("ref")
        current = self.state["projects"].get(ref)
        if current is None:
            current = new_project(
                ref, body.pop("name", ref), body.pop("pitr_enabled", True), internal_id=self._next_id()
            )
        current.update(body)
        self.state["projects"][ref] = current
        self.save()
        return 200, current, {}

    def _control_reset(self, _body):
        # Provisioned projects keep their servers: delete them through the API to remove those.
        kept = {r: p for r, p in self.state["projects"].items() if p.get("cluster")}
        self.state = default_state()
        self.state["projects"].update(kept)
        self.requests, self.calls, self.blocked_until = [], [], 0.0
        self.save()
        return 200, self.state, {}


def _short(exc):
    """One line of an exception for the state and the health answer."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def make_handler(standin):
    class Handler(BaseHTTPRequestHandler):
        server_version = "pgdr-supabase-standin/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet: tests read /_standin/requests instead
            return

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                return {"_unparsable": True}

        def _answer(self, status, payload, headers):
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if data:
                self.wfile.write(data)

        def _dispatch(self, method):
            url = urlparse(self.path)
            body = self._body()
            if url.path.startswith("/_standin/"):
                self._answer(*standin.control(method, url.path, body))
                return
            query = parse_qs(url.query, keep_blank_values=True)
            self._answer(*standin.handle(method, url.path, query, self.headers, body))

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def do_DELETE(self):
            self._dispatch("DELETE")

    return Handler


class Server:
    """The stand-in on a port (0 picks a free one), serving from a thread: for tests and for the CLI."""

    def __init__(self, port=0, host="127.0.0.1", state_file=None, speed=1.0, sandbox=None, db_port=None):
        provisioner = None
        if sandbox:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from sandboxlib import projects

            provisioner = projects.Provisioner(sandbox, db_port=db_port or projects.DEFAULT_DB_PORT)
        self.standin = StandIn(state_file=state_file, speed=speed, provisioner=provisioner)
        self.httpd = ThreadingHTTPServer((host, port), make_handler(self.standin))
        self.httpd.daemon_threads = True
        self.thread = None

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="supabase-api-standin", daemon=True
        )
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.standin.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def call(base_url, method, path, body=None, token=DEFAULT_TOKEN, timeout=60):
    """One raw request to a stand-in (API or /_standin/ control): (HTTP status, JSON body or None). For tests."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our loopback endpoint
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def main(argv=None):
    parser = argparse.ArgumentParser(description="Local stand-in for the Supabase Management API (v1).")
    parser.add_argument("--port", type=int, default=54380, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--state", help="JSON file holding the projects (created with the default world if absent)")
    parser.add_argument("--speed", type=float, default=1.0, help="how much faster than the timings restores run")
    parser.add_argument("--sandbox", help="sandbox folder: POST /v1/projects then makes a real PostgreSQL server")
    parser.add_argument("--db-port", type=int, default=5432, help="the provisioned servers' port (with --sandbox)")
    args = parser.parse_args(argv)
    server = Server(port=args.port, state_file=args.state, speed=args.speed, sandbox=args.sandbox, db_port=args.db_port)
    print(f"supabase api stand-in on {server.url} (token and refs: see --state or DEFAULT_* in this file)", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.standin.close()


if __name__ == "__main__":
    main()
