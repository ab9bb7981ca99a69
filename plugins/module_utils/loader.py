"""Loading a backup into a database, step by step, as the target's non-superuser role (``postgres`` on a hosted
project): what both restore modes (a new database, the project's own) do once the database is there.

Order, and why:
1. prepare: check the extensions the backup needs; take membership in the app's owner roles for the run; set the
   default privileges of the app's roles to the built-in ones, so objects are created with the ACL pg_dump's
   statements expect (a fresh project's defaults grant every new function and table to anon);
2. roles (existing ones kept), 3. schema before data (pg_restore, entries the platform owns left out),
4. data in replica mode by parallel workers, each object verified as it streams,
5. indexes and constraints (pg_restore -j), 6. the app's objects on the platform's tables, webhooks (disabled),
7. sequence values, 8. owners, privileges and default privileges made equal to the backup's fingerprint,
9. materialized views refreshed in dependency order (those the source had populated), 10. cron jobs (inactive),
11. the memberships taken in 1 given back.
Every step reports what it ran; a failure raises a DRError naming the step and the object.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    disarm,
    dumpspec,
    fingerprint,
    pg,
    tabledata,
    toc,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, output_tail

try:
    import psycopg
except ImportError:  # pragma: no cover - reported by the modules
    psycopg = None


INDEX_NAME = "index"


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Loader:
    """The load of one backup into one database (``conn`` is a session there as the restore's role)."""

    def __init__(self, request, conn, dsn, tools, files, index, steps):
        self.request = request
        self.conn = conn
        self.dsn = dsn  # the database's connection string (password included): for the tools and the workers
        self.tools = tools
        self.files = files
        self.index = index or {}
        self.steps = steps
        self.flavor = request.manifest["source"].get("flavor") or "postgres"
        self.where = request.where
        self.report = {
            "skipped_entries": [],
            "memberships": [],
            "statements": {},
            "disarmed": [],
            "skipped_jobs": [],
            "extensions_skipped": [],
            "not_carried": self.index.get("not_carried", {}),
            "outgoing_functions": self.index.get("outgoing_functions", []),
        }
        self.scope = None

    # --- 1 --------------------------------------------------------------------------------------------------
    def prepare(self):
        conn = self.conn
        self.scope = fingerprint.Scope(conn, self.flavor)
        self._check_extensions()
        self._take_memberships()
        current = fingerprint.read_default_acls(conn, self.scope)
        statements = fingerprint.default_acl_statements({"default_acls": {}}, current, self.scope.current)
        self._run("default privileges set to the built-in ones for the load", statements, step="prepare")
        conn.commit()

    def _check_extensions(self):
        wanted = self.index.get("extensions") or {
            e.tag.strip('"'): "" for e in self._entries() if e.desc == "EXTENSION"
        }
        have = {
            n: f"{v} in {s}"
            for n, v, s in self.conn.execute(
                "select e.extname, e.extversion, n.nspname from pg_extension e join pg_namespace n on "
                "n.oid = e.extnamespace"
            ).fetchall()
        }
        creatable = {
            n
            for (n,) in self.conn.execute(
                "select name from pg_available_extension_versions where trusted or "
                "(select rolsuper from pg_roles where rolname = current_user)"
            ).fetchall()
        }
        missing = []
        for name in sorted(set(wanted) - set(have)):
            if name in self.request.skip_extensions:
                self.report["extensions_skipped"].append(name)
            elif name not in creatable:
                missing.append(name)
        if missing:
            raise DRError(
                f"the target lacks extension(s) {', '.join(missing)}, which the backup uses and the restore's role "
                "cannot create",
                step="check extensions",
                subject=self.where,
                hint="enable them in the target project (dashboard: Database > Extensions) and run again; for a "
                "throwaway database that cannot have them, list them in skip_extensions",
            )
        self.target_extensions = set(have)

    def _take_memberships(self):
        """The app's owner roles the restore's role must act as (ALTER ... OWNER, default privileges FOR ROLE)."""
        owners = {e.get("owner") for e in (self.index.get("fingerprint") or {}).get("objects", {}).values()}
        owners |= {key.split(" ")[0] for key in (self.index.get("fingerprint") or {}).get("default_acls", {})}
        for role in sorted(o for o in owners if o and o in self.scope.app_roles and o != self.scope.current):
            member = self.conn.execute(
                "select pg_has_role(current_user, r.oid, 'USAGE') from pg_roles r where r.rolname = %s", (role,)
            ).fetchone()
            if member is None or member[0]:
                continue
            self._run("membership", [fingerprint.Statement(f"GRANT {_q(role)} TO CURRENT_USER;")], step="prepare")
            self.report["memberships"].append(role)

    def give_back_memberships(self):
        statements = [fingerprint.Statement(f"REVOKE {_q(r)} FROM CURRENT_USER;") for r in self.report["memberships"]]
        if statements:
            self._run("memberships given back", statements, step="finish")
            self.conn.commit()

    # --- 2, 3, 5 --------------------------------------------------------------------------------------------
    def roles(self):
        idempotent_roles(self.files["roles"])
        psql = [self.tools["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
        self._tool([*psql, f"--dbname={self._conninfo()}", "-f", self.files["roles"]], "restore roles")

    def _entries(self):
        if getattr(self, "_toc", None) is None:
            self._toc = toc.listing(self.tools["pg_restore"], self.files["schema"], self._env(), self.where)
        return self._toc

    def _list_file(self):
        if getattr(self, "_list", None):
            return self._list
        entries = self._entries()
        platform_schemas = dumpspec.SUPABASE_SCHEMA_EXCLUDE if self.flavor == "supabase" else ()
        publications = {n for (n,) in self.conn.execute("select pubname from pg_publication").fetchall()}
        hooks = {(h["schema"], f"{h['table']} {h['trigger']}") for h in self.index.get("webhooks", [])}
        kept, skipped = toc.select(
            entries,
            platform_schemas,
            self.scope.platform_roles,
            self.target_extensions | set(self.report["extensions_skipped"]),
            publications,
        )
        final = []
        for entry in kept:
            if entry.desc == "TRIGGER" and (entry.namespace, entry.tag) in hooks:
                skipped.append((entry, "a webhook: created by the disarm step"))
            else:
                final.append(entry)
        self.report["skipped_entries"] = [f"{e.desc} {e.namespace} {e.tag}: {reason}" for e, reason in skipped]
        self._list = toc.write_list(final, os.path.join(os.path.dirname(self.files["schema"]), "schema.list"))
        return self._list

    def schema(self, section, jobs=1):
        argv = [
            self.tools["pg_restore"],
            "--exit-on-error",
            "--no-owner",
            f"--section={section}",
            f"--use-list={self._list_file()}",
            f"--dbname={self._conninfo()}",
        ]
        argv.insert(1, "--single-transaction" if jobs == 1 else f"--jobs={jobs}")
        self._tool(
            [*argv, self.files["schema"]],
            "restore schema" if section == "pre-data" else "build indexes and constraints",
        )

    # --- 4 --------------------------------------------------------------------------------------------------
    def data(self, produce):
        """Load every data object with request.jobs workers; produce(obj, write) streams an object verified."""
        objects = [o for o in self.request.manifest["objects"] if o.get("kind") == "data"]
        objects.sort(key=lambda o: o.get("raw_size") or o["size"], reverse=True)
        sections = self.index.get("sections", {})

        def load(obj):
            conn = self._session(replica=True)
            try:
                return tabledata.load_object(conn, lambda write: produce(obj, write), sections[obj["name"]], self.where)
            except psycopg.Error as exc:
                raise DRError(
                    f"loading {obj['name']} failed: {_first_line(exc)}",
                    step="restore data",
                    subject=self.where,
                    hint="nothing was switched: the previous database is untouched; fix the cause and rerun",
                ) from exc
            finally:
                conn.close()

        results = tabledata.Workers(self.request.jobs).run(objects, load)
        loaded = {}
        for counts in results:
            for table, rows in counts.items():
                loaded[table] = loaded.get(table, 0) + rows
        return loaded

    # --- 6, 7, 8, 9, 10 -------------------------------------------------------------------------------------
    def platform_objects(self):
        statements = [
            fingerprint.Statement(s, why=item["key"])
            for item in self.index.get("platform_ddl", [])
            for s in item["sql"]
        ]
        self._run("the app's objects on the platform's tables", statements, step="restore platform objects")
        hook_statements, disarmed = disarm.webhook_statements(self.index.get("webhooks", []), self.request.disarm)
        self._run("webhooks", hook_statements, step="restore webhooks")
        self.report["disarmed"] += disarmed
        self.conn.commit()

    def sequences(self):
        statements = [
            fingerprint.Statement(
                f"SELECT pg_catalog.setval({_literal(ident)}, {int(last)}, {bool(called)});", why=name
            )
            for name, (last, called, ident) in sorted(self.index.get("sequences", {}).items())
        ]
        self._run("sequence values", statements, step="set sequences", quiet=True)
        self.conn.commit()

    def privileges(self):
        """Owners, ACLs and default ACLs equal to the backup's fingerprint: returns the statements run."""
        expected = self.index.get("fingerprint")
        if not expected:
            return []
        actual = fingerprint.capture(self.conn, self.flavor, self.scope)
        current = self.scope.current
        statements = (
            fingerprint.owner_statements(expected, actual)
            + fingerprint.acl_statements(expected, actual, current)
            + fingerprint.default_acl_statements(expected, actual, current)
        )
        done = self._run("privileges made equal to the backup's", statements, step="restore privileges")
        self.conn.commit()
        return done

    def matviews(self):
        """REFRESH the materialized views the source had populated, each after the ones it reads."""
        objects = (self.index.get("fingerprint") or {}).get("objects", {})
        populated = [
            k.split(" ", 1)[1]
            for k, e in objects.items()
            if k.startswith("matview_data ") and e.get("def") == "populated"
        ]
        if not populated:
            return []
        order = _refresh_order(self.conn, populated)
        statements = [fingerprint.Statement(f"REFRESH MATERIALIZED VIEW {ident};", why=name) for name, ident in order]
        done = self._run("materialized views refreshed", statements, step="refresh materialized views")
        self.conn.commit()
        return done

    def cron_jobs(self):
        try:
            ids, disarmed, skipped = disarm.schedule_jobs(
                self.conn, self.index.get("cron_jobs", []), self.request.disarm, self.scope.current
            )
            self.conn.commit()
        except psycopg.Error as exc:
            raise DRError(
                f"scheduling the backup's cron jobs failed: {_first_line(exc)}",
                step="restore cron jobs",
                subject=self.where,
                hint="the restore's role needs EXECUTE on cron.schedule_in_database (as on a hosted project)",
            ) from exc
        self.report["disarmed"] += disarmed
        self.report["skipped_jobs"] = [f"{j.get('jobname') or j['command'][:40]}: {why}" for j, why in skipped]
        return ids

    # --- helpers --------------------------------------------------------------------------------------------
    def _run(self, label, statements, step, quiet=False):
        if not statements:
            return []
        started = time.monotonic()
        done = []
        for statement in statements:
            try:
                done += fingerprint.run_statements(self.conn, [statement])
            except psycopg.Error as exc:
                self.conn.rollback()
                raise DRError(
                    f"{_first_line(exc)}, running: {statement.sql[:300]}",
                    step=step,
                    subject=self.where,
                    hint="the restore runs as the target's role (postgres on a hosted project), which lacks this "
                    "privilege; grant it or restore with a role that has it",
                ) from exc
        self.report["statements"][label] = len(done) if quiet else done
        self.steps.line(f"{label}: {len(done)} statement(s) in {time.monotonic() - started:.1f} s")
        return done

    def _conninfo(self):
        return pg.client_env(self.dsn, app_name="pgdr restore")[0]

    def _env(self, replica=False):
        _, env = pg.client_env(self.dsn, app_name="pgdr restore")
        if replica:
            env["PGOPTIONS"] = "-c session_replication_role=replica -c synchronous_commit=off"
        return env

    def _tool(self, argv, step):
        with open(os.devnull, "wb") as devnull, _Captured() as errors:
            code = subprocess.run(argv, stdout=devnull, stderr=errors.fh, env=self._env(), check=False).returncode
            if code != 0:
                raise DRError(
                    f"{os.path.basename(argv[0])} failed (exit {code}): {output_tail(errors.fh)}",
                    step=step,
                    subject=self.where,
                    hint="nothing was switched: the previous database is untouched; fix the cause and rerun",
                )

    def _session(self, replica=False):
        conn = pg.connect(self.dsn, step="connect restore target", application_name="pgdr restore data")
        try:
            tabledata.apply_settings(conn)
            if replica:
                conn.execute("select pg_catalog.set_config('session_replication_role', 'replica', false)")
                conn.execute("select pg_catalog.set_config('synchronous_commit', 'off', false)")
            conn.commit()
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.close()
            raise DRError(
                f"the restore's role may not set session_replication_role: {_first_line(exc)}",
                step="restore data",
                subject=self.where,
                hint="grant it (PostgreSQL 15: GRANT SET ON PARAMETER session_replication_role TO <role>; a "
                "hosted project's postgres has it)",
            ) from exc
        return conn


class _Captured:
    """A temporary file for a tool's error output."""

    def __enter__(self):
        self.fh = tempfile.TemporaryFile()
        return self

    def __exit__(self, *exc):
        self.fh.close()
        return False


_CREATE_ROLE = re.compile(r'^CREATE ROLE (?P<role>"(?:[^"]|"")+"|[^\s;]+);\s*$')


def idempotent_roles(path):
    """Rewrite CREATE ROLE lines so that a role that exists already is kept (roles are cluster-wide)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            match = _CREATE_ROLE.match(line)
            if match:
                role = match.group("role")
                out.append(
                    f"DO $pgdr$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN "
                    f"RAISE NOTICE 'role {role.replace(chr(39), chr(39) * 2)} exists, kept'; END $pgdr$;\n"
                )
                continue
            out.append(line)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(out)


def _refresh_order(conn, names):
    """[(name, quoted name)] of the given materialized views, each after the materialized views it reads."""
    rows = conn.execute(
        """
        select n.nspname || '.' || c.relname, format('%I.%I', n.nspname, c.relname),
               coalesce((select array_agg(distinct rn.nspname || '.' || rc.relname)
                           from pg_rewrite w join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = w.oid
                           join pg_class rc on rc.oid = d.refobjid join pg_namespace rn on rn.oid = rc.relnamespace
                          where w.ev_class = c.oid and rc.relkind = 'm' and rc.oid <> c.oid), '{}')
          from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'm'"""
    ).fetchall()
    deps = {name: set(reads) for name, _, reads in rows}
    idents = {name: ident for name, ident, _ in rows}
    order, seen = [], set()

    def visit(name, path=()):
        if name in seen or name not in deps:
            return
        if name in path:
            raise DRError(
                f"materialized views read each other in a cycle: {' -> '.join((*path, name))}",
                step="refresh materialized views",
            )
        for dep in sorted(deps[name]):
            visit(dep, (*path, name))
        seen.add(name)
        order.append(name)

    for name in sorted(names):
        visit(name)
    wanted = set(names)
    return [(name, idents[name]) for name in order if name in wanted]


def _q(name):
    return '"' + name.replace('"', '""') + '"'


def _literal(text):
    return "'" + text.replace("'", "''") + "'"


def read_index(path):
    with open(path, "rb") as fh:
        return json.loads(fh.read())
