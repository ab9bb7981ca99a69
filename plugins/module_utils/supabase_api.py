"""A client for the Supabase Management API (hosted projects): project status and health, the managed backups and
their PITR window, the in-place PITR restore, API keys, pooler settings and SQL over HTTP.

Standard library only (urllib). Every call has a timeout; 429 and 5xx are retried with jittered exponential backoff
(Retry-After honoured), other 4xx never. Failures are DRErrors that name the project and the next step; the token
never appears in a message.
"""

from __future__ import annotations

import json
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact
from ansible_collections.pgdr.supabase.plugins.module_utils.timefmt import from_unix, iso_seconds, utcnow

DEFAULT_API_URL = "https://api.supabase.com"


TOKEN_PATTERN = re.compile(r"^sbp_(oauth_)?[a-f0-9]{40}$")
REF_PATTERN = re.compile(r"^[a-z]{20}$")
USER_AGENT = "pgdr/0.1.0"

PROJECT_STATUSES = (
    "INACTIVE",
    "ACTIVE_HEALTHY",
    "ACTIVE_UNHEALTHY",
    "COMING_UP",
    "UNKNOWN",
    "GOING_DOWN",
    "INIT_FAILED",
    "REMOVED",
    "RESTORING",
    "UPGRADING",
    "PAUSING",
    "RESTORE_FAILED",
    "RESTARTING",
    "PAUSE_FAILED",
    "RESIZING",
)
READY = "ACTIVE_HEALTHY"
# Statuses a project does not leave by itself: waiting longer cannot help.
TERMINAL_FAILURES = ("RESTORE_FAILED", "INIT_FAILED", "REMOVED", "INACTIVE", "PAUSE_FAILED")
# A PITR restore is allowed from these; any other status means something else is going on with the project.
RESTORABLE = ("ACTIVE_HEALTHY", "ACTIVE_UNHEALTHY")
HEALTH_SERVICES = ("auth", "db", "pooler", "realtime", "rest", "storage")
HEALTHY = "ACTIVE_HEALTHY"

PITR_NOT_ENABLED = "PITR is not enabled for this project."
OUT_OF_RANGE = "Recovery time target must be within range"
PITR_OFF_HINT = (
    "enable the PITR add-on (it only covers time from then on), or restore a daily backup in the dashboard, "
    "or restore our own logical backup"
)
STUCK_RESTORING = (
    "no API can cancel a stuck RESTORING: open a support ticket with the project ref and the restore time; "
    "the project is offline"
)


def validate_token(token):
    """Raise a DRError unless token looks like a personal access token; the message never contains the token."""
    if not isinstance(token, str) or not token:
        raise DRError(
            "no Management API token given",
            step="check token",
            hint="set pgdr_supabase_token from a vault file or a lookup (Account > Access Tokens in the dashboard)",
        )
    if not TOKEN_PATTERN.fullmatch(token):
        shape = "starts with sbp_" if token.startswith("sbp_") else "does not start with sbp_"
        raise DRError(
            f"the Management API token is malformed ({len(token)} characters, {shape})",
            step="check token",
            hint="use a personal access token: sbp_ followed by 40 lowercase hex digits (or sbp_oauth_ and 40); "
            "check that the vault value has no quotes, spaces or newline around it",
        )
    return token


def validate_ref(ref):
    """Raise a DRError unless ref is a project ref: exactly 20 lowercase letters."""
    if not isinstance(ref, str) or not REF_PATTERN.fullmatch(ref):
        raise DRError(
            "malformed project ref: a project ref is exactly 20 lowercase letters",
            step="check project ref",
            subject=repr(ref),
            hint="copy the ref from the dashboard (Project Settings > General) or from db.<ref>.supabase.co",
        )
    return ref


