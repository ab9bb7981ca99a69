#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pitr_verify
short_description: Verify a cluster restored to a point in time, and say what could not be verified
description:
  - A restore to a time (M(pgdr.supabase.pgbackrest_restore)) has no logical manifest of the moment restored, so
    this checks what can be checked without one, and lists what it did not check (C(not_checked)).
  - C(migrations) compares the restored migration history (C(supabase_migrations.schema_migrations)) with the
    repository's C(<digits>_<name>.sql) files in O(migrations_dir).
  - C(catalog) compares the restored catalog (every object of the app with its definition, owner and ACL, the app's
    policies and triggers on the platform's tables, default privileges, publication membership, extensions) with
    the source's current catalog (O(source_dsn)), with the same fingerprint the logical verification uses. It is
    compared only when the source's migration history equals the restored one; when migrations were applied on the
    source since the target, it is not compared and C(not_checked) names them.
  - C(amcheck) runs C(pg_amcheck) (every heap table, every btree index, C(--heapallindexed)) on the restored
    database over its Unix socket as O(admin_user). The amcheck extension is installed for the check and dropped
    after it when the database did not have it.
  - Content (row counts, digests), sequences and cron jobs are never compared, and C(not_checked) says so.
  - Fails when any check fails, naming each; the per-check results are returned either way.
version_added: "0.2.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  dsn:
    description:
      - libpq connection string of the restored database, as the runbooks log in (its own password). Never logged.
      - An empty string is refused (libpq would fall back to PGHOST and the local socket), except in check mode with
        O(plan_only), where nothing is connected to.
    type: str
    required: true
  source_dsn:
    description: The source's connection string, for its current catalog; omit to leave the catalog unchecked.
    type: str
  migrations_dir:
    description: The repository's C(supabase/migrations) folder.
    type: path
  fail_on_pending:
    description: Fail C(migrations) when migration files newer than the newest applied version exist.
    type: bool
    default: false
  amcheck:
    description: Run C(pg_amcheck) on the restored database (needs O(data_dir), O(socket_dir), O(port)).
    type: bool
    default: true
  data_dir:
    description: Data folder of the restored cluster (for the server's version and binaries).
    type: path
  socket_dir:
    description: Unix socket folder of the restored cluster.
    type: path
  port:
    description: Port of the restored cluster.
    type: int
  admin_user:
    description: A superuser of the restored cluster reached over the Unix socket as the postgres OS user.
    type: str
    default: postgres
  dbname:
    description: Database checked by C(pg_amcheck).
    type: str
    default: postgres
  plan_only:
    description:
      - In check mode, connect to nothing and return the checks a real run makes on O(planned_target) (a restore
        that check mode only planned). Ignored outside check mode.
    type: bool
    default: false
  planned_target:
    description: How to name the planned restored cluster in check mode (its folder and port).
    type: str
    default: the planned restored cluster
attributes:
  check_mode:
    support: full
    details: Runs the read-only checks for real unless O(plan_only); C(amcheck) (which installs amcheck's extension
      for its check) is not run in check mode, and C(not_checked) says so.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.pgbackrest_restore
  - module: pgdr.supabase.verify_restore
"""

EXAMPLES = r"""
- name: Verify the cluster restored to a time
  pgdr.supabase.pitr_verify:
    dsn: "{{ restored.dsn }}"
    source_dsn: "{{ vault_production_db_url }}"
    migrations_dir: /srv/app/supabase/migrations
    data_dir: "{{ restored.data_dir }}"
    socket_dir: "{{ restored.socket_dir }}"
    port: "{{ restored.port }}"
  become: true
"""

RETURN = r"""
ok:
  description: Whether every check passed.
  returned: always
  type: bool
checks:
  description: One result per check (C(migrations), C(catalog), C(amcheck)) with name, ok, summary, details.
  returned: always
  type: list
  elements: dict
failed_checks:
  description: Names of the checks that failed.
  returned: always
  type: list
  elements: str
not_checked:
  description: What was not verified, and why, one sentence each.
  returned: always
  type: list
  elements: str
would_run:
  description: In check mode with O(plan_only), the checks a real run makes.
  returned: when planned only
  type: list
  elements: str
planned_target:
  description: In check mode with O(plan_only), the planned restored cluster.
  returned: when planned only
  type: str
database:
  description: host:port/database verified (no credentials).
  returned: when checks ran
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    exit_checks,
    fail,
    long_running,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "dsn": {"type": "str", "required": True, "no_log": True},
            "source_dsn": {"type": "str", "no_log": True},
            "migrations_dir": {"type": "path"},
            "fail_on_pending": {"type": "bool", "default": False},
            "amcheck": {"type": "bool", "default": True},
            "data_dir": {"type": "path"},
            "socket_dir": {"type": "path"},
            "port": {"type": "int"},
            "admin_user": {"type": "str", "default": "postgres"},
            "dbname": {"type": "str", "default": "postgres"},
            "plan_only": {"type": "bool", "default": False},
            "planned_target": {"type": "str", "default": "the planned restored cluster"},
        },
        supports_check_mode=True,
    )
    long_running(module)
    from ansible_collections.pgdr.supabase.plugins.module_utils import pitr_verify, verify

    p = module.params
    try:
        if p["migrations_dir"]:
            verify.migration_files(p["migrations_dir"])  # a wrong path fails in check mode too
        if module.check_mode and p["plan_only"]:
            module.exit_json(
                changed=False,
                **pitr_verify.planned(p["planned_target"], p["source_dsn"], p["migrations_dir"], p["amcheck"]),
            )
        amcheck = None
        if p["amcheck"] and not module.check_mode:
            missing = [k for k in ("data_dir", "socket_dir", "port") if not p[k]]
            if missing:
                module.fail_json(msg=f"amcheck needs the restored cluster's {', '.join(missing)}")
            amcheck = {k: p[k] for k in ("data_dir", "socket_dir", "port", "admin_user", "dbname")}
        result = pitr_verify.verify_pitr(
            p["dsn"],
            source_dsn=p["source_dsn"] or None,
            migrations_dir=p["migrations_dir"],
            amcheck=amcheck,
            fail_on_pending=p["fail_on_pending"],
            amcheck_skipped="pg_amcheck is not run in check mode (it installs the amcheck extension for its check)"
            if p["amcheck"] and module.check_mode
            else None,
        )
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)
    exit_checks(module, result)


if __name__ == "__main__":
    main()
