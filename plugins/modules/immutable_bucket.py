#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: immutable_bucket
short_description: Ensure the secondary backup bucket has S3 Object Lock, or report its drift
description:
  - Reads the bucket's versioning, Object Lock configuration, default retention and default encryption.
  - Creates a missing bucket with Object Lock enabled (O(create)), adds a missing default retention and default
    encryption, and extends a weaker default retention when O(extend_retention) allows it.
  - Never weakens anything. A bucket without Object Lock (it can only be enabled when a bucket is created), with
    versioning off, with a weaker default retention (unless O(extend_retention)), or with other encryption than
    asked is drift, and the module fails naming the bucket, what is wrong and what to do.
  - Drift that is fixed by restoring protection on a bucket that exists (a default retention or encryption that is
    missing, perhaps removed, or extended with O(extend_retention)) is never fixed silently - it is returned in
    C(drift) and C(run_warnings) and shown as a warning. When the identity may not change the bucket (the backup
    writer should not) it is reported as not restored, for the bucket's admin to fix; the task does not fail, the
    copies keep their own locks.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
options:
  lock_mode:
    description:
      - Default retention mode the bucket must have at least. V(COMPLIANCE) cannot be shortened or removed by
        anyone, the root account included; V(GOVERNANCE) can be bypassed with a permission, for tests only.
    type: str
    choices: [COMPLIANCE, GOVERNANCE]
    default: COMPLIANCE
  lock_days:
    description: Default retention days the bucket must have at least; V(0) requires no default retention.
    type: int
    default: 30
  extend_retention:
    description: Raise a weaker or shorter default retention to O(lock_mode) and O(lock_days) instead of failing.
    type: bool
    default: false
  sse:
    description: Default server-side encryption the bucket must have; omit to require none.
    type: dict
    suboptions:
      algorithm:
        description: V(AES256) (S3-managed keys) or V(aws:kms).
        type: str
        required: true
        choices: [AES256, "aws:kms"]
      kms_key_id:
        description: KMS key id, ARN or alias, with V(aws:kms).
        type: str
  create:
    description: Create the bucket, with Object Lock, when it does not exist.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Reads the bucket and returns the steps it would take; writes nothing.
  diff_mode:
    support: full
    details: The bucket's state before and after.
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.secure_backup
"""

EXAMPLES = r"""
- name: Ensure the immutable bucket
  pgdr.supabase.immutable_bucket:
    s3: "{{ secondary_s3 }}"
    lock_mode: COMPLIANCE
    lock_days: 30
    sse:
      algorithm: aws:kms
      kms_key_id: alias/acme-backups
"""

RETURN = r"""
steps:
  description: What was (or in check mode would be) done, for example C(create_bucket), C(set_default_retention).
  returned: always
  type: list
  elements: dict
before:
  description: The bucket's state before (exists, versioning, object_lock, default_retention, sse).
  returned: always
  type: dict
after:
  description: The bucket's state after.
  returned: always
  type: dict
drift:
  description: Drift found on the existing bucket, each with found (what), action, to, restored (bool) and error.
  returned: always
  type: list
  elements: dict
run_warnings:
  description: One line per drift found (DRIFT on s3://bucket/ ...), for the run's report and alert.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail, s3_spec, s3_target


def main():
    module = AnsibleModule(
        argument_spec={
            "s3": s3_spec(),
            "lock_mode": {"type": "str", "choices": ["COMPLIANCE", "GOVERNANCE"], "default": "COMPLIANCE"},
            "lock_days": {"type": "int", "default": 30},
            "extend_retention": {"type": "bool", "default": False},
            "sse": {
                "type": "dict",
                "options": {
                    "algorithm": {"type": "str", "required": True, "choices": ["AES256", "aws:kms"]},
                    "kms_key_id": {"type": "str"},
                },
            },
            "create": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import immutable

    p = module.params
    try:
        target = s3_target(p["s3"])
        result = immutable.ensure_bucket(
            target,
            mode=p["lock_mode"],
            days=p["lock_days"],
            sse=p["sse"],
            create=p["create"],
            extend=p["extend_retention"],
            check_mode=module.check_mode,
        )
        result["run_warnings"] = immutable.describe_drift(target, result["drift"])
        for line in result["run_warnings"]:
            module.warn(line)
        result["diff"] = {"before": result["before"], "after": result["after"]}
        if module.check_mode and result["changed"]:
            result["diff"]["after"] = {"planned_steps": result["steps"]}
        module.exit_json(**result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