def should_retry(status):
    """Whether an HTTP status is worth sending the request again: throttling (429) and server errors (5xx) only."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value, now=None):
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or utcnow()
    return max(0.0, (when - now).total_seconds())


def retry_delay(attempt, retry_after=None, base=0.5, cap=30.0, rng=random.random, max_retry_after=120.0):
    """Seconds to wait before retry number ``attempt`` (0-based).

    Full jitter: uniform in [0, min(cap, base * 2**attempt)]. A Retry-After from the server wins (it is the time the
    server asked for), capped at max_retry_after so that a bogus header cannot park a run for hours.
    """
    if retry_after is not None:
        return min(float(retry_after), max_retry_after)
    return rng() * min(cap, base * (2**attempt))


def parse_target(value):
    """A recovery target from an int/float unix time, a string of digits, or ISO-8601 with a time zone.

    A time without a zone is refused: for a destructive restore "local time of which machine" is not a guess to make.
    """
    if isinstance(value, bool) or value is None or value == "":
        raise DRError(
            "no recovery target time given",
            step="check target time",
            hint="pass target_time as ISO-8601 with a zone (2026-11-28T10:15:00Z) or as unix seconds",
        )
    if isinstance(value, int | float):
        return from_unix(int(value))
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return from_unix(int(float(text)))
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise DRError(
            "unreadable recovery target time",
            step="check target time",
            subject=text,
            hint="use ISO-8601 with a zone (2026-11-28T10:15:00Z, 2026-11-28T11:15:00+01:00) or unix seconds",
        ) from None
    if parsed.tzinfo is None:
        raise DRError(
            "the recovery target time has no time zone",
            step="check target time",
            subject=text,
            hint=f"add the zone explicitly, for example {text}Z for UTC",
        )
    return parsed.astimezone(UTC).replace(microsecond=0)


def pitr_window(backups_response):
    """(earliest, latest) UTC datetimes of the PITR window from a backups response, or None without PITR.

    With PITR on, ``backups`` may be empty: the window lives in ``physical_backup_data``.
    """
    if not backups_response or not backups_response.get("pitr_enabled"):
        return None
    data = backups_response.get("physical_backup_data") or {}
    earliest = data.get("earliest_physical_backup_date_unix")
    latest = data.get("latest_physical_backup_date_unix")
    if earliest is None or latest is None:
        return None
    return from_unix(int(earliest)), from_unix(int(latest))


@dataclass(frozen=True)
class TargetDecision:
    """Where a recovery target falls against the PITR window, and what to say about it."""

    verdict: str  # in_range | before_earliest | after_latest | no_window
    target: datetime
    earliest: datetime | None
    latest: datetime | None
    message: str

    @property
    def ok(self):
        return self.verdict == "in_range"

    @property
    def target_unix(self):
        return int(self.target.timestamp())

    def as_dict(self):
        return {
            "verdict": self.verdict,
            "target": iso_seconds(self.target),
            "target_unix": self.target_unix,
            "earliest": iso_seconds(self.earliest),
            "latest": iso_seconds(self.latest),
            "earliest_unix": int(self.earliest.timestamp()) if self.earliest else None,
            "latest_unix": int(self.latest.timestamp()) if self.latest else None,
            "message": self.message,
        }


def clamp_target(target, window):
    """Decide whether target (a datetime) can be restored to, against window = (earliest, latest) or None.

    The target is truncated to whole seconds (the API takes unix seconds). ``latest`` is the limit: it lags real time
    by 1 to 2 minutes, so "now" is usually out of range. Nothing is moved silently: out of range is a verdict with the
    nearest allowed time in the message, for the operator to choose.
    """
    target = target.astimezone(UTC).replace(microsecond=0)
    if window is None:
        return TargetDecision("no_window", target, None, None, "the project has no PITR window (PITR is off)")
    earliest, latest = window
    span = f"{iso_seconds(earliest)} .. {iso_seconds(latest)}"
    if target < earliest:
        return TargetDecision(
            "before_earliest",
            target,
            earliest,
            latest,
            f"{iso_seconds(target)} is before the earliest restorable time {iso_seconds(earliest)} (window {span})",
        )
    if target > latest:
        return TargetDecision(
            "after_latest",
            target,
            earliest,
            latest,
            f"{iso_seconds(target)} is after the latest restorable time {iso_seconds(latest)} (window {span}; the "
            "upper bound lags real time by 1-2 minutes as WAL is archived)",
        )
    return TargetDecision("in_range", target, earliest, latest, f"{iso_seconds(target)} is inside the window {span}")


def mask_key(value):
    """An API key with everything but a short prefix masked."""
    if not value:
        return value
    return str(value)[:6] + "..." + "*" * 8


def _error_message(body):
    """The server's message from an error body ({"message": ...} or {"error": ...}), else its text, shortened."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(data, dict):
        for key in ("message", "msg", "error", "error_description"):
            if isinstance(data.get(key), str):
                return data[key]
    return text.strip()[:300]


