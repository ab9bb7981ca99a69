#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: secure_backup
short_description: Copy a complete backup to the immutable bucket, lock every copy and verify it by SHA-256
description:
  - Copies every object of a complete backup, then its manifest, from the primary bucket (O(s3)) to the
    secondary Object Lock bucket (O(secondary_s3)) under the same keys.
  - Server-side copy (CopyObject with SHA-256 checksums, UploadPartCopy above 5 GiB) when both buckets are on
    the same endpoint, otherwise a stream (download, then a multipart upload with SHA-256 parts) that refuses to
    commit data not matching the manifest.
  - Locks every copied version with O(lock_mode) until the backup's time plus O(lock_days), reading the lock
    back (some endpoints ignore lock headers on a copy), then streams each copy and compares its SHA-256 with
    the manifest.
  - Records the outcome next to the manifest (C(secured.json)) in the primary bucket and, locked like the copies,
    in the locked bucket itself, with the secondary bucket, each copy's exact version id, ETag, lock and
    verification time, and C(status) C(secured) or C(not_secured) with the error. The locked record is written once
    per securing; a restore from the locked bucket reads the versions it names, whatever version is current.
  - A backup whose record says secured, with every recorded version still present and locked long enough, is
    not copied again (C(changed=false)). Each run checks those versions (present, locked until at least the
    recorded date, size and ETag as recorded) and what sits on top of them; a delete marker or a newer version on
    top of a locked key, or a second version of the record, is tampering and fails the task, naming each finding.
  - With O(sets) it also secures the Storage runs and the config snapshots still inside the lock period (files
    copied once and locked longer for later runs that keep them), so the locked bucket holds everything a restore
    needs.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
  - pgdr.supabase.secondary_s3.required
options:
  source:
    description: Source name in object keys.
    type: str
    required: true
  prefix:
    description: Key prefix of all backups in the bucket.
    type: str
    default: backups
  backup:
    description:
      - V(latest) (the newest complete backup), a backup id, or V(pending) for every complete backup whose copy is
        not secured yet and that is still inside the lock period.
    type: str
    default: latest
  lock_mode:
    description: Object Lock mode of the copies. V(GOVERNANCE) only for tests.
    type: str
    choices: [COMPLIANCE, GOVERNANCE]
    default: COMPLIANCE
  lock_days:
    description: Copies stay locked this many days after the backup was taken.
    type: int
    default: 30
  method:
    description:
      - V(server) copies inside the endpoint (the secondary credentials must be able to read the primary bucket),
        V(stream) downloads and uploads; V(auto) picks V(server) when both buckets are on the same endpoint.
    type: str
    choices: [auto, server, stream]
    default: auto
  reverify:
    description: Read every recorded copy back and verify its SHA-256 again even when the record says secured.
    type: bool
    default: false
  sets:
    description:
      - What to secure. V(logical) the backup named by O(backup); V(storage) every Storage run and V(config) every
        config snapshot still inside the lock period that is not secured yet.
    type: list
    elements: str
    choices: [logical, storage, config]
    default: [logical, storage, config]
  now:
    description: The time to judge the lock period at (ISO 8601); default now. For tests.
    type: str
attributes:
  check_mode:
    support: full
    details: Reads the record and the copies' locks and returns what would be copied; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.immutable_bucket
  - module: pgdr.supabase.retention
"""

EXAMPLES = r"""
- name: Secure the newest backup in the immutable bucket
  pgdr.supabase.secure_backup:
    source: production
    s3: "{{ backup_s3 }}"
    secondary_s3: "{{ secondary_s3 }}"
    lock_mode: COMPLIANCE
    lock_days: 30
"""

RETURN = r"""
backups:
  description: One row per set handled (logical backups, then Storage runs, then config snapshots).
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: C(backup), C(storage run) or C(config snapshot).
      type: str
    backup_id:
      description: The backup's (run's, snapshot's) id.
      type: str
    status:
      description:
        - C(secured), C(would_secure) (check mode), C(skipped) (older than the lock period), or C(tampered)
          (secured, but something was put on top of a locked version; see C(findings)).
      type: str
    findings:
      description: What the tampering check found, each with kind (delete_marker, newer_version, lock, digest,
        gone, record), key, version_id and detail.
      type: list
      elements: dict
    reason:
      description: Why it was (or was not) copied.
      type: str
    method:
      description: C(server) or C(stream).
      type: str
    retain_until:
      description: Lock date of the copies.
      type: str
    objects:
      description: Each copy with key, size, sha256, version_id, lock_mode, retain_until, verified.
      type: list
      elements: dict
    record_key:
      description: Key of the secure-copy record (the same in the primary and the locked bucket).
      type: str
tampered:
  description: Ids of the sets whose locked copies were tampered with (the task fails when any).
  returned: always
  type: list
  elements: str
run_warnings:
  description: What the run found wrong, one line each (the tampering, for the backup run's alert).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    backup_set_spec,
    fail,
    long_running,
    s3_spec,
    s3_target,
)


def main():
    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "secondary_s3": s3_spec(),
            "backup": {"type": "str", "default": "latest"},
            "lock_mode": {"type": "str", "choices": ["COMPLIANCE", "GOVERNANCE"], "default": "COMPLIANCE"},
            "lock_days": {"type": "int", "default": 30},
            "method": {"type": "str", "choices": ["auto", "server", "stream"], "default": "auto"},
            "reverify": {"type": "bool", "default": False},
            "sets": {
                "type": "list",
                "elements": "str",
                "choices": ["logical", "storage", "config"],
                "default": ["logical", "storage", "config"],
            },
            "now": {"type": "str"},
        },
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    from ansible_collections.pgdr.supabase.plugins.module_utils import immutable
    from ansible_collections.pgdr.supabase.plugins.module_utils.selection import parse_time

    p = module.params
    try:
        primary, secondary = s3_target(p["s3"]), s3_target(p["secondary_s3"])
        now = parse_time(p["now"]) if p["now"] else None
        common = {"lock_days": p["lock_days"], "mode": p["lock_mode"], "method": p["method"]}
        rows = []
        if "logical" in p["sets"]:
            logical = immutable.secure(
                primary,
                secondary,
                p["prefix"],
                p["source"],
                selector=p["backup"],
                reverify=p["reverify"],
                check_mode=module.check_mode,
                now=now,
                **common,
            )
            rows += logical["backups"]
        if "storage" in p["sets"]:
            rows += immutable.secure_storage(
                primary, secondary, p["prefix"], p["source"], check_mode=module.check_mode, now=now, **common
            )
        if "config" in p["sets"]:
            rows += immutable.secure_config(
                primary, secondary, p["prefix"], p["source"], check_mode=module.check_mode, now=now, **common
            )
        result = immutable.summarize_rows(rows)
        result["msg"] = immutable.describe_rows(rows, module.check_mode)
        if result["tampered"]:
            module.fail_json(**dict(result, msg=result["tampering"]))
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
