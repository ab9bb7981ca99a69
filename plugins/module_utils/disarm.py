"""Staging must not act like production: a restored copy holds production's scheduled jobs and outgoing hooks.

- Database webhooks (triggers whose function is ``supabase_functions.http_request``, or calls ``net.http_*``) are
  recorded at backup time with their definition; a restore creates them disabled, in the same transaction (on the
  app's tables), or leaves them out (on the platform's tables, where only the platform may disable a trigger).
- pg_cron jobs (read from cron.job at backup time into the index) are scheduled inactive through pg_cron's own
  functions (a hosted project lets postgres read cron.job, not write it).
- pg_net's request queue is not in the backup at all (dumpspec), so nothing production queued is sent again.
- Functions of the app that call ``net.http_*`` themselves cannot be disarmed without changing them: they are
  named in the report.
Each disarmed item is listed with what re-arms it; ``pgdr_staging_disarm: false`` restores everything as it was.
"""

from __future__ import annotations

from ansible_collections.pgdr.supabase.plugins.module_utils import fingerprint

_WEBHOOKS = """
    select n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), n.nspname = any(%(platform)s),
           format('%%I.%%I', n.nspname, c.relname), format('%%I', t.tgname)
      from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      join pg_proc f on f.oid = t.tgfoid join pg_namespace fn on fn.oid = f.pronamespace
     where not t.tgisinternal and (n.nspname = any(%(app)s) or n.nspname = any(%(platform)s))
       and ((fn.nspname = 'supabase_functions' and f.proname = 'http_request')
            or (fn.nspname = any(%(app)s) and f.prosrc ~ 'net\\.http_'))
     order by 1, 2, 3"""
_OUTGOING = """
    select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = any(%(app)s) and p.prosrc ~ 'net\\.http_' and p.prorettype <> 'trigger'::regtype
     order by 1"""


def webhooks(conn, scope):
    """The database webhooks of the app (read at backup time): [{"key", "schema", "table", "trigger", "sql",
    "on_platform", "table_ident", "trigger_ident"}]."""
    fingerprint.qualified_names(conn)
    found = []
    for schema, table, trigger, definition, on_platform, table_ident, trigger_ident in conn.execute(
        _WEBHOOKS, scope.params()
    ).fetchall():
        found.append(
            {
                "key": f"trigger {schema}.{table}.{trigger}",
                "schema": schema,
                "table": table,
                "trigger": trigger,
                "sql": definition + ";",
                "on_platform": bool(on_platform),
                "table_ident": table_ident,
                "trigger_ident": trigger_ident,
            }
        )
    return found


def outgoing_functions(conn, scope):
    """Functions of the app (not triggers) that call net.http_* themselves."""
    fingerprint.qualified_names(conn)
    return [name for (name,) in conn.execute(_OUTGOING, scope.params()).fetchall()]


def webhook_statements(hooks, disarm):
    """(statements, disarmed): create the webhooks (disabled when disarming; left out on the platform's tables,
    where only the platform may disable a trigger). Each disarmed item says how to re-arm it."""
    statements, disarmed = [], []
    for hook in hooks:
        rearm_disable = f"ALTER TABLE {hook['table_ident']} ENABLE TRIGGER {hook['trigger_ident']};"
        if not disarm:
            statements.append(fingerprint.Statement(hook["sql"], why=hook["key"]))
        elif hook["on_platform"]:
            disarmed.append(
                {
                    "kind": "webhook",
                    "key": hook["key"],
                    "state": "not created (on a platform table)",
                    "rearm": hook["sql"],
                }
            )
        else:
            statements.append(fingerprint.Statement(hook["sql"], why=hook["key"]))
            statements.append(
                fingerprint.Statement(
                    f"ALTER TABLE {hook['table_ident']} DISABLE TRIGGER {hook['trigger_ident']};", why=hook["key"]
                )
            )
            disarmed.append({"kind": "webhook", "key": hook["key"], "state": "disabled", "rearm": rearm_disable})
    return statements, disarmed


_CRON_JOBS = """
    select jobname, schedule, command, database, username, active from cron.job order by jobid"""


def cron_jobs(conn, scope):
    """The app's pg_cron jobs (read at backup time): the jobs of the app's roles, [] without pg_cron."""
    if not conn.execute("select to_regclass('cron.job') is not null").fetchone()[0]:
        return []
    return [
        {"jobname": j, "schedule": s, "command": c, "database": d, "username": u, "active": a}
        for j, s, c, d, u, a in conn.execute(_CRON_JOBS).fetchall()
        if u in scope.app_roles
    ]


def schedule_jobs(conn, jobs, disarm, current_user):
    """Schedule the backup's jobs in conn's transaction (inactive when disarming). Returns (new job ids,
    disarmed items, skipped [(job, reason)])."""
    ids, disarmed, skipped = [], [], []
    if not jobs:
        return ids, disarmed, skipped
    if not conn.execute("select to_regclass('cron.job') is not null").fetchone()[0]:
        return ids, disarmed, [(job, "pg_cron is not in the restored database") for job in jobs]
    for job in jobs:
        if job["username"] != current_user:
            skipped.append((job, f"the job runs as {job['username']}; only a superuser may schedule for another role"))
            continue
        active = job["active"] and not disarm
        if job["jobname"]:
            conn.execute(
                "select cron.unschedule(jobid) from cron.job where jobname = %s and username = current_user",
                (job["jobname"],),
            )
        jobid = conn.execute(
            "select cron.schedule_in_database(%s, %s, %s, %s, null, %s)",
            (job["jobname"], job["schedule"], job["command"], job["database"], active),
        ).fetchone()[0]
        ids.append(jobid)
        if job["active"] and disarm:
            disarmed.append(
                {
                    "kind": "cron",
                    "key": f"cron {job['jobname'] or jobid}",
                    "state": f"inactive (active in the backup; {job['schedule']}: {job['command'][:80]})",
                    "rearm": f"SELECT cron.alter_job({jobid}, active := true);",
                }
            )
    return ids, disarmed, skipped
