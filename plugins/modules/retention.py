#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: retention
short_description: Plan and apply the retention of one source's logical backups in one bucket
description:
  - Decides for every backup of O(source) whether it stays hot, moves to O(cold_storage_class), or expires,
    from its age (its backup id) at O(now).
  - The newest O(keep_min) complete backups that this run verified (a HEAD of every object, sizes matching the
    manifest) are never expired; a backup whose objects are gone is reported DAMAGED and never counts toward
    O(keep_min). A backup with any object version still locked (Object Lock retain-until in the future, or a legal
    hold) is kept and never attempted; a deletion the endpoint refuses because of a lock is reported as "locked
    until <date>", one refused for want of permission as such.
  - Incomplete backups (no manifest) expire when nothing was written into them for O(grace_hours) (their newest
    object, multipart upload or part), and never while the source's lock is live (a backup may be writing them).
  - With O(sets) also the Storage runs (then the stored files no remaining run lists, once older than
    O(grace_hours) and while no Storage backup holds its lock) and the config snapshots, by the same days and
    O(keep_min).
  - Puts a lifecycle rule for the source's prefix (transition after O(hot_days), abort stale multipart
    uploads, and with O(lifecycle_expiration) also expiry) where the endpoint accepts it; otherwise moves objects
    explicitly (a copy onto itself with the new storage class; skipped in versioned buckets). Expiry is always
    done by the module, which honours O(keep_min) and locks, unlike a lifecycle rule.
  - Refuses a policy whose O(lock_days) is shorter than O(hot_days) or longer than O(expire_days).
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
options:
  source:
    description: Source name in object keys.
    type: str
    required: true
  prefix:
    description: Key prefix of all backups in the bucket.
    type: str
    default: backups
  hot_days:
    description: Days a backup stays in the standard storage class.
    type: int
    default: 14
  expire_days:
    description: Age in days after which a backup is expired (deleted).
    type: int
    default: 60
  keep_min:
    description: The newest complete backups that are never expired, whatever their age.
    type: int
    default: 1
  lock_days:
    description:
      - Object Lock period of the copies in this bucket (the secondary bucket); V(0) when the bucket is not locked.
      - Must be between O(hot_days) and O(expire_days).
    type: int
    default: 0
  grace_hours:
    description:
      - Hours without a write after which an incomplete backup (no manifest) is expired; also the age a stored Storage
        file no remaining run lists must reach before it is removed.
    type: int
    default: 24
  lock_stale_after:
    description: Seconds after which a lock that is no longer renewed no longer counts as a run in progress.
    type: int
    default: 600
  sets:
    description: What is retained - V(logical) backups, V(storage) runs, V(config) snapshots.
    type: list
    elements: str
    choices: [logical, storage, config]
    default: [logical, storage, config]
  cold_storage_class:
    description: Storage class of cold backups, for example V(STANDARD_IA) or V(GLACIER_IR); empty for no moves.
    type: str
    default: STANDARD_IA
  lifecycle:
    description: V(auto) puts a lifecycle rule where the endpoint accepts it; V(off) never touches lifecycle.
    type: str
    choices: [auto, "off"]
    default: auto
  lifecycle_expiration:
    description:
      - Also put an Expiration rule. Off by default, because a lifecycle rule expires by age alone and would
        delete the newest backup too if backups stopped.
    type: bool
    default: false
  now:
    description: The time to judge ages at (ISO 8601); default now. For rehearsals and tests.
    type: str
attributes:
  check_mode:
    support: full
    details: Prints the plan (keep, cold, expire, with ages and reasons) and changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Apply retention to the primary bucket
  pgdr.supabase.retention:
    source: production
    s3: "{{ backup_s3 }}"
    hot_days: 14
    expire_days: 60

- name: Apply retention to the immutable bucket (copies locked 30 days)
  pgdr.supabase.retention:
    source: production
    s3: "{{ secondary_s3 }}"
    lock_days: 30
    cold_storage_class: GLACIER_IR
"""

RETURN = r"""
decisions:
  description: One row per backup, newest first, with backup_id, complete, age_days, action (keep, cold, expire),
    reason, and locked_until when a lock kept it.
  returned: always
  type: list
  elements: dict
moved:
  description: Backups moved (or in check mode to be moved) to the cold storage class.
  returned: always
  type: list
  elements: dict
expired:
  description: Backups deleted (or in check mode to be deleted).
  returned: always
  type: list
  elements: dict
skipped:
  description: Moves that could not be done explicitly, with the reason.
  returned: always
  type: list
  elements: dict
lifecycle:
  description: The lifecycle rule's status (off, in_place, put, would_put, unsupported with detail).
  returned: always
  type: dict
storage:
  description: The Storage runs - decisions, expired, skipped, collected (stored files removed) and collect (why not).
  returned: when storage is in O(sets)
  type: dict
config:
  description: The config snapshots - decisions, expired, skipped.
  returned: when config is in O(sets)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import backup_set_spec, fail, s3_target


def main():
    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "hot_days": {"type": "int", "default": 14},
            "expire_days": {"type": "int", "default": 60},
            "keep_min": {"type": "int", "default": 1},
            "lock_days": {"type": "int", "default": 0},
            "grace_hours": {"type": "int", "default": 24},
            "lock_stale_after": {"type": "int", "default": 600},
            "sets": {
                "type": "list",
                "elements": "str",
                "choices": ["logical", "storage", "config"],
                "default": ["logical", "storage", "config"],
            },
            "cold_storage_class": {"type": "str", "default": "STANDARD_IA"},
            "lifecycle": {"type": "str", "choices": ["auto", "off"], "default": "auto"},
            "lifecycle_expiration": {"type": "bool", "default": False},
            "now": {"type": "str"},
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import retention
    from ansible_collections.pgdr.supabase.plugins.module_utils.selection import parse_time

    p = module.params
    try:
        result = retention.run(
            s3_target(p["s3"]),
            p["prefix"],
            p["source"],
            now=parse_time(p["now"]) if p["now"] else None,
            hot_days=p["hot_days"],
            expire_days=p["expire_days"],
            keep_min=p["keep_min"],
            lock_days=p["lock_days"],
            grace_hours=p["grace_hours"],
            cold_storage_class=p["cold_storage_class"],
            lifecycle=p["lifecycle"],
            lifecycle_expiration=p["lifecycle_expiration"],
            check_mode=module.check_mode,
            sets=p["sets"],
            lock_stale_after=p["lock_stale_after"],
        )
        module.exit_json(**result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