class ManagementAPI:
    """The Supabase Management API (v1) for one token."""

    def __init__(
        self,
        token,
        base_url=DEFAULT_API_URL,
        timeout=30,
        max_retries=5,
        backoff=0.5,
        backoff_cap=30.0,
        max_retry_after=120.0,
        sleep=None,
        rng=random.random,
    ):
        self._token = validate_token(token)
        self.base_url = (base_url or DEFAULT_API_URL).rstrip("/")
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise DRError(
                "the Management API URL is not an http(s) URL",
                step="check api url",
                subject=self.base_url,
                hint="use https://api.supabase.com (or the stand-in's http://127.0.0.1:<port> in the sandbox)",
            )
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._rng = rng
        self.requests_sent = 0
        self.retries = []  # (status or error, delay) of every retry, for reports and tests

    # -- transport ---------------------------------------------------------------------------------------------

    def _send(self, method, path, query=None, body=None):
        """One HTTP exchange: (status, headers, body bytes). Network failures come back as status None."""
        url = self.base_url + path
        if query:
            url += "?" + "&".join(f"{k}={urllib.parse.quote(str(v), safe=',')}" for k, v in query.items())
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (http(s) only)
        self.requests_sent += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, {}, str(reason)

    def _request(
        self, method, path, *, step, ref=None, query=None, body=None, before_resend=None, accept=(), forbidden=None
    ):
        """Send with the retry policy; return (status, body bytes) of a 2xx or of a status in ``accept``, or raise
        the translated DRError (``forbidden``: the hint of a 403, when the caller knows better what is missing).

        before_resend(status) runs before a request that may have reached the server is sent again; it returns
        a (status, body) to stop with instead, or None to go on (the PITR restore uses it not to restore twice,
        the project creation not to create two).
        """
        attempt = 0
        while True:
            status, headers, raw = self._send(method, path, query=query, body=body)
            if status is not None and (200 <= status < 300 or status in accept):
                return status, raw
            transient = status is None or should_retry(status)
            if not transient or attempt >= self.max_retries:
                raise self._translate(status, raw, step=step, ref=ref, attempts=attempt + 1, forbidden=forbidden)
            if before_resend is not None and status != 429:
                outcome = before_resend(status)
                if outcome is not None:
                    return outcome
            retry_after = parse_retry_after((headers or {}).get("Retry-After")) if status == 429 else None
            delay = retry_delay(
                attempt,
                retry_after,
                base=self.backoff,
                cap=self.backoff_cap,
                rng=self._rng,
                max_retry_after=self.max_retry_after,
            )
            self.retries.append({"status": status, "delay": round(delay, 3), "path": path})
            (self._sleep or time.sleep)(delay)
            attempt += 1

    def _translate(self, status, raw, step, ref, attempts, forbidden=None):
        """The DRError for a final failure: what failed, on which project, and what to do next."""
        server = redact(_error_message(raw), [self._token]) if status is not None else None
        if status is None:
            message = (
                f"cannot reach the Management API at {self.base_url} after {attempts} attempt(s): "
                f"{redact(str(raw), [self._token])}"
            )
            hint = "check the URL (pgdr_supabase_api_url), DNS, proxy and outbound HTTPS from this host"
        elif status == 401:
            message = "Management API token invalid or expired (HTTP 401)"
            hint = (
                "make a new personal access token (dashboard: Account > Access Tokens), store it in the vault as "
                "pgdr_supabase_token and run again"
            )
        elif status == 403:
            where = f" on project {ref}" if ref else ""
            message = f"the token is not allowed to {step}{where} (HTTP 403: {server})"
            hint = (
                forbidden
                or "use a token of a member with the Owner or Administrator role in the project's organization"
            )
        elif status == 404:
            message = f"unknown project ref {ref} (HTTP 404)" if ref else f"not found (HTTP 404: {server})"
            hint = (
                "check pgdr_supabase_project_ref (Project Settings > General) and that the token's account can see "
                "that project"
            )
        elif status == 400 and server.startswith("PITR is not enabled"):
            message = "PITR is not enabled for this project"
            hint = PITR_OFF_HINT
        elif status == 400 and server.startswith(OUT_OF_RANGE):
            message = f"the recovery target is outside the PITR window: {server}"
            hint = (
                "choose a target_time inside the window (list it with playbooks/supabase_backups_info.yml); "
                "the upper bound lags real time by 1-2 minutes"
            )
        elif status == 429:
            message = (
                f"Management API rate limit still exceeded after {attempts} attempts (HTTP 429; the documented "
                "limit is 60 requests per minute per user, and past it every call answers 429 for a minute)"
            )
            hint = "wait a minute and run again; stop other jobs that use the same token at the same time"
        elif 500 <= status <= 599:
            message = f"the Management API kept failing (HTTP {status} after {attempts} attempts: {server})"
            hint = "check https://status.supabase.com and run again later"
        else:
            message = f"the Management API refused the request (HTTP {status}: {server})"
            hint = "read the message above; this is not retried"
        return DRError(message, step=step, subject=f"project {ref}" if ref else self.base_url, hint=hint)

    def _json(self, method, path, *, step, ref=None, query=None, body=None):
        _status, raw = self._request(method, path, step=step, ref=ref, query=query, body=body)
        return self._decode(raw, method, path, step)

    def _decode(self, raw, method, path, step):
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            raise DRError(
                "the Management API answered with something that is not JSON",
                step=step,
                subject=f"{method} {path}",
                hint="check that pgdr_supabase_api_url points at the Management API, not at the project URL",
            ) from None

    # -- endpoints ---------------------------------------------------------------------------------------------

    def projects(self):
        """GET /v1/projects: every project the token can see."""
        return self._json("GET", "/v1/projects", step="list projects") or []

    def find_project(self, name, organization=None):
        """The project called ``name`` (in ``organization``, by slug or id, when given), or None."""
        found = [
            p
            for p in self.projects()
            if p.get("name") == name
            and (organization is None or organization in (p.get("organization_slug"), p.get("organization_id")))
        ]
        if len(found) > 1:
            raise DRError(
                f"{len(found)} projects are called {name}: "
                + ", ".join(sorted(str(p.get("ref") or p.get("id")) for p in found)),
                step="find project",
                subject=f"project {name}",
                hint="delete the extra ones in the dashboard (or name the new project differently) and run again",
            )
        return found[0] if found else None

    def create_project(self, name, organization, region, db_pass, instance_size=None):
        """POST /v1/projects: start a new project (it comes up on its own; wait_for it). Returns the API's answer
        ({id, ref, name, status, ...}). A request that may have reached the server is never sent twice: before a
        resend the projects are listed, and one of that name that appeared since is the answer."""
        body = {"name": name, "organization_slug": organization, "region": region, "db_pass": db_pass}
        if instance_size:
            body["desired_instance_size"] = instance_size

        def already_created(_status):
            try:
                found = self.find_project(name, organization)
            except DRError:
                return None
            return (201, json.dumps(found).encode()) if found else None

        _status, raw = self._request(
            "POST",
            "/v1/projects",
            step="create a project",
            body=body,
            before_resend=already_created,
            forbidden=(
                f"the token cannot create projects in organization {organization}: use a personal access token of "
                "an Owner or Administrator of that organization (a read-only or scoped token cannot); nothing was "
                "created"
            ),
        )
        created = self._decode(raw, "POST", "/v1/projects", "create a project") or {}
        created.setdefault("ref", created.get("id"))
        return created

    def delete_project(self, ref):
        """DELETE /v1/projects/{ref}; True when deleted now, False when it was already gone."""
        validate_ref(ref)
        status, _raw = self._request("DELETE", f"/v1/projects/{ref}", step="delete the project", ref=ref, accept=(404,))
        return status != 404

    def project(self, ref):
        """GET /v1/projects/{ref}: ref, name, region, status, database {host, version, ...}."""
        validate_ref(ref)
        return self._json("GET", f"/v1/projects/{ref}", step="read project", ref=ref)

    def health(self, ref, services=HEALTH_SERVICES):
        """GET /v1/projects/{ref}/health: one {name, status, error?} per service."""
        validate_ref(ref)
        services = list(services or HEALTH_SERVICES)
        unknown = sorted(set(services) - set(HEALTH_SERVICES))
        if unknown:
            raise DRError(
                f"unknown health service(s): {', '.join(unknown)}",
                step="check services",
                hint=f"choose among {', '.join(HEALTH_SERVICES)}",
            )
        return self._json(
            "GET", f"/v1/projects/{ref}/health", step="read health", ref=ref, query={"services": ",".join(services)}
        )

    def backups(self, ref):
        """GET /v1/projects/{ref}/database/backups: the daily backups and the PITR window."""
        validate_ref(ref)
        return self._json("GET", f"/v1/projects/{ref}/database/backups", step="list backups", ref=ref)

    def restore_pitr(self, ref, recovery_time_target_unix):
        """POST .../database/backups/restore-pitr: start the in-place restore (201, empty body).

        Before sending again after a 5xx or a lost connection, the project's status is read: if it is already
        RESTORING the first request got through, and sending it again would be a second restore.
        """
        validate_ref(ref)
        if isinstance(recovery_time_target_unix, bool) or not isinstance(recovery_time_target_unix, int):
            raise DRError(
                "recovery_time_target_unix must be an integer number of seconds",
                step="restore pitr",
                subject=repr(recovery_time_target_unix),
            )

        def already_started(_status):
            try:
                status = (self.project(ref) or {}).get("status")
            except DRError:
                return None
            if status in ("RESTORING", "COMING_UP"):
                return 201, b""
            return None

        status, _raw = self._request(
            "POST",
            f"/v1/projects/{ref}/database/backups/restore-pitr",
            step="restore pitr",
            ref=ref,
            body={"recovery_time_target_unix": recovery_time_target_unix},
            before_resend=already_started,
        )
        return status

    def api_keys(self, ref, reveal=False):
        """GET /v1/projects/{ref}/api-keys: the project's keys. Values are masked unless reveal is true."""
        validate_ref(ref)
        keys = self._json(
            "GET",
            f"/v1/projects/{ref}/api-keys",
            step="read api keys",
            ref=ref,
            query={"reveal": "true" if reveal else "false"},
        )
        if not reveal:
            keys = [{**k, "api_key": mask_key(k.get("api_key"))} for k in keys or []]
        return keys

    def pooler_config(self, ref):
        """GET /v1/projects/{ref}/config/database/pooler: pooler host, port, user and mode per database."""
        validate_ref(ref)
        return self._json("GET", f"/v1/projects/{ref}/config/database/pooler", step="read pooler config", ref=ref)

    def query(self, ref, sql):
        """POST /v1/projects/{ref}/database/query: run SQL, return the rows (a list of objects)."""
        validate_ref(ref)
        if not isinstance(sql, str) or not sql.strip():
            raise DRError("empty SQL query", step="run query", subject=f"project {ref}")
        return self._json("POST", f"/v1/projects/{ref}/database/query", step="run query", ref=ref, body={"query": sql})

    # -- composite -------------------------------------------------------------------------------------------

    def wait_for(
        self,
        ref,
        timeout=3600,
        poll_interval=15,
        services=HEALTH_SERVICES,
        expect_transition_within=None,
        clock=time.monotonic,
        on_change=None,
    ):
        """Poll until the project is ACTIVE_HEALTHY and then every service healthy; return the timeline.

        ``expect_transition_within`` (seconds, after a restore request): until a status other than ACTIVE_HEALTHY
        has been seen, a healthy project only counts once that long has passed, so that a status read a moment
        before the restore shows up is not taken for the end of it.
        Raises a DRError at the deadline (an escalation when the project is still RESTORING) or at once on a status
        the project does not leave by itself.
        """
        validate_ref(ref)
        start = clock()
        deadline = start + timeout
        timeline = []
        seen_transition = expect_transition_within is None
        last = (None, None)
        while True:
            project = self.project(ref) or {}
            status = project.get("status", "UNKNOWN")
            health = None
            if status != READY:
                seen_transition = True
            elif seen_transition or clock() - start >= expect_transition_within:
                health = self.health(ref, services) or []
            unhealthy = None if health is None else sorted(s.get("name") for s in health if s.get("status") != HEALTHY)
            elapsed = round(clock() - start, 1)
            if (status, tuple(unhealthy or ())) != last:
                entry = {"elapsed": elapsed, "status": status}
                if health is not None:
                    entry["services"] = {s.get("name"): s.get("status") for s in health}
                timeline.append(entry)
                last = (status, tuple(unhealthy or ()))
                if on_change:
                    on_change(entry)
            if status == READY and health is not None and not unhealthy:
                return {"status": status, "health": health, "elapsed": elapsed, "timeline": timeline}
            if status in TERMINAL_FAILURES:
                raise DRError(
                    f"project {ref} is {status}; waiting will not change that",
                    step="wait healthy",
                    subject=f"project {ref}",
                    hint="open a support ticket with the project ref and the restore time"
                    if status == "RESTORE_FAILED"
                    else "look at the project in the dashboard",
                )
            now = clock()
            if now >= deadline:
                raise self._deadline_error(ref, status, unhealthy, health, timeout)
            (self._sleep or time.sleep)(min(poll_interval, max(0.0, deadline - now)))

    def _deadline_error(self, ref, status, unhealthy, health, timeout):
        if status == "RESTORING":
            return DRError(
                f"project {ref} is still RESTORING after {timeout} s",
                step="wait healthy",
                subject=f"project {ref}",
                hint=STUCK_RESTORING,
            )
        if status == READY and unhealthy:
            detail = ", ".join(f"{s.get('name')}={s.get('status')}" for s in health if s.get("status") != HEALTHY)
            return DRError(
                f"project {ref} is {status} but services are not healthy after {timeout} s: {detail}",
                step="wait healthy",
                subject=f"project {ref}",
                hint="wait and check again with playbooks/supabase_backups_info.yml or the dashboard; "
                "if a service stays down, open a support ticket",
            )
        return DRError(
            f"project {ref} did not become {READY} within {timeout} s (last status {status})",
            step="wait healthy",
            subject=f"project {ref}",
            hint="check the project in the dashboard and run the wait again; if it stays there, open a support ticket",
        )


