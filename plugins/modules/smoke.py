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
  - Never changes anything. Fails when any check fails, naming every failed check; the per-check results are
    returned either way.
version_added: "0.1.0"
author: pgdr authors
extends_documentation_fragment:
  - pgdr.supabase.check_command
options:
  dsn:
    description: libpq connection string of the database to test. Never logged.
    type: str
    required: true
  checks_dirs:
    description: Folders of C(*.sql) check files, run in order.
    type: list
    elements: path
    default: []
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
      - Runs the checks for real (they roll back). When the database does not exist yet (a restore that check
        mode only planned), returns C(skipped_reason) and the checks that would run instead of failing.
  diff_mode:
    support: none
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
      description: File, expectation, the first rows returned or the error, the claims used.
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
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    check_command_spec,
    exit_checks,
    exit_checks_skipped,
    fail,
)


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
            **check_command_spec(),
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import smoke, verify

    p = module.params
    try:
        checks = smoke.load_checks(p["checks_dirs"])
        if module.check_mode and not verify.database_exists(p["dsn"]):
            exit_checks_skipped(module, smoke.planned_checks(checks, p["http"], p["command"]), "test")
        result = smoke.run_smoke(
            p["dsn"],
            checks,
            http=p["http"],
            command=p["command"],
            command_cwd=p["command_cwd"],
            command_timeout=p["command_timeout"],
        )
    except Exception as exc:  # the one error path
        fail(module, exc)
    exit_checks(module, result)


if __name__ == "__main__":
    main()
