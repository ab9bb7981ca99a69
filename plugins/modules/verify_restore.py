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
  - C(schema) compares every object's hash with the manifest's and names the missing, extra and changed
    objects; with a manifest holding only the fingerprint (the result of M(pgdr.supabase.logical_backup) strips the
    per-object hashes), it compares the fingerprint.
  - C(row_counts) compares each table's row count with the manifest's and names the tables that differ.
  - C(command), when O(command) is given, runs a team's own check with the database in C(SUPABASE_DB_URL)
    and C(DATABASE_URL); its exit code decides.
  - Read-only, never changes anything. Fails when any check fails, naming every failed check; the per-check
    results are returned either way.
version_added: "0.1.0"
author: pgdr authors
extends_documentation_fragment:
  - pgdr.supabase.s3
  - pgdr.supabase.check_command
options:
  dsn:
    description: libpq connection string of the restored database. Never logged.
    type: str
    required: true
  manifest:
    description:
      - The backup's manifest as a dict, for example the C(manifest) of a M(pgdr.supabase.logical_backup) result.
      - Give this or O(manifest_key).
    type: dict
  manifest_key:
    description: Key of the backup's C(manifest.json) in the bucket of O(s3); give this or O(manifest).
    type: str
  s3:
    description: Bucket holding O(manifest_key). Needed only with O(manifest_key).
    required: false
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
      description: C(migrations), C(schema), C(row_counts) or C(command).
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


def load_manifest(params):
    """The manifest given, or read from the bucket."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

    if params["manifest"]:
        return catalog.validate_manifest(params["manifest"], "manifest option")
    target = s3_target(params["s3"])
    manifest = target.get_json(params["manifest_key"], step="read manifest")
    if manifest is None:
        raise DRError(
            "no manifest at this key",
            step="read manifest",
            subject=target.where(params["manifest_key"]),
            hint="list the backups with playbooks/list_backups.yml and pass the key of a complete backup",
        )
    return catalog.validate_manifest(manifest, target.where(params["manifest_key"]))


def main():
    module = AnsibleModule(
        argument_spec={
            "dsn": {"type": "str", "required": True, "no_log": True},
            "manifest": {"type": "dict"},
            "manifest_key": {"type": "str", "no_log": False},
            "s3": {**s3_spec(), "required": False},
            "migrations_dir": {"type": "path"},
            "flavor": {"type": "str", "default": "auto", "choices": ["auto", "supabase", "postgres"]},
            "fail_on_pending": {"type": "bool", "default": False},
            **check_command_spec(),
        },
        required_one_of=[["manifest", "manifest_key"]],
        mutually_exclusive=[["manifest", "manifest_key"]],
        required_by={"manifest_key": "s3"},
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    from ansible_collections.pgdr.supabase.plugins.module_utils import verify

    p = module.params
    try:
        manifest = load_manifest(p)
        if p["migrations_dir"]:
            verify.migration_files(p["migrations_dir"])  # a wrong path fails in check mode too
        if module.check_mode and not verify.database_exists(p["dsn"]):
            exit_checks_skipped(module, list(verify.VERIFY_CHECKS) + (["command"] if p["command"] else []), "verify")
        result = verify.verify_restore(
            p["dsn"],
            manifest,
            migrations_dir=p["migrations_dir"],
            flavor=p["flavor"],
            command=p["command"],
            command_cwd=p["command_cwd"],
            command_timeout=p["command_timeout"],
            fail_on_pending=p["fail_on_pending"],
        )
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)
    exit_checks(module, result)


if __name__ == "__main__":
    main()
