#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: verify_restore
short_description: Verify a restored database against its backup's manifest and the repository's migrations
description:
  - Runs named checks on a restored database, each with C(ok) and the details of what differs.
  - C(migrations) compares the applied history (C(supabase_migrations.schema_migrations)) with the
    C(<digits>_<name>.sql) files of O(migrations_dir) and with the versions the manifest recorded. A version
    applied without a file, or a file older than the newest applied version that was never applied, fails it;
    files newer than the newest applied version are reported as pending (a failure only with O(fail_on_pending)).
  - >-
    C(catalog) compares the restored catalog with the fingerprint the backup took in its own snapshot (its index
    object): every object of the app, those on the platform's tables included, with its definition, owner and
    ACL; the app's default privileges; publication membership; extensions; materialized views' populated state;
    sequence values; cron jobs. Every difference is named (C(grant: public.notes to anon (INSERT, DELETE) is not in
    the backup), C(trigger: auth.users.on_auth_user_created is missing), C(matview: public.daily_revenue is not
    populated)). What the restore disarmed on purpose (its marker says so) is reported, not failed.
  - C(content) recomputes every table's content digest from the restored rows and compares it with the one the
    backup computed from the dump stream (O(content=full)), or compares row counts (O(content=counts)), or is
    reported as not compared (O(content=off)).
  - For backups taken before index objects existed (manifest version 1), C(schema) compares each object's hash
    with the manifest's, C(row_counts) each table's row count.
  - C(command), when O(command) is given, runs a team's own check with the database in C(SUPABASE_DB_URL)
    and C(DATABASE_URL); its exit code decides.
  - Read-only, never changes anything. Fails when any check fails, naming every failed check; the per-check
    results are returned either way.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
  - pgdr.supabase.check_command
options:
  dsn:
    description: libpq connection string of the restored database. Never logged.
    type: str
    required: true
  manifest:
    description:
      - The backup's manifest as a dict, for example the C(manifest) of a M(pgdr.supabase.backup_select) result.
      - Give at most one of O(manifest), O(manifest_key) and O(backup_id); with none, the backup is the one the
        restored database's marker names (O(source) and O(s3) needed).
    type: dict
  manifest_key:
    description: Key of the backup's C(manifest.json) in the bucket of O(s3).
    type: str
  backup_id:
    description: Id of the backup (with O(source), O(prefix) and O(s3)).
    type: str
  source:
    description: Name of the backed-up source in object keys (with O(backup_id), or to follow the marker).
    type: str
  prefix:
    description: Key prefix of the backups.
    type: str
    default: backups
  s3:
    description:
      - Bucket holding the backup. Needed to read a version 2 backup's index (its fingerprint and digests).
    required: false
  decryption_identities:
    description: age identities for an encrypted backup's index. Never logged.
    type: list
    elements: str
    default: []
  content:
    description:
      - V(full) recomputes each table's content digest from the restored rows; V(counts) compares row counts only;
        V(off) compares no content. The result says which ran.
    type: str
    default: full
    choices: [full, counts, "off"]
  jobs:
    description: Sessions reading the restored tables at once for O(content=full).
    type: int
    default: 2
  plan_only:
    description:
      - In check mode, compare nothing even when the database exists (a rehearsal of a restore into a project that
        holds something else now); return the checks a real run would make. Ignored outside check mode.
    type: bool
    default: false
  migrations_dir:
    description:
      - The repository's C(supabase/migrations) folder. Omit to compare the history with the manifest only.
    type: path
  flavor:
    description: Which schemas the schema check covers; V(auto) takes the manifest's source flavour.
    type: str
    default: auto
    choices: [auto, supabase, postgres]
  fail_on_pending:
    description: Fail the C(migrations) check when migration files newer than the newest applied version exist.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - Runs the checks for real (they only read). When the database does not exist yet (a restore that check
        mode only planned), returns C(skipped_reason) and the checks that would run instead of failing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.logical_backup
  - module: pgdr.supabase.smoke
"""

EXAMPLES = r"""
- name: Verify the restored database against the backup's manifest and the migration files
  pgdr.supabase.verify_restore:
    dsn: "{{ vault_staging_db_url }}"
    manifest_key: backups/production/logical/20261128T000000Z/manifest.json
    s3: "{{ backup_s3 }}"
    migrations_dir: "{{ playbook_dir }}/../supabase/migrations"
  register: verification

- name: Verify with the manifest a backup task returned, and the team's own test command
  pgdr.supabase.verify_restore:
    dsn: "{{ vault_staging_db_url }}"
    manifest: "{{ backup.manifest }}"
    migrations_dir: /srv/app/supabase/migrations
    command: [npm, run, test:db]
    command_cwd: /srv/app
"""

RETURN = r"""
ok:
  description: Whether every check passed.
  returned: always
  type: bool
checks:
  description: One result per check, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: C(migrations), C(catalog), C(content), C(schema), C(row_counts) or C(command).
      type: str
    ok:
      description: Whether the check passed.
      type: bool
    summary:
      description: One line; on failure it names the versions, objects or tables that differ.
      type: str
      sample: "row counts differ: public.events expected 1000, got 990"
    details:
      description: The comparison in full (missing/extra/pending versions; missing/extra/changed objects; counts).
      type: dict
    duration_s:
      description: Seconds the check took.
      type: float
