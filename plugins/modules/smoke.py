#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: smoke
short_description: Run SQL smoke checks (each rolled back), an HTTP check and a command against a database
description:
  - Runs every C(*.sql) check file of O(checks_dirs) (files starting with C(_) are shared fixtures, not checks).
    A check file's header declares its name, what its last statement must give (C(rows=<n>), C(value=<text>),
    C(error=<SQLSTATE or text>) or C(empty)), and optionally the user it acts as (C(as_user)), as the Supabase
    API does for a signed-in request. The format is described in the C(smoke_tests) role's README.
  - Each check runs in one transaction that is always rolled back, so the database is left as it was.
  - A check of a later folder replaces a check of the same name in an earlier one.
  - Optionally an HTTP check (status code) and a command (its exit code), with the database in
    C(SUPABASE_DB_URL) and C(DATABASE_URL).
  - Then the app's own pgTAP suite (O(pgtap_dir), by default the C(tests) folder next to O(migrations_dir), as
    C(supabase test db) runs it). Every C(*.sql) and C(*.pg) file runs with C(pg_prove), as the connecting role,
    each in one transaction that is rolled back. Each file is one check, naming its failing tests and their
    diagnostics. pgTAP is created in the C(extensions) schema only when the database lacks it, and dropped again
    afterwards, and sequences the suite advanced are set back, so the database still equals its backup (one that
    cannot be set back fails the check C(pgtap:sequences)). A file that creates an extension the server does not
    have is not run; its check names the extension.
  - Never changes anything (pgTAP aside, for the duration of the suite). Fails when any check fails, naming every
    failed check; the per-check results are returned either way.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.check_command
  - pgdr.supabase.s3
