#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: proof
short_description: Plan a backup's proof, clean up throwaway databases, and record the proof next to the manifest
description:
  - The steps of a proof (a restore test of a backup into a throwaway database) that are not the restore and the
    checks themselves; playbooks/prove.yml chains them with M(pgdr.supabase.logical_restore), the verification and
    the smoke tests.
  - O(action=plan) chooses the backup (O(backup), V(latest) by default), reads its proof record C(proof.json)
    and says whether it is to be proven (C(action) V(prove) in RV(plan)), was proven already (V(none)), or is over the
    size cap O(max_database_bytes) (V(skip)). It also lists the throwaway databases left on the restore server by
    earlier, killed proofs (RV(leftovers)). Read-only.
  - O(action=cleanup) drops those leftovers (databases named C(<database_prefix>_<backup id>_<source tag>)
    whose pgdr marker says a restore made them, or the restore's temporary name). One whose restore lock is held
    or that a session is using (a proof running now) is left alone and named in RV(in_use).
  - O(action=drop) drops the throwaway database O(database) (only a name of the throwaway form).
  - O(action=record) writes the proof record next to the manifest once (a conditional put, If-None-Match) - the
    verdict O(result), when, the wall time, the restore time and the checks. The manifest is never touched. A
    record already there is kept (C(changed) false).
  - In check mode nothing is dropped or written; the result says what would be.
version_added: "0.3.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
options:
  action:
    description: What to do (see the description).
    type: str
    required: true
    choices: [plan, cleanup, drop, record]
  source:
    description: Source name whose backups are proven.
    type: str
    required: true
  prefix:
    description: Key prefix of all backups in the bucket.
    type: str
    default: backups
  target_dsn:
    description:
      - Connection string of the restore server's maintenance database, as a role that may drop the databases it
        created (the restore target of playbooks/restore.yml). Needed by V(plan), V(cleanup) and V(drop). Never
        logged.
    type: str
  database_prefix:
    description:
      - Prefix of the throwaway databases' names, C(<prefix>_<backup id in lowercase>_<source tag>) (the tag is eight
        hex digits of the CRC-32 of O(source), so that two sources never share one).
    type: str
    default: proof
  backup:
    description: For V(plan), the backup to prove - V(latest), a backup id, or V(before:<time>).
    type: str
    default: latest
  max_database_bytes:
    description:
      - For V(plan), the largest source database (its size recorded in the manifest) this run proves; a larger one
        is skipped with the reason (the weekly proof takes it with V(0)). V(0) means no cap.
    type: int
    default: 0
  database:
    description: For V(drop), the throwaway database to drop.
    type: str
  keep:
    description: For V(cleanup), throwaway databases to leave alone.
    type: list
    elements: str
    default: []
  backup_id:
    description: For V(record), the backup that was proven.
    type: str
  result:
    description: For V(record), the verdict.
    type: str
    choices: [passed, failed]
  started_at:
    description: For V(record), Unix time the proof started.
    type: float
  finished_at:
    description: For V(record), Unix time the proof ended (now when omitted).
    type: float
  restore_s:
    description: For V(record), seconds the restore itself took.
    type: float
  checks:
    description: For V(record), the checks' results (each with C(name) and C(ok)).
    type: list
    elements: dict
    default: []
  error:
    description: For V(record), what failed (empty for a passed proof).
    type: str
    default: ""
  throwaway:
    description: For V(record), the throwaway database (C(host:port/database)), as the record names it.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    details: Reads and plans; nothing is dropped or written.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.logical_restore
  - module: pgdr.supabase.backup_info
"""

EXAMPLES = r"""
- name: Plan the proof of the newest backup
  pgdr.supabase.proof:
    action: plan
    source: production
    s3: "{{ backup_s3 }}"
    target_dsn: "{{ staging_dsn }}"
    max_database_bytes: 10737418240
  register: proof_plan

- name: Record the verdict next to the manifest
  pgdr.supabase.proof:
    action: record
    source: production
    s3: "{{ backup_s3 }}"
    backup_id: "{{ proof_plan.plan.backup_id }}"
    result: passed
    started_at: "{{ started }}"
    restore_s: 42.0
"""

RETURN = r"""
plan:
  description:
    - With V(plan) - C(backup_id), C(database) (the throwaway database), C(database_size), C(max_database_bytes),
      C(existing) (the proof record already there, or null), C(proof_key), C(action) (V(prove), V(none), V(skip))
      and C(reason).
  returned: action is plan
  type: dict
leftovers:
  description:
    - Throwaway databases of earlier proofs found on the restore server (C(database), C(marker), C(sessions),
      C(restoring) - the restore holding its lock, or null).
  returned: action is plan or cleanup
  type: list
  elements: dict
