"""A new hosted Supabase project as a restore target (restore_mode new_project).

Found by name or created through the Management API, waited for until the project is ACTIVE_HEALTHY and every
service healthy, its database reachable; then its connection string (built from the host the API gives and a
template, the password being the one it was created with: render_template, also the filter project_db_url, since a
module's result cannot carry a no_log password) and its API keys (anon/service_role and publishable/secret) are what
a restore and staging's re-pointed settings use. Deleted by name or ref when done.

A project that never becomes healthy fails at the deadline with its last status, and is deleted first when the
caller asks (it is a throwaway target) or kept for a look. The password and the keys are secrets: callers register
the result with no_log.
"""

from __future__ import annotations

import time
import urllib.parse

from ansible_collections.pgdr.supabase.plugins.module_utils import pg
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.supabase_api import HEALTH_SERVICES, READY

# The direct connection of a hosted project: the host the API names, port 5432, the postgres database and role.
DEFAULT_DB_URL_TEMPLATE = "postgresql://postgres:{password}@{host}:5432/postgres?sslmode=require"
DEFAULT_URL_TEMPLATE = "https://{ref}.supabase.co"
# The names of the keys in the API's list: legacy JWT keys by name, the new ones by type.
KEY_KINDS = {"anon": ("name", "anon"), "service_role": ("name", "service_role")}
KEY_TYPES = ("publishable", "secret")
# How long a project that reports healthy may take to accept a database connection.
CONNECT_GRACE_S = 60


