#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_select
short_description: Choose a logical backup to restore and verify its checksums
description:
  - Resolves V(latest), a backup id, or V(before:<ISO-8601 time>) (the newest complete backup taken before that
    time) to one complete backup, reads its manifest, and streams every object to compare its size and SHA-256
    with the manifest, without writing anything anywhere.
  - Incomplete backups (no manifest) are never chosen. A corrupted or missing object fails the task, naming
    the object, before anything is written to a restore target.
  - With O(from_secondary) O(s3) is the immutable (Object Lock) bucket, and the backups are those its secure-copy
    records name (the record kept, locked, in that bucket; for backups secured before it kept one, the record in
    O(primary_s3)). The manifest is read at its recorded version and checked against the recorded SHA-256, and every
    object entry returned carries the C(version_id) of its locked copy, which the checks here and the restore read;
    a delete marker or a newer version put on top of a key changes nothing.
  - With O(secondary_s3) (the bucket holding the backup's locked copy; omit it when restoring from that bucket
    itself), the primary manifest is compared byte for byte with the oldest version of the locked copy before
    anything else is read. Identical, the primary is used; different, the locked copy is used when its signature
    verifies (RV(trust) says so), else the task fails. A backup without a locked copy yet is used from the primary.
  - Read-only; runs the same in check mode.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
  - pgdr.supabase.primary_s3
  - pgdr.supabase.secondary_s3
  - pgdr.supabase.manifest_trust
options:
  decryption_identities:
    description:
      - age identities (C(AGE-SECRET-KEY-1...)) the restore will decrypt with, from a vault or a lookup; never
        logged. With O(require_decryption), checked against the backup's recipients before the checksum pass, so a
        missing or wrong identity is reported first, not after minutes of reading.
    type: list
    elements: str
    default: []
  require_decryption:
    description: Fail before the checksum pass when the backup is encrypted and no given identity matches it.
    type: bool
    default: false
  source:
    description: Source name whose backups are considered.
    type: str
    required: true
  backup:
    description:
      - V(latest), V(latest-proven) (the newest backup whose proof by playbooks/prove.yml passed), a backup id such
        as V(20261128T000000Z), or V(before:2026-11-28T14:00:00Z).
    type: str
    default: latest
  prefix:
    description: Key prefix of all backups in the bucket.
    type: str
    default: backups
  verify:
    description:
      - V(full) streams every object and checks its SHA-256; V(exists) only checks that the manifest's objects
        exist with the right sizes; V(none) skips both (the restore still verifies while it downloads).
    type: str
    default: full
    choices: [full, exists, none]
  from_secondary:
    description: O(s3) is the immutable bucket; read the exact locked versions its secure-copy records name.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Read-only.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.logical_restore
  - module: pgdr.supabase.backup_info
"""

EXAMPLES = r"""
- name: Choose the newest backup taken before the incident and verify it
  pgdr.supabase.backup_select:
    source: production
    backup: "before:2026-11-28T14:00:00Z"
    s3: "{{ backup_s3 }}"
  register: chosen
"""

RETURN = r"""
backup_id:
  description: Id of the chosen backup.
  returned: always
  type: str
  sample: 20261128T000000Z
manifest_key:
  description: Key of its manifest.
  returned: always
  type: str
manifest:
  description: The backup's manifest (objects with keys, sizes and SHA-256, row counts, schema fingerprint, migrations).
  returned: always
  type: dict
verified:
  description: One entry per object checked, with its size and SHA-256.
  returned: always
  type: list
  elements: dict
age_s:
  description: Seconds between the backup's snapshot and now (the RPO if this backup is restored now).
  returned: always
  type: float
trusted:
  description: With O(from_secondary), which secure-copy record named the versions read.
  returned: with O(from_secondary)
  type: str
trust:
  description:
    - Why the manifest was trusted, checked before any object was read. C(signature) (V(valid), or
      V(unsigned, allowed by allow_unsigned=<id>)), C(key_id), C(trusted) (V(primary), V(primary (byte-identical to the
      locked copy)) or V(locked)), C(locked_copy) (where it was found, or none), C(warnings).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    backup_set_spec,
    fail,
    long_running,
    manifest_trust_spec,
    optional_s3_spec,
    s3_spec,
    s3_target,
)


def main():
    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            **manifest_trust_spec(),
            "backup": {"type": "str", "default": "latest"},
            "verify": {"type": "str", "default": "full", "choices": ["full", "exists", "none"]},
            "from_secondary": {"type": "bool", "default": False},
            "primary_s3": optional_s3_spec(),
            "secondary_s3": dict(s3_spec(), required=False),
            "decryption_identities": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "require_decryption": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone
    from ansible_collections.pgdr.supabase.plugins.module_utils import (
        catalog,
        crypto,
        immutable,
        selection,
        signing,
        timefmt,
    )

    p = module.params
    try:
        keys = signing.parse_public_keys(p["manifest_public_keys"])
        target = s3_target(p["s3"])
        target.check_bucket(step="select backup")
        extra = {}
        primary = s3_target(p["primary_s3"]) if p["from_secondary"] and p["primary_s3"] else None
        if p["from_secondary"]:
            # The exact locked versions the secure-copy record names; the manifest's signature is still checked.
            rows = immutable.list_secured(target, p["prefix"], p["source"], primary=primary)
            row = selection.resolve(target, p["prefix"], p["source"], p["backup"], rows=rows)
        else:
            row = selection.resolve(target, p["prefix"], p["source"], p["backup"])
        # Trusted before any object is read: signature, keys inside the folder, the locked copy.
        secondary = s3_target(p["secondary_s3"]) if p["secondary_s3"] and not p["from_secondary"] else None
        manifest, trust, named_by = signing.trusted_backup(
            target,
            p["prefix"],
            p["source"],
            row["backup_id"],
            keys,
            p["allow_unsigned"],
            from_secondary=p["from_secondary"],
            primary=primary,
            secondary=secondary,
        )
        if named_by:
            extra["trusted"] = named_by
        for warning in trust["warnings"]:
            module.warn(warning)
        if p["require_decryption"]:  # before the checksum pass
            crypto.check_can_decrypt(manifest, p["decryption_identities"], target.where(trust["manifest_key"]))
        if p["verify"] == "full":
            verified = selection.verify_objects(target, manifest)
        elif p["verify"] == "exists":
            verified = selection.check_objects_exist(target, manifest)
        else:
            verified = []
        age = (timefmt.utcnow() - selection.parse_time(manifest["started_at"])).total_seconds()
        module.exit_json(
            changed=False,
            backup_id=row["backup_id"],
            manifest_key=catalog.manifest_key(p["prefix"], p["source"], row["backup_id"]),
            manifest=manifest,
            verified=verified,
            age_s=round(age, 1),
            trust=trust,
            msg=f"backup {row['backup_id']} of {p['source']} chosen ({p['backup']}); manifest {trust['signature']}, "
            f"trusted copy {trust['trusted']}; {len(verified)} objects verified ({p['verify']})",
            **extra,
        )
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