def backups_summary(response):
    """The module-facing view of a backups response: flags, the window, the backups newest first."""
    response = response or {}
    window = pitr_window(response)
    backups = sorted(response.get("backups") or [], key=lambda b: str(b.get("inserted_at") or ""), reverse=True)
    completed = [b for b in backups if b.get("status") == "COMPLETED"]
    return {
        "region": response.get("region"),
        "pitr_enabled": bool(response.get("pitr_enabled")),
        "walg_enabled": bool(response.get("walg_enabled")),
        "backups": backups,
        "latest_backup": completed[0] if completed else None,
        "window": None
        if window is None
        else {
            "earliest": iso_seconds(window[0]),
            "latest": iso_seconds(window[1]),
            "earliest_unix": int(window[0].timestamp()),
            "latest_unix": int(window[1].timestamp()),
        },
    }


# -- what the modules share --------------------------------------------------------------------------------------

# Seconds after a restore request during which a healthy-looking project is not yet taken for a finished restore.
TRANSITION_GRACE = 60

CONNECTION_ARGUMENT_SPEC = {
    "token": {"type": "str", "required": True, "no_log": True},
    "api_url": {"type": "str", "default": DEFAULT_API_URL},
    "timeout": {"type": "int", "default": 30},
}
MODULE_ARGUMENT_SPEC = {**CONNECTION_ARGUMENT_SPEC, "project_ref": {"type": "str", "required": True}}


