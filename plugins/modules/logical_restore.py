#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: logical_restore
short_description: Restore a logical backup into a new database, switching to it only after success
description:
  - Downloads every object of the backup, verifying its SHA-256 while it streams (the data object straight into
    C(pg_restore) unless O(data_mode=file)); then restores in the order Supabase needs (roles, schema, data in
    replica mode, indexes and constraints, migration history) with C(ON_ERROR_STOP) semantics and parallel
    C(pg_restore) jobs.
  - With O(mode=new_database) the restore goes into a temporary database made from O(template) (a database that
    already has the platform schemas) and takes the final name only when every step succeeded. A failure drops the
    temporary database; an existing database is never touched.
  - With O(mode=project) it goes into the target's own database in place (a Supabase project's C(postgres), the only
    database its API serves); the app an earlier restore put there is removed first (the app's schemas, the objects
    of C(public), the app's objects on the platform's tables, the platform rows the backup carries), the platform
    is left alone, and a failed run leaves a C(restoring) marker that the next run repairs.
  - Everything runs as the target's role, which need not be a superuser (a hosted project's C(postgres)). After
    the load, every object's owner and ACL and the app's default privileges are made equal to the backup's
    fingerprint, whatever the target's default privileges were; materialized views the source had populated are
    refreshed; webhooks are created disabled and cron jobs inactive unless O(disarm=false).
  - The restored database carries a marker naming the backup it holds; a second run with the same backup changes
    nothing.
  - Given a backup id (O(backup), O(source), O(prefix)), reads the backup's manifest from O(s3) itself and trusts
    it the way M(pgdr.supabase.backup_select) does, before any object is read - its signature against
    O(manifest_public_keys), every object key inside the backup's own folder, and the primary manifest compared
    with its locked copy in O(secondary_s3); with O(from_secondary), the exact locked version the backup's
    secure-copy record names. A O(manifest) handed in instead is checked the same way (signature, keys).
  - Refuses a production target unless O(allow_over_production) and a typed O(confirm). Production is decided on
    the server's identity (C(system_identifier) from C(pg_control_system()) and the database written, read through
    the restore's own session), compared with O(production) entries and with the backup's own source; the host and
    port of O(production) entries are compared too. It refuses when the identity cannot be read.
  - One restore at a time per target database (a PostgreSQL advisory lock held by its admin session); it stops
    cleanly on SIGTERM or when its controller is gone, dropping its temporary database and work files.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
  - pgdr.supabase.primary_s3
  - pgdr.supabase.secondary_s3
  - pgdr.supabase.manifest_trust
