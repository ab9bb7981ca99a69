#!/usr/bin/env python3
"""A local stand-in for the Supabase Management API (v1), answering the documented shapes for the
endpoints the runbooks use, so that the hosted-Supabase paths run on one machine without an account.

    python scripts/supabase_api_standin.py --port 54380 [--state FILE] [--speed 1.0]

Projects live in memory, and in FILE (JSON) when --state is given: loaded at start, written after each change.
A new state holds the sandbox's fake token and two projects, one with PITR on and one without (see DEFAULT_*).

A restore moves the project through RESTORING -> COMING_UP -> ACTIVE_HEALTHY on a timer; its services stay
COMING_UP for a while after that. Switches for tests, under /_standin/ (never part of the API):

    GET  /_standin/state                 the whole state (projects, restores, switches, request count)
    GET  /_standin/requests              the API requests received (method, path, query)
    POST /_standin/switches              {"throttle_next": N, "retry_after": S, "fail_next": N, "fail_status": 500,
                                          "rate_limit": N-per-minute or null, "hang_restore": bool,
                                          "timings": {"restoring": s, "coming_up": s, "services": s}}
    POST /_standin/projects              {"ref": ..., "pitr_enabled": ..., ...} adds or updates a project
    POST /_standin/reset                 back to the default world
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
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
# The upper bound of the PITR window lags real time (WAL is archived every 2 minutes).
LATEST_LAG_SECONDS = 90
PITR_DAYS = 7


def _iso(unix):
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def new_project(ref, name, pitr_enabled=True, now=None, **extra):
    now = int(now or time.time())
    project = {
        "ref": ref,
        "name": name,
        "region": "eu-central-1",
        "organization_slug": "pgdr-sandbox",
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


def default_state():
    return {
        "tokens": [DEFAULT_TOKEN],
        "projects": {
            DEFAULT_PITR_REF: new_project(DEFAULT_PITR_REF, "pgdr sandbox (PITR)", pitr_enabled=True),
            DEFAULT_NOPITR_REF: new_project(DEFAULT_NOPITR_REF, "pgdr sandbox (no PITR)", pitr_enabled=False),
        },
        "switches": {
            "throttle_next": 0,
            "retry_after": 1,
            "fail_next": 0,
            "fail_status": 500,
            "rate_limit": None,
            "hang_restore": False,
            "timings": dict(DEFAULT_TIMINGS),
        },
    }


class StandIn:
    """The state and behaviour behind the HTTP handler; thread-safe."""

    def __init__(self, state_file=None, speed=1.0, clock=time.time):
        self.state_file = Path(state_file) if state_file else None
        self.speed = speed
        self.clock = clock
        self.lock = threading.RLock()
        self.requests = []
        self.calls = []  # time of every API call, for the per-minute rate limit
        self.blocked_until = 0.0
        if self.state_file and self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())
        else:
            self.state = default_state()
            self.save()

    def save(self):
        if self.state_file:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
            tmp.replace(self.state_file)

    # -- time-driven status ----------------------------------------------------------------------------------

    def _phase(self, project):
        """(project status, services status) now, from the last restore's start and the timings."""
        restores = project.get("restores") or []
        if not restores:
            return project["status"], "ACTIVE_HEALTHY"
        timings = {**DEFAULT_TIMINGS, **(self.state["switches"].get("timings") or {})}
        started = restores[-1]["requested_at"]
        elapsed = (self.clock() - started) * self.speed
        if restores[-1].get("hang") or elapsed < timings["restoring"]:
            return "RESTORING", "COMING_UP"
        if elapsed < timings["restoring"] + timings["coming_up"]:
            return "COMING_UP", "COMING_UP"
        if elapsed < timings["restoring"] + timings["coming_up"] + timings["services"]:
            return "ACTIVE_HEALTHY", "COMING_UP"
        return "ACTIVE_HEALTHY", "ACTIVE_HEALTHY"

    def window(self, project):
        now = int(self.clock())
        return project["pitr_earliest_unix"], now - LATEST_LAG_SECONDS

    # -- API answers -----------------------------------------------------------------------------------------

    def gate(self, headers):
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
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in self.state["tokens"]:
            return 401, {"message": "Unauthorized"}, {}
        return None

    def handle(self, method, path, query, headers, body):
        with self.lock:
            self.requests.append({"method": method, "path": path, "query": query})
            gated = self.gate(headers)
            if gated:
                return gated
            parts = path.strip("/").split("/")
            if parts == ["v1", "projects"] and method == "GET":
                # GET /v1/projects: every project the token sees (the CLI's `projects list` and ref lookups).
                return 200, [self.project_body(p) for _, p in sorted(self.state["projects"].items())], {}
            if len(parts) < 3 or parts[:2] != ["v1", "projects"]:
                return 404, {"message": "Not found"}, {}
            ref, rest = parts[2], "/".join(parts[3:])
            project = self.state["projects"].get(ref)
            if project is None:
                return 404, {"message": "Project not found"}, {}
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

    def query(self, project, body):
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return 400, {"message": "query is required"}, {}
        return 201, project.get("query_rows") or [], {}

    def project_body(self, project):
        status, _services = self._phase(project)
        keys = ("ref", "name", "region", "organization_slug", "created_at", "database")
        return {**{k: project[k] for k in keys}, "status": status}

    def health(self, project, query):
        names = ",".join(query.get("services", [])).split(",") if query.get("services") else []
        names = [n for n in names if n]
        if not names or set(names) - set(SERVICES):
            return 400, {"message": "services must be a list of: " + ", ".join(SERVICES)}, {}
        _status, services = self._phase(project)
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

    def control(self, method, path, body):
        with self.lock:
            if (method, path) == ("GET", "/_standin/state"):
                return 200, {**self.state, "request_count": len(self.requests)}, {}
            if (method, path) == ("GET", "/_standin/requests"):
                return 200, self.requests, {}
            if (method, path) == ("POST", "/_standin/switches"):
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
            if (method, path) == ("POST", "/_standin/projects"):
                body = dict(body or {})
                ref = body.pop("ref")
                current = self.state["projects"].get(ref)
                if current is None:
                    current = new_project(ref, body.pop("name", ref), body.pop("pitr_enabled", True))
                current.update(body)
                self.state["projects"][ref] = current
                self.save()
                return 200, current, {}
            if (method, path) == ("POST", "/_standin/reset"):
                self.state = default_state()
                self.requests, self.calls, self.blocked_until = [], [], 0.0
                self.save()
                return 200, self.state, {}
            return 404, {"message": "unknown control endpoint"}, {}


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

    return Handler


class Server:
    """The stand-in on a port (0 picks a free one), serving from a thread: for tests and for the CLI."""

    def __init__(self, port=0, host="127.0.0.1", state_file=None, speed=1.0):
        self.standin = StandIn(state_file=state_file, speed=speed)
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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Local stand-in for the Supabase Management API (v1).")
    parser.add_argument("--port", type=int, default=54380, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--state", help="JSON file holding the projects (created with the default world if absent)")
    parser.add_argument("--speed", type=float, default=1.0, help="how much faster than the timings restores run")
    args = parser.parse_args(argv)
    server = Server(port=args.port, state_file=args.state, speed=args.speed)
    print(f"supabase api stand-in on {server.url} (token and refs: see --state or DEFAULT_* in this file)", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