dropped:
  description: Databases dropped (would be dropped, in check mode).
  returned: action is cleanup or drop
  type: list
  elements: str
in_use:
  description: Leftovers not dropped because a session is using them (a proof running now).
  returned: action is cleanup
  type: list
  elements: str
record:
  description: With V(record), the proof record now in the bucket (or the one that would be written).
  returned: action is record
  type: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import backup_set_spec, fail, s3_target


def main():
    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "action": {"type": "str", "required": True, "choices": ["plan", "cleanup", "drop", "record"]},
            "target_dsn": {"type": "str", "no_log": True},
            "database_prefix": {"type": "str", "default": "proof"},
            "backup": {"type": "str", "default": "latest"},
            "max_database_bytes": {"type": "int", "default": 0},
            "database": {"type": "str"},
            "keep": {"type": "list", "elements": "str", "default": []},
            "backup_id": {"type": "str"},
            "result": {"type": "str", "choices": ["passed", "failed"]},
            "started_at": {"type": "float"},
            "finished_at": {"type": "float"},
            "restore_s": {"type": "float"},
            "checks": {"type": "list", "elements": "dict", "default": []},
            "error": {"type": "str", "default": ""},
            "throwaway": {"type": "str", "default": ""},
        },
        required_if=[
            ("action", "plan", ("target_dsn",)),
            ("action", "cleanup", ("target_dsn",)),
            ("action", "drop", ("target_dsn", "database")),
            ("action", "record", ("backup_id", "result", "started_at")),
        ],
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg, proof, selection

    p = module.params
    try:
        if p["action"] == "record":
            target = s3_target(p["s3"])
            manifest = selection.load_manifest(target, p["prefix"], p["source"], p["backup_id"])
            record = proof.build_record(
                p["backup_id"],
                p["result"],
                p["started_at"],
                p["finished_at"] if p["finished_at"] is not None else time.time(),
                restore_s=p["restore_s"],
                checks=p["checks"],
                error=p["error"],
                database=p["throwaway"] or None,
                manifest=manifest,
            )
            existing = proof.read_proof(target, p["prefix"], p["source"], p["backup_id"])
            key = proof.proof_key(p["prefix"], p["source"], p["backup_id"])
            if existing is not None:
                module.exit_json(changed=False, record=existing, msg=f"{target.where(key)} exists already; kept")
            if module.check_mode:
                module.exit_json(changed=True, record=record, msg=f"would write {target.where(key)} ({p['result']})")
            written, now_there = proof.write_proof(target, p["prefix"], p["source"], record)
            verb = "wrote" if written else "found (written by a concurrent proof)"
            msg = f"{verb} {target.where(key)}: {now_there['result']}"
            module.exit_json(changed=written, record=now_there, msg=msg)

        host, port, _unused = pg.dsn_parts(p["target_dsn"])
        with proof.connect_admin(p["target_dsn"]) as conn:
            if p["action"] == "drop":
                proof.check_throwaway(p["database"], p["database_prefix"])
                if not proof.database_exists(conn, p["database"]):
                    module.exit_json(changed=False, dropped=[], msg=f"{p['database']} does not exist on {host}:{port}")
                if module.check_mode:
                    module.exit_json(changed=True, dropped=[p["database"]], msg=f"would drop {p['database']}")
                proof.drop_database(conn, p["database"], p["database_prefix"])
                module.exit_json(changed=True, dropped=[p["database"]], msg=f"dropped {p['database']} on {host}:{port}")
            found = proof.leftovers(conn, p["target_dsn"], p["source"], p["database_prefix"], keep=p["keep"])
            if p["action"] == "plan":
                target = s3_target(p["s3"])
                plan = proof.plan(
                    target, p["prefix"], p["source"], p["backup"], p["max_database_bytes"], p["database_prefix"]
                )
                module.exit_json(changed=False, plan=plan, leftovers=found, msg=plan["reason"])
            busy = [f["database"] for f in found if f["sessions"] or f["restoring"]]
            idle = [f["database"] for f in found if f["database"] not in busy]
            for name in busy:
                module.warn(f"throwaway database {name} is in use (a proof running now?); left alone")
            if not module.check_mode:
                for name in idle:
                    proof.drop_database(conn, name, p["database_prefix"])
            verb = "would drop" if module.check_mode else "dropped"
            module.exit_json(
                changed=bool(idle),
                dropped=idle,
                in_use=busy,
                leftovers=found,
                msg=(
                    f"{verb} {len(idle)} throwaway database(s) left by earlier proofs on {host}:{port}: "
                    + ", ".join(idle)
                )
                if idle
                else f"no throwaway database left on {host}:{port}",
            )
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