options:
  backup:
    description:
      - The id of the backup to restore (C(20261128T000000Z); a M(pgdr.supabase.backup_select) result's
        C(backup_id)); its manifest is read from O(s3) under O(prefix) and O(source). Give this or O(manifest).
    type: str
  source:
    description: The source name in the backup's object keys (with O(backup)).
    type: str
  from_secondary:
    description:
      - With O(backup), O(s3) is the immutable (Object Lock) bucket and the manifest is read at the version the
        backup's secure-copy record names (in that bucket, or for older backups in O(primary_s3)).
    type: bool
    default: false
  prefix:
    description:
      - Key prefix of the backups in the bucket. When given, every object key of the manifest must lie in
        C(<prefix>/<source>/logical/<backup id>/); without it, in a folder of that shape under any prefix.
    type: str
  target_dsn:
    description:
      - Connection string of the target server, as a role that may create databases. Its database is the one
        connected to for administration and, for Supabase backups, the default template. Never logged.
    type: str
    required: true
  manifest:
    description:
      - The backup's manifest itself, for a backup that is not in the bucket's folder layout (a test's); give
        O(backup) instead.
    type: dict
  mode:
    description:
      - V(new_database) restores into a new database on the target server (self-hosted servers; needs a
        platform-ready O(template) for a Supabase backup).
      - V(project) restores into the target's own database, in place (a Supabase staging project).
    type: str
    default: new_database
    choices: [new_database, project]
  database:
    description: Name of the new database. Default V(<database_prefix>_<backup id>).
    type: str
  database_prefix:
    description: Prefix of the default database name.
    type: str
    default: restore
  template:
    description:
      - Template of the new database.
      - Default the target's own database for Supabase backups (it has the platform schemas), V(template0) otherwise.
    type: str
  jobs:
    description: Workers loading the data objects at once, and C(pg_restore) jobs for indexes and constraints.
    type: int
    default: 2
  bin_dir:
    description: Folder of pg_restore and psql; default the backup's major version, then PATH.
    type: path
  workdir:
    description:
      - Folder for the verified local copy, in a folder of the run's own inside it (mode 0700, files 0600, removed
        on every exit path, SIGTERM included); needs the backup's uncompressed size free.
      - Work folders that killed runs on this host left there are removed first and listed in RV(cleaned).
    type: path
    default: /var/tmp
  production:
    description:
      - Databases the inventory names as production, as dicts with C(system_identifier) (of the server, from
        C(select system_identifier from pg_control_system())) and C(database), and optionally C(host) and C(port)
        (compared too, an extra refusal). The backup's own source (its manifest) always counts as production.
    type: list
    elements: dict
    default: []
  allow_over_production:
    description: Allow a production target (also needs O(confirm)).
    type: bool
    default: false
  confirm:
    description: Typed confirmation for a production target, exactly C(<host>:<port>/<database>).
    type: str
  progress_file:
    description: File to append progress lines to.
    type: path
  data_mode:
    description:
      - V(stream) sends the data object from S3 straight into C(pg_restore) as it is verified (no local copy of
        the data; the database only gets its final name once the whole object's SHA-256 matched); indexes and
        constraints are still built with O(jobs) in parallel.
      - V(file) first makes a verified local copy in O(workdir) (the data's uncompressed size must fit), then
        restores the data with O(jobs) in parallel too; faster for databases of many mid-sized tables.
      - Only for backups taken before data objects existed (manifest version 1); newer backups always stream.
    type: str
    default: stream
    choices: [stream, file]
  skip_extensions:
    description:
      - Extensions of the backup to leave out when the target cannot have them (pg_cron lives only in the database
        that C(cron.database_name) names, so a throwaway database cannot). The verification reports them.
    type: list
    elements: str
    default: []
  disarm:
    description:
      - Create the backup's database webhooks disabled and its cron jobs inactive, so that staging does not act
        like production. The result's C(report.disarmed) lists each item with the statement that re-arms it.
    type: bool
    default: true
  decryption_identities:
    description: age identities (C(AGE-SECRET-KEY-1...)) for encrypted backups, from a vault or a lookup. Never logged.
    type: list
    elements: str
    default: []
  new_project:
    description:
      - The hosted project made for this restore (its ref, or its name while only planned), when there is one; the
        result's C(restore.target) and C(restore.mode) then say so.
    type: str
  lock_wait:
    description:
      - Seconds to wait for another restore into the same target database before failing. Two restores into one
        target never interleave; the first holds a PostgreSQL advisory lock on the target server (its session's
        C(application_name) names it), and the second fails naming it, or waits this long.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: Connects read-only and returns the plan (database, steps, disk needed); writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.backup_select
"""

EXAMPLES = r"""
- name: Restore the chosen backup into a new staging database
  pgdr.supabase.logical_restore:
    target_dsn: "{{ vault_staging_admin_db_url }}"
    backup: "{{ chosen.backup_id }}"
    source: production
    prefix: backups
    s3: "{{ backup_s3 }}"
    production:
      - host: db.abcdefghijklmnopqrst.supabase.co
        port: 5432
        database: postgres
  register: restored
"""

RETURN = r"""
restore:
  description:
    - The one result every restore module returns (M(pgdr.supabase.logical_restore),
      M(pgdr.supabase.pgbackrest_restore), M(pgdr.supabase.supabase_pitr_restore)); M(pgdr.supabase.record) takes
      it as it is (its O(pgdr.supabase.record#module:restore) option).
    - C(dsn) the restored database's connection string with its password masked (the role puts the password back
      into a C(no_log) fact; empty while only planned for a target that does not exist yet), C(target) where it
      went, C(backup) (C(id), C(source), C(taken_at), and C(objects) for a logical backup), C(point_in_time) (the
      moment aimed at, C(target_time), and where the method knows it where replay stopped; null when the backup
      itself is given back), C(rpo_s) (data lost relative to it when measured; null when unknown), C(timings)
      (seconds per step), C(verification) (C(state) V(checksums), V(repository) or V(none), what the restore itself
      verified), C(method) (V(logical), V(pitr), V(supabase_pitr)), C(mode), C(planned) (check mode, only
      planned) and C(details) (what the record also keeps).
  returned: always
  type: dict
  sample:
    method: logical
    mode: new_database
    dsn: "postgresql://postgres:********@127.0.0.1:5433/restore_20261128t000000z"
    target: "127.0.0.1:5433/restore_20261128t000000z"
    backup: {id: 20261128T000000Z, source: production, taken_at: "2026-11-28T00:00:04Z"}
    point_in_time: null
    rpo_s: null
    timings: {download_verify: 1.2, data: 4.5}
    verification: {state: checksums}
    planned: false
    details: {}
database:
  description: Name of the database holding the backup.
  returned: always
  type: str
  sample: restore_20261128t000000z
backup_id:
  description: Id of the restored backup.
  returned: always
  type: str
plan:
  description: The database, the steps, the disk needed and the production check (with the target's identity).
  returned: always
  type: dict
trust:
  description: Why the manifest was trusted (C(signature) V(valid) or the named unsigned override, C(key_id)).
  returned: always
  type: dict
marker:
  description: The marker the database carries (backup id, status, restored time).
  returned: when the database exists
  type: dict
report:
  description:
    - What the load did beyond the plan; the entries the schema restore left out (C(skipped_entries)) and why,
      the statements that made privileges equal to the backup's (C(privilege_statements)), what was disarmed
      (C(disarmed), each with its C(rearm) statement), extensions left out, what no logical backup carries
      (C(not_carried)), functions that call C(net.http_*) themselves (C(outgoing_functions)), and for
      O(mode=project) the cleanup (C(cleaned)).
  returned: when a restore ran
  type: dict
timings:
  description: Seconds per step (download_verify, create_database or clean, prepare, roles, schema, data, ...).
  returned: when a restore ran
  type: dict
duration_s:
  description: Seconds the restore took.
  returned: when a restore ran
  type: float
cleaned:
  description: Work folders of killed restores on this host that this run removed (they may hold decrypted dumps).
  returned: when a restore ran
  type: list
  elements: str
progress_file:
  description: The file the progress lines went to (O(progress_file)), or null.
  returned: when a restore ran
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    fail,
    long_running,
    manifest_trust_spec,
    optional_s3_spec,
    s3_spec,
    s3_target,
    warn_cleaned,
)


def warn_guard(module, plan):
    for warning in (plan.get("production_guard") or {}).get("warnings") or ():
        module.warn(warning)


def restore_of(p, m, result, planned, trust):
    """The restore result (restore_result.build) of this run or plan of the backup of manifest m."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg, restore_result

    target = result["plan"].get("target") or ""
    if p["new_project"]:
        target = f"new project {p['new_project']}: {target}"
    disarmed = (result.get("report") or {}).get("disarmed")
    return restore_result.build(
        "logical",
        "new_project" if p["new_project"] else p["mode"],
        pg.mask_password(pg.with_database(p["target_dsn"], result["database"])),
        target,
        {
            "id": m.get("backup_id"),
            "source": (m.get("source") or {}).get("name"),
            "taken_at": m.get("started_at"),
            "objects": m.get("objects") or [],
        },
        timings=result.get("timings"),
        # The objects' SHA-256 (and the manifest's signature) are checked as they stream in.
        verification={
            "state": "checksums" if result.get("changed") and not planned else "none",
            "manifest": trust.get("signature"),
        },
        planned=planned,
        details={"disarmed": disarmed} if disarmed is not None else {},
    )


def main():
    module = AnsibleModule(
        argument_spec={
            "target_dsn": {"type": "str", "required": True, "no_log": True},
            "manifest": {"type": "dict"},
            "backup": {"type": "str"},
            "source": {"type": "str"},
            "from_secondary": {"type": "bool", "default": False},
            "primary_s3": optional_s3_spec(),
            "secondary_s3": optional_s3_spec(),
            "s3": s3_spec(),
            "mode": {"type": "str", "default": "new_database", "choices": ["new_database", "project"]},
            "database": {"type": "str"},
            "database_prefix": {"type": "str", "default": "restore"},
            "template": {"type": "str"},
            "jobs": {"type": "int", "default": 2},
            "bin_dir": {"type": "path"},
            "workdir": {"type": "path", "default": "/var/tmp"},  # noqa: S108 - a private mkdtemp inside it
            "production": {"type": "list", "elements": "dict", "default": []},
            "allow_over_production": {"type": "bool", "default": False},
            "confirm": {"type": "str"},
            "progress_file": {"type": "path"},
            "decryption_identities": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "data_mode": {"type": "str", "default": "stream", "choices": ["stream", "file"]},
            "skip_extensions": {"type": "list", "elements": "str", "default": []},
            "disarm": {"type": "bool", "default": True},
            "lock_wait": {"type": "int", "default": 0},
            "prefix": {"type": "str"},
            "new_project": {"type": "str"},
            **manifest_trust_spec(),
        },
        required_one_of=[["manifest", "backup"]],
        mutually_exclusive=[["manifest", "backup"]],
        required_by={"backup": ("source", "prefix")},
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, logical_restore, signing

    p = module.params
    try:
        # The manifest is checked before any object is read (issue 9.6): signature, keys inside the folder.
        keys = signing.parse_public_keys(p["manifest_public_keys"])
        if p["backup"]:
            m, trust, _named_by = signing.trusted_backup(
                s3_target(p["s3"]),
                p["prefix"],
                p["source"],
                p["backup"],
                keys,
                p["allow_unsigned"],
                from_secondary=p["from_secondary"],
                primary=s3_target(p["primary_s3"]) if p["from_secondary"] and p["primary_s3"] else None,
                secondary=s3_target(p["secondary_s3"]) if p["secondary_s3"] and not p["from_secondary"] else None,
            )
            for warning in trust["warnings"]:
                module.warn(warning)
        else:
            m = p["manifest"]
            folder = catalog.backup_prefix(p["prefix"], m["source"]["name"], m["backup_id"]) if p["prefix"] else None
            trust = signing.verify(m, keys, p["allow_unsigned"], folder, step="check manifest")
        request = logical_restore.RestoreRequest(
            p["target_dsn"],
            m,
            s3_target(p["s3"]),
            database=p["database"],
            database_prefix=p["database_prefix"],
            mode=p["mode"],
            template=p["template"],
            jobs=p["jobs"],
            bin_dir=p["bin_dir"],
            workdir=p["workdir"],
            production=p["production"],
            allow_over_production=p["allow_over_production"],
            confirm=p["confirm"],
            progress_file=p["progress_file"],
            decryption_identities=p["decryption_identities"],
            data_mode=p["data_mode"],
            skip_extensions=p["skip_extensions"],
            disarm=p["disarm"],
            lock_wait=p["lock_wait"],
        )
        if module.check_mode:
            plan = logical_restore.plan(request)
            warn_guard(module, plan)
            done = plan["action"] == "none"
            planned = {"database": request.database, "plan": plan, "changed": not done}
            module.exit_json(
                restore=restore_of(p, m, planned, not done, trust),
                changed=not done,
                database=request.database,
                backup_id=request.backup_id,
                plan=plan,
                trust=trust,
                marker=plan["marker"],
                msg=f"{request.where} holds backup {request.backup_id} already"
                if done
                else f"would restore backup {request.backup_id} into {request.where}",
            )
        result = logical_restore.run(request)
        warn_guard(module, result["plan"])
        result["progress_file"] = p["progress_file"]
        result["trust"] = trust
        result["restore"] = restore_of(p, m, result, False, trust)
        warn_cleaned(module, result)
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
