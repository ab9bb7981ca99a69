#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: freshness
short_description: Check that the backups of a source are fresh - logical, immutable copy, pgBackRest, Supabase PITR
description:
  - Runs the configured freshness checks, independently of the backup job, and fails naming every stale one.
  - C(logical) (always) - the newest complete logical backup (its manifest's C(finished_at)) is at most
    O(max_age_s) old and every object of it is there with the manifest's size (a HEAD each; a manifest whose
    objects are gone is DAMAGED, not fresh); an incomplete backup newer than it while no run holds the source's
    lock is a failed or killed run; no complete backup at all is stale.
  - C(secondary) (O(secondary=true)) - the newest backup secured and verified in the immutable bucket finished at
    most O(max_age_s) ago, from the secure-copy record kept next to each manifest; with O(secondary_s3) its recorded
    versions in the locked bucket are checked too (present, locked until the recorded date, size and ETag as
    recorded), and a delete marker or a newer version on top of a locked key is TAMPERING, never fresh.
  - An O(now) earlier than the newest backup is refused (its age would be negative).
  - C(pitr) (O(pitr) given) - pgBackRest - the newest archived WAL is at most O(pitr.rpo_s) old and the newest base
    backup at most O(pitr.max_base_age_s).
  - C(supabase_pitr) (O(supabase) given) - hosted Supabase - the latest point of the PITR window is at most
    O(supabase.rpo_s) old.
  - C(proof) (O(proof=true)) - the newest backup proven by a restore test (its C(proof.json), written by
    playbooks/prove.yml) was taken at most O(proof_max_age_s) ago, and the newest proof did not fail.
  - A store that cannot be read (bucket, repository, API) makes its check fail with the reason, not the module stop,
    so one broken check never hides the others.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
  - pgdr.supabase.secondary_s3
options:
  source:
    description: Name of the source in object keys, for example V(production).
    type: str
    required: true
  prefix:
    description: Key prefix of all backups in the bucket.
    type: str
    default: backups
  max_age_s:
    description: Oldest acceptable age of the newest complete logical backup, in seconds (schedule plus grace).
    type: int
    default: 93600
  lock_stale_after:
    description: Seconds after which a lock that is no longer renewed no longer counts as a run in progress.
    type: int
    default: 600
  secondary:
    description:
      - Also check that the newest backup is secured and verified in the immutable bucket.
      - Give O(secondary_s3) too, so that the locked copies themselves are checked for tampering.
    type: bool
    default: false
  pitr:
    description: Check pgBackRest's repository (self-hosted PITR). Omit to skip.
    type: dict
    suboptions:
      stanza:
        description: The stanza, as in the configuration file.
        type: str
        required: true
      config_file:
        description: pgBackRest configuration file written by M(pgdr.supabase.pgbackrest_stanza).
        type: path
        required: true
      rpo_s:
        description: Oldest acceptable age of the newest archived WAL, in seconds (the RPO).
        type: int
        default: 3600
      max_base_age_s:
        description: Oldest acceptable age of the newest base backup, in seconds.
        type: int
        default: 93600
  supabase:
    description: Check the hosted project's PITR window through the Management API. Omit to skip.
    type: dict
    suboptions:
      project_ref:
        description: The project ref (20 lowercase letters).
        type: str
        required: true
      token:
        description: Personal access token of the Management API. From a vault file; never logged.
        type: str
        required: true
      api_url:
        description: Base URL of the Management API.
        type: str
        default: https://api.supabase.com
      rpo_s:
        description: Oldest acceptable age of the latest restorable point, in seconds (the RPO).
        type: int
        default: 3600
      timeout:
        description: Seconds to wait for one answer of the API.
        type: int
        default: 30
  now:
    description:
      - Check as if it were this time (ISO-8601, for example V(2026-11-30T09:00:00Z)); default the current time.
      - For rehearsals and tests of a missed schedule.
    type: str
  proof:
    description: Check the proofs too (the C(proof) check).
    type: bool
    default: false
  proof_max_age_s:
    description: Oldest acceptable age of the newest proven backup, in seconds (a daily proof plus grace).
    type: int
    default: 93600
  fail_on_stale:
    description:
      - Fail when a check is not fresh. V(false) returns the verdict in RV(ok) and RV(stale) without failing, for a
        caller that alerts first and fails afterwards (the C(pgdr.supabase.freshness) role).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.notify
  - module: pgdr.supabase.pgbackrest_info