def render_template(template, project, password=""):
    """A connection string or URL from a template with {ref}, {host}, {region} and {password} (URL-quoted), for a
    project as the API gives it or as this module sums it up (db_host)."""
    ref = project.get("ref") or project.get("id") or ""
    host = project.get("db_host") or (project.get("database") or {}).get("host") or f"db.{ref}.supabase.co"
    try:
        return template.format(
            ref=ref, host=host, region=project.get("region") or "", password=urllib.parse.quote(password, safe="")
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise DRError(
            f"the template {template!r} cannot be filled in ({exc})",
            step="build connection string",
            subject=f"project {ref}",
            hint="use only the placeholders {ref}, {host}, {region} and {password}",
        ) from None


def pick_keys(keys):
    """{anon, service_role, publishable, secret} from the API's list of keys (those the project has)."""
    picked = {}
    for key in keys or []:
        value = key.get("api_key")
        if not value:
            continue
        for kind, (field, expected) in KEY_KINDS.items():
            if key.get(field) == expected and key.get("type", "legacy") == "legacy":
                picked.setdefault(kind, value)
        if key.get("type") in KEY_TYPES:
            picked.setdefault(key["type"], value)
    return picked


SETTING_KINDS = ("url", "anon", "service_role", "publishable", "secret")


def env_settings(env_names, url, keys, ref):
    """{variable: value} for staging's settings named in env_names ({variable: kind}; kind url or a key kind)."""
    values = {**keys, "url": url}
    settings = {}
    for name, kind in (env_names or {}).items():
        if kind not in SETTING_KINDS:
            raise DRError(
                f"{name} is mapped to {kind!r}, which is not a project setting",
                step="check inputs",
                subject=f"project {ref}",
                hint="map each variable to one of " + ", ".join(SETTING_KINDS),
            )
        if not values.get(kind):
            raise DRError(
                f"project {ref} has no {kind} key for {name} (it has: {', '.join(sorted(keys)) or 'none'})",
                step="read api keys",
                subject=f"project {ref}",
                hint="map the variable to a key the project has (publishable/secret when the legacy anon and "
                "service_role keys are disabled)",
            )
        settings[name] = values[kind]
    return settings


def _summary(project):
    database = project.get("database") or {}
    return {
        "ref": project.get("ref") or project.get("id"),
        "name": project.get("name"),
        "organization": project.get("organization_slug") or project.get("organization_id"),
        "region": project.get("region"),
        "status": project.get("status"),
        "db_host": database.get("host"),
        "db_version": database.get("version"),
    }


def wait_reachable(dsn, timeout=CONNECT_GRACE_S, clock=time.monotonic, sleep=time.sleep):
    """Connect until the database answers (a project reported healthy may need a moment); raise at the deadline."""
    deadline = clock() + timeout
    while True:
        try:
            with pg.connect(dsn, step="connect to the new project", connect_timeout=10) as conn:
                conn.execute("SELECT 1")
            return
        except DRError as exc:
            if clock() >= deadline or "refused the credentials" in exc.message:
                raise DRError(
                    exc.message,
                    step=exc.step,
                    subject=exc.subject,
                    hint=exc.hint + "; for a hosted project the direct host is IPv6 unless the IPv4 add-on is on: "
                    "use the session pooler in pgdr_new_project_db_url",
                ) from None
        sleep(2)


def _given_up(api, ref, exc, delete):
    """The wait failed: delete the project when asked, and say in the error what became of it."""
    if delete:
        try:
            api.delete_project(ref)
            fate = f"project {ref} was deleted (it is a throwaway target: pgdr_new_project_keep is false)"
        except DRError as delete_error:
            fate = f"deleting project {ref} failed too ({delete_error.message}): delete it in the dashboard"
    else:
        fate = (
            f"project {ref} is kept for a look (pgdr_new_project_keep); delete it when done in the dashboard or with "
            f"supabase projects delete {ref}"
        )
    return DRError(exc.message + "; " + fate, step=exc.step, subject=exc.subject, hint=exc.hint)


def _plan(changed, project, ref, msg):
    """The result of a check-mode run that stops before the project serves: no URL, keys or settings yet."""
    return {
        "changed": changed,
        "created": False,
        "planned": True,
        "project": project,
        "ref": ref,
        "url": "",
        "keys": {},
        "env": {},
        "wait": {},
        "msg": msg,
    }


def ensure_project(
    api,
    *,
    name,
    organization,
    region,
    db_pass,
    instance_size=None,
    wait_timeout=1200,
    poll_interval=10,
    services=HEALTH_SERVICES,
    delete_on_failure=False,
    db_url_template=DEFAULT_DB_URL_TEMPLATE,
    url_template=DEFAULT_URL_TEMPLATE,
    check_mode=False,
    connect_timeout=CONNECT_GRACE_S,
    env_names=None,
    on_change=None,
):
    """Find the project called ``name`` or create it, wait until it serves, and return what a restore needs.

    The result: changed, created, project (summary with db_host), ref, keys and env (the settings named in env_names;
    secrets), url, wait (timeline), msg.
    In check mode nothing is created: the plan, and the existing project's details when there is one.
    """
    if not db_pass:
        raise DRError(
            "a new project needs the password of its postgres role",
            step="check inputs",
            subject=f"project {name}",
            hint="set pgdr_new_project_db_password from the vault (kept there: a kept project is reached with it)",
        )
    started = time.monotonic()
    found = api.find_project(name, organization)
    created = False
    if found is None:
        if check_mode:
            return _plan(
                True,
                {"name": name, "organization": organization, "region": region},
                "",
                f"would create project {name} in organization {organization} ({region}) and wait until it serves",
            )
        found = api.create_project(name, organization, region, db_pass, instance_size)
        created = True
    ref = found.get("ref") or found.get("id")
    if check_mode and found.get("status") != READY:
        return _plan(
            False,
            _summary(found),
            ref,
            f"project {name} ({ref}) exists, status {found.get('status')}: a run would wait until it serves",
        )
    try:
        wait = api.wait_for(
            ref, timeout=wait_timeout, poll_interval=poll_interval, services=services, on_change=on_change
        )
        project = api.project(ref) or found
        dsn = render_template(db_url_template, project, db_pass)
        if not check_mode:
            wait_reachable(dsn, timeout=connect_timeout)
        keys = pick_keys(api.api_keys(ref, reveal=True))
        url = render_template(url_template, project)
        env = env_settings(env_names, url, keys, ref)
    except DRError as exc:
        if check_mode:
            raise
        raise _given_up(api, ref, exc, delete_on_failure) from None
    elapsed = round(time.monotonic() - started, 1)
    how = "created" if created else "found"
    return {
        "changed": created,
        "created": created,
        "planned": False,
        "project": _summary(project),
        "ref": ref,
        "url": url,
        "keys": keys,
        "env": env,
        "wait": {"elapsed": wait.get("elapsed"), "timeline": wait.get("timeline")},
        "elapsed_s": elapsed,
        "msg": f"project {name} ({ref}) {how} and serving after {elapsed} s; keys: {', '.join(sorted(keys)) or 'none'}",
    }


def remove_project(api, *, name=None, organization=None, ref=None, check_mode=False):
    """Delete the project named ``ref`` or called ``name``; nothing to do when it is gone already."""
    if not ref:
        found = api.find_project(name, organization)
        ref = (found or {}).get("ref") or (found or {}).get("id")
    label = f"project {name or ref}" + (f" ({ref})" if ref and name else "")
    if not ref:
        return {"changed": False, "deleted": False, "ref": "", "msg": f"{label}: no such project, nothing to delete"}
    if check_mode:
        return {"changed": True, "deleted": False, "ref": ref, "msg": f"would delete {label}"}
    deleted = api.delete_project(ref)
    return {
        "changed": deleted,
        "deleted": deleted,
        "ref": ref,
        "msg": f"deleted {label}" if deleted else f"{label} was gone already",
    }