options:
  dsn:
    description: libpq connection string of the database to test. Never logged.
    type: str
    required: true
  plan_only:
    description:
      - In check mode, run nothing even when the database exists (a rehearsal of a restore into a project that
        holds something else now). Outside check mode it is ignored.
    type: bool
    default: false
  manifest:
    description:
      - The backup about to be restored (its manifest), for check mode; each check is matched against the
        backup's catalog (its index, read from O(s3)), naming the tables and functions of the app's schemas it
        uses that the backup does not have.
    type: dict
  s3:
    description: The bucket holding the backup of O(manifest).
    required: false
  decryption_identities:
    description: age identities of an encrypted backup. Never logged.
    type: list
    elements: str
    default: []
  checks_dirs:
    description: Folders of C(*.sql) check files, run in order.
    type: list
    elements: path
    default: []
  pgtap_dir:
    description:
      - Folder of the app's pgTAP test files (C(*.sql), C(*.pg), sub-folders included), for example the app's
        C(supabase/tests). It must exist when given. Empty for the C(tests) folder next to O(migrations_dir) when
        that folder exists (else no pgTAP tests run).
    type: path
  migrations_dir:
    description:
      - The app's C(supabase/migrations) folder; only used to find the default O(pgtap_dir) (its sibling C(tests)).
    type: path
  pgtap_admin_dsn:
    description:
      - A connection allowed to create extensions (the platform's admin), used only when the O(dsn) login may not
        create pgTAP and the database lacks it. The tests themselves always run as O(dsn)'s login. Never logged.
    type: str
  pgtap_timeout:
    description: Seconds each pgTAP file may take; past it the file fails (its transaction rolls back).
    type: int
    default: 300
  http:
    description: An HTTP check; omit or leave C(url) empty for none.
    type: dict
    suboptions:
      url:
        description: URL to request.
        type: str
      status:
        description: Expected status code.
        type: int
        default: 200
      method:
        description: HTTP method.
        type: str
        default: GET
      headers:
        description: Request headers (values are masked in the result).
        type: dict
      timeout:
        description: Seconds to wait for the answer.
        type: float
        default: 10
      ca_file:
        description: CA certificate file to verify the server with.
        type: path
      validate_certs:
        description: Verify the server's TLS certificate.
        type: bool
        default: true
      name:
        description: Name of the check in the results.
        type: str
        default: http
attributes:
  check_mode:
    support: full
    details:
      - Runs the SQL checks for real (they roll back). When the database does not exist yet (a restore that check
        mode only planned), returns C(skipped_reason) and the checks that would run instead of failing.
      - The pgTAP files never run in check mode (they would install pgTAP); C(pgtap_plan) lists each file and the
        number of tests it plans.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.verify_restore
"""

EXAMPLES = r"""
- name: Run the shipped smoke checks and the team's own against the restored database
  pgdr.supabase.smoke:
    dsn: "{{ vault_staging_db_url }}"
    checks_dirs:
      - "{{ role_path }}/files/checks"
      - /srv/app/supabase/smoke
    # The app's pgTAP suite, supabase/tests next to the migrations.
    migrations_dir: /srv/app/supabase/migrations
    http:
      url: https://staging.example.com/healthz
      status: 200
  register: smoke
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
      description: The check's name.
      type: str
      sample: tenant_isolation_events
    ok:
      description: Whether the check passed.
      type: bool
    summary:
      description: One line, naming what was expected and what came.
      type: str
      sample: expected 0 rows, got 12
    details:
      description:
        - File, expectation, the first rows returned or the error, the claims used.
        - For a pgTAP file, C(planned), C(ran), C(passed), C(failed_tests) (each C(number), C(description),
          C(diagnostics)), C(error) (the first psql error and its line), C(missing_extension), C(output_tail).
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
  description: In check mode before the restore, the checks a real run would make.
  returned: when skipped
  type: list
  elements: str
plan:
  description:
    - In check mode with O(manifest) and O(s3), per check what it uses of the app's schemas (C(uses)) and what of
      that the backup lacks (C(missing)).
  returned: when planned against a backup
  type: list
  elements: dict
cannot_pass:
  description: Checks that use a table or function the backup does not have.
  returned: when planned against a backup
  type: list
  elements: str
pgtap_plan:
  description: In check mode, each pgTAP file (C(name) as in C(checks), C(file)), the tests it plans (C(plan),
    null without a plan) and the extensions it creates (C(extensions)); nothing ran.
  returned: in check mode, when there are pgTAP files
  type: list
  elements: dict
  sample: [{name: "pgtap:rls_isolation.sql", file: /srv/app/supabase/tests/rls_isolation.sql, plan: 12, extensions: []}]
pgtap_dir:
  description: The pgTAP folder that was used (null for none).
  returned: always
  type: str
skipped_reason:
  description: Why no check ran (check mode and the database does not exist yet).
  returned: when skipped
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    check_command_spec,
    exit_checks,
    exit_checks_skipped,
    fail,
    s3_spec,
    s3_target,
)