"""

EXAMPLES = r"""
- name: Check that production's daily backup is at most 26 h old
  pgdr.supabase.freshness:
    source: production
    s3: "{{ pgdr_backup_s3 }}"
    max_age_s: 93600

- name: Check every backup path, alerting before failing
  pgdr.supabase.freshness:
    source: production
    s3: "{{ pgdr_backup_s3 }}"
    secondary: true
    pitr:
      stanza: production
      config_file: /etc/pgbackrest/pgdr-production.conf
      rpo_s: 3600
    supabase:
      project_ref: "{{ vault_supabase_project_ref }}"
      token: "{{ vault_supabase_token }}"
    fail_on_stale: false
  register: freshness
"""

RETURN = r"""
ok:
  description: Whether every check is fresh.
  returned: always
  type: bool
stale:
  description: Names of the checks that are not fresh (logical, secondary, pitr, supabase_pitr).
  returned: always
  type: list
  elements: str
checks:
  description:
    - One entry per check - name, ok, skipped, age_s, threshold_s, details, error, and what the check read
      (for logical - newest_backup_id, newest_finished_at, complete, incomplete_newer).
  returned: always
  type: list
  elements: dict
now:
  description: The time the checks were made against (ISO-8601).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    backup_set_spec,
    fail,
    optional_s3_spec,
    pgbackrest_config_spec,
    s3_target,
)


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import supabase_api

    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "max_age_s": {"type": "int", "default": 93600},
            "lock_stale_after": {"type": "int", "default": 600},
            "secondary": {"type": "bool", "default": False},
            "secondary_s3": optional_s3_spec(),
            "pitr": {
                "type": "dict",
                "options": {
                    **pgbackrest_config_spec(),
                    "rpo_s": {"type": "int", "default": 3600},
                    "max_base_age_s": {"type": "int", "default": 93600},
                },
            },
            "supabase": {
                "type": "dict",
                "options": {**supabase_api.MODULE_ARGUMENT_SPEC, "rpo_s": {"type": "int", "default": 3600}},
            },
            "proof": {"type": "bool", "default": False},
            "proof_max_age_s": {"type": "int", "default": 93600},
            "now": {"type": "str"},
            "fail_on_stale": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import freshness, proof, timefmt
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import redact

    p = module.params
    secrets = [(p["supabase"] or {}).get("token")]
    try:
        # A given time is passed on as given (None: the checks read the clock), so that the checks can refuse a
        # rehearsal time earlier than the newest backup while a clock that is behind is only a failed check.
        now = p["now"]
        now_unix = freshness.to_unix(now)
        target = s3_target(p["s3"])
        checks = [freshness.check_logical(target, p["prefix"], p["source"], p["max_age_s"], now, p["lock_stale_after"])]
        if p["secondary"]:
            secondary = s3_target(p["secondary_s3"]) if p["secondary_s3"] else None
            checks.append(
                freshness.check_secondary(target, p["prefix"], p["source"], p["max_age_s"], now, secondary=secondary)
            )
        if p["proof"]:
            checks.append(proof.check_freshness(target, p["prefix"], p["source"], p["proof_max_age_s"], now_unix))
        if p["pitr"]:
            q = p["pitr"]
            checks.append(freshness.check_pitr(q["stanza"], q["config_file"], q["rpo_s"], q["max_base_age_s"], now))
        if p["supabase"]:
            q = p["supabase"]
            checks.append(
                freshness.check_supabase_pitr(
                    q["project_ref"], q["token"], q["api_url"], q["rpo_s"], now, timeout=q["timeout"]
                )
            )
        for check in checks:
            check["details"] = redact(check["details"], secrets)
            check["error"] = redact(check["error"], secrets)
            if check["skipped"]:
                module.warn(f"freshness check {check['name']} {check['details']}")
        ok, line = freshness.summarize(checks)
        result = {
            "changed": False,
            "ok": ok,
            "stale": [c["name"] for c in checks if not c["ok"]],
            "checks": checks,
            "now": timefmt.iso_seconds(now_unix),
        }
        if ok:
            result["msg"] = f"backups of {p['source']} are fresh: " + "; ".join(
                f"{c['name']} {c['details']}" for c in checks
            )
        else:
            result["msg"] = f"backups of {p['source']} are STALE: {line}"
        if not ok and p["fail_on_stale"]:
            module.fail_json(**result)
        module.exit_json(**result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