def api_from_params(params):
    """A ManagementAPI from the shared module options (validates the token and the ref first)."""
    validate_ref(params["project_ref"])
    return api_from_connection(params)


def api_from_connection(params):
    """A ManagementAPI from the connection options (token, api_url, timeout)."""
    return ManagementAPI(params["token"], base_url=params.get("api_url"), timeout=params.get("timeout") or 30)


def check_confirmation(confirm, ref):
    """The typed confirmation of an in-place restore: confirm must be exactly the project ref."""
    if confirm == ref:
        return
    given = "none was given" if not confirm else "the value given does not match"
    raise DRError(
        f"a PITR restore overwrites project {ref} in place and takes it offline; it needs confirm set to the "
        f"project ref ({given})",
        step="confirm restore",
        subject=f"project {ref}",
        hint=f"to go ahead, type: -e confirm={ref}",
    )


def plan_pitr_restore(api, ref, target_time):
    """Read the project and its PITR window and decide the restore; raise a DRError when it cannot go ahead."""
    target = parse_target(target_time)
    project = api.project(ref) or {}
    response = api.backups(ref)
    summary = backups_summary(response)
    if not summary["pitr_enabled"]:
        raise DRError(
            "PITR is not enabled for this project",
            step="check pitr window",
            subject=f"project {ref}",
            hint=PITR_OFF_HINT,
        )
    decision = clamp_target(target, pitr_window(response))
    if decision.verdict == "no_window":
        raise DRError(
            "PITR is enabled but the API gave no window (physical_backup_data is empty)",
            step="check pitr window",
            subject=f"project {ref}",
            hint="a project that just got PITR has no window yet: wait for the first WAL archive, then run again",
        )
    if not decision.ok:
        raise DRError(
            decision.message,
            step="check target time",
            subject=f"project {ref}",
            hint=f"choose a target_time between {iso_seconds(decision.earliest)} and {iso_seconds(decision.latest)}",
        )
    status = project.get("status")
    if status not in RESTORABLE:
        hint = (
            "a restore is already running: wait for it (pgdr.supabase.supabase_project_info) instead of starting "
            "another"
            if status in ("RESTORING", "COMING_UP")
            else "wait until the project is ACTIVE_HEALTHY (dashboard or pgdr.supabase.supabase_project_info), then "
            "run again"
        )
        raise DRError(
            f"project {ref} is {status}; a PITR restore can only start from {' or '.join(RESTORABLE)}",
            step="check project status",
            subject=f"project {ref}",
            hint=hint,
        )
    return {
        "action": "restore",
        "project_ref": ref,
        "project_name": project.get("name"),
        "project_status": status,
        "in_place": True,
        "target": decision.as_dict(),
        "window": summary["window"],
        "warning": f"project {ref} goes offline and every change after {iso_seconds(decision.target)} is lost",
    }