failed_checks:
  description: Names of the checks that failed.
  returned: always
  type: list
  elements: str
would_run:
  description: In check mode when the database does not exist yet, the checks a real run would make.
  returned: when skipped
  type: list
  elements: str
skipped_reason:
  description: Why no check ran (check mode and the database does not exist yet).
  returned: when skipped
  type: str
database:
  description: host:port/database verified (no credentials).
  returned: always
  type: str
content:
  description: The content verification that ran (V(full), V(counts) or V(off)); null for a version 1 backup.
  returned: always
  type: str
backup_id:
  description: The backup verified against.
  returned: always
  type: str
marker:
  description: The restored database's marker (backup id, status, what was disarmed), null without one.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    check_command_spec,
    exit_checks,
    exit_checks_skipped,
    fail,
    long_running,
    s3_spec,
    s3_target,
)


def load_backup(params, dsn_marker):
    """(manifest, index): the manifest given, or read from the bucket by key, by backup id, or by the backup id the
    restored database's marker names; the index read from the bucket (None for a version 1 backup)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, logical_restore, selection
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

    target = s3_target(params["s3"]) if params["s3"] else None
    identities = params["decryption_identities"] or None
    if params["manifest"]:
        manifest = catalog.validate_manifest(params["manifest"], "manifest option")
    elif params["manifest_key"]:
        manifest = target.get_json(params["manifest_key"], step="read manifest")
        if manifest is None:
            raise DRError(
                "no manifest at this key",
                step="read manifest",
                subject=target.where(params["manifest_key"]),
                hint="list the backups with playbooks/list_backups.yml and pass the key of a complete backup",
            )
        manifest = catalog.validate_manifest(manifest, target.where(params["manifest_key"]))
    else:
        backup_id = params["backup_id"] or (dsn_marker or {}).get("backup_id")
        if not backup_id:
            raise DRError(
                "the database carries no restore marker, and no backup was named",
                step="read manifest",
                hint="pass the backup id (backup_id) the database was restored from",
            )
        manifest = selection.load_manifest(target, params["prefix"], params["source"], backup_id)
    index = None
    if int(manifest.get("manifest_version", 1)) >= 2:
        if target is None:
            raise DRError(
                "this backup's catalog fingerprint and content digests are in its index object, in the bucket",
                step="read index",
                hint="pass the bucket (s3) too",
            )
        index = logical_restore.read_index(target, manifest, identities and _identities(identities))
    return manifest, index


def _identities(texts):
    from ansible_collections.pgdr.supabase.plugins.module_utils import crypto

    return crypto.parse_identities(texts)


def main():
    module = AnsibleModule(
        argument_spec={
            "dsn": {"type": "str", "required": True, "no_log": True},
            "manifest": {"type": "dict"},
            "manifest_key": {"type": "str", "no_log": False},
            "backup_id": {"type": "str"},
            "source": {"type": "str"},
            "prefix": {"type": "str", "default": "backups"},
            "s3": {**s3_spec(), "required": False},
            "decryption_identities": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "migrations_dir": {"type": "path"},
            "flavor": {"type": "str", "default": "auto", "choices": ["auto", "supabase", "postgres"]},
            "fail_on_pending": {"type": "bool", "default": False},
            "content": {"type": "str", "default": "full", "choices": ["full", "counts", "off"]},
            "jobs": {"type": "int", "default": 2},
            "plan_only": {"type": "bool", "default": False},
            **check_command_spec(),
        },
        mutually_exclusive=[["manifest", "manifest_key", "backup_id"]],
        required_by={"manifest_key": "s3", "backup_id": ("s3", "source")},
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore, pg, verify

    p = module.params
    try:
        if not (p["manifest"] or p["manifest_key"] or p["backup_id"]) and not (p["s3"] and p["source"]):
            module.fail_json(
                msg="name the backup (manifest, manifest_key or backup_id), or give s3 and source to verify "
                "against the backup the database's marker names"
            )
        if p["manifest"]:
            from ansible_collections.pgdr.supabase.plugins.module_utils import catalog

            catalog.validate_manifest(p["manifest"], "manifest option")
        if p["migrations_dir"]:
            verify.migration_files(p["migrations_dir"])  # a wrong path fails in check mode too
        # A rehearsal of a restore that is only planned connects nowhere (an empty DSN would mean libpq's defaults).
        exists = not (module.check_mode and p["plan_only"]) and verify.database_exists(p["dsn"])
        if module.check_mode and (p["plan_only"] or not exists):
            exit_checks_skipped(module, list(verify.VERIFY_CHECKS) + (["command"] if p["command"] else []), "verify")
        marker = None
        if exists:
            with pg.connect(p["dsn"], step="connect to the restored database", application_name="pgdr verify") as conn:
                marker = logical_restore.marker_of(conn)
        manifest, index = load_backup(p, marker)
        result = verify.verify_restore(
            p["dsn"],
            manifest,
            migrations_dir=p["migrations_dir"],
            flavor=p["flavor"],
            command=p["command"],
            command_cwd=p["command_cwd"],
            command_timeout=p["command_timeout"],
            fail_on_pending=p["fail_on_pending"],
            index=index,
            content=p["content"],
            jobs=p["jobs"],
            marker=marker,
        )
        result["backup_id"] = manifest.get("backup_id")
        result["marker"] = marker
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)
    exit_checks(module, result)


if __name__ == "__main__":
    main()