def exit_planned(module, planned, checks, params, pgtap_plan):
    """Check mode before the restore: each check, what it uses of the backup, and whether the backup has it."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import crypto, logical_restore

    identities = crypto.parse_identities(params["decryption_identities"]) if params["decryption_identities"] else None
    index = logical_restore.read_index(s3_target(params["s3"]), params["manifest"], identities) or {}
    plan = smoke_plan(checks, index)
    cannot = [p["name"] for p in plan if p["missing"]]
    module.exit_json(
        changed=False,
        ok=True,
        checks=[],
        failed_checks=[],
        would_run=planned,
        plan=plan,
        cannot_pass=cannot,
        skipped_reason="check mode: the restore was only planned; nothing to test yet",
        **pgtap_result(pgtap_plan, params["_pgtap_dir"]),
        msg=f"check mode: would run {len(planned)} checks"
        + (f"; {len(cannot)} cannot pass on this backup: {', '.join(cannot)}" if cannot else ""),
    )


def pgtap_result(pgtap_plan, pgtap_dir):
    """What check mode adds about the pgTAP files: each with its plan count."""
    return {"pgtap_plan": pgtap_plan, "pgtap_dir": pgtap_dir} if pgtap_plan else {"pgtap_dir": pgtap_dir}


def smoke_plan(checks, index):
    from ansible_collections.pgdr.supabase.plugins.module_utils import smoke

    if not index.get("fingerprint"):
        return [{"name": c["name"], "uses": [], "missing": []} for c in checks]
    return smoke.plan_against_backup(checks, index["fingerprint"])


def main():
    module = AnsibleModule(
        argument_spec={
            "dsn": {"type": "str", "required": True, "no_log": True},
            "checks_dirs": {"type": "list", "elements": "path", "default": []},
            "http": {
                "type": "dict",
                "options": {
                    "url": {"type": "str"},
                    "status": {"type": "int", "default": 200},
                    "method": {"type": "str", "default": "GET"},
                    "headers": {"type": "dict", "no_log": True},
                    "timeout": {"type": "float", "default": 10},
                    "ca_file": {"type": "path"},
                    "validate_certs": {"type": "bool", "default": True},
                    "name": {"type": "str", "default": "http"},
                },
            },
            "pgtap_dir": {"type": "path"},
            "migrations_dir": {"type": "path"},
            "pgtap_admin_dsn": {"type": "str", "no_log": True},
            "pgtap_timeout": {"type": "int", "default": 300},
            "plan_only": {"type": "bool", "default": False},
            "manifest": {"type": "dict"},
            "s3": {**s3_spec(), "required": False},
            "decryption_identities": {"type": "list", "elements": "str", "default": [], "no_log": True},
            **check_command_spec(),
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgtap, smoke, verify

    p = module.params
    try:
        checks = smoke.load_checks(p["checks_dirs"])
        p["_pgtap_dir"] = pgtap.resolve_dir(p["pgtap_dir"], p["migrations_dir"])
        suite = pgtap.load_suite(p["_pgtap_dir"])
        pgtap_plan = pgtap.planned(suite) if module.check_mode else []
        if module.check_mode and (p["plan_only"] or not verify.database_exists(p["dsn"])):
            planned = smoke.planned_checks(checks, p["http"], p["command"], suite)
            if p["manifest"] and p["s3"]:
                exit_planned(module, planned, checks, p, pgtap_plan)
            exit_checks_skipped(module, planned, "test", **pgtap_result(pgtap_plan, p["_pgtap_dir"]))
        if module.check_mode and suite and not (checks or (p["http"] or {}).get("url") or p["command"]):
            exit_pgtap_planned(module, pgtap_plan, p["_pgtap_dir"], p["dsn"])
        pgtap_run = (
            None
            if module.check_mode
            else {
                "suite": suite,
                "admin_dsn": p["pgtap_admin_dsn"],
                "timeout": p["pgtap_timeout"],
            }
        )
        result = smoke.run_smoke(
            p["dsn"],
            checks,
            http=p["http"],
            command=p["command"],
            command_cwd=p["command_cwd"],
            command_timeout=p["command_timeout"],
            pgtap_run=pgtap_run,
        )
    except Exception as exc:  # the one error path
        fail(module, exc)
    if pgtap_plan:
        result["msg"] += f"; check mode: {len(pgtap_plan)} pgTAP files listed, not run"
    exit_checks(module, {**result, **pgtap_result(pgtap_plan, p["_pgtap_dir"])})


def exit_pgtap_planned(module, pgtap_plan, pgtap_dir, dsn):
    """Check mode with only pgTAP files to run: list them with their plans; nothing runs."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    module.exit_json(
        database=pg.describe_dsn(dsn),
        changed=False,
        ok=True,
        checks=[],
        failed_checks=[],
        would_run=[t["name"] for t in pgtap_plan],
        msg=f"check mode: {len(pgtap_plan)} pgTAP files listed, not run",
        **pgtap_result(pgtap_plan, pgtap_dir),
    )


if __name__ == "__main__":
    main()
