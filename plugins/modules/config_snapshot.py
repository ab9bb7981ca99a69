#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: config_snapshot
short_description: Record the names and versions of production's environment variables and secrets, never their values
description:
  - Reads the given env stores (dotenv, SSM Parameter Store, Secrets Manager, command hook) and records, per
    variable, whether it is present, the store's own version id where it has one (SSM parameter C(Version), Secrets
    Manager C(VersionId)) and an HMAC-SHA256 of its value. Values never leave the host that runs the module.
  - The HMAC key comes from the vault and is NOT stored with the backups, so the hashes cannot be brute-forced from
    the backup bucket (a plain SHA-256 of a short password can). The snapshot records only the key's id. With
    O(hashing=none) only presence and store version ids are kept.
  - Writes C(<prefix>/<source>/config/<snapshot_id>.json) into the backup bucket only if it is absent, one snapshot
    per window (or per logical backup id). A second run writes nothing and returns what drifted since (RV(drift)).
  - Returns the changes since the previous snapshot (RV(changes)), for the drill report.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
  - pgdr.supabase.env_store.snapshot_stores
options:
  source:
    description: Name of the source in object keys, for example V(production).
    type: str
    required: true
  prefix:
    description: Key prefix of all backups in the backup bucket.
    type: str
    default: backups
  hashing:
    description:
      - V(hmac) records HMAC-SHA256(O(hmac_key), name NUL value) of each value; V(none) records presence and
        store version ids only (a dotenv or command store then shows no value change).
    type: str
    default: hmac
    choices: [hmac, none]
  hmac_key:
    description:
      - Key of the HMAC, at least 16 characters, from the vault. Keep it out of the backup bucket's account;
        snapshots made with another key cannot be compared value by value. Never logged.
    type: str
  snapshot_id:
    description:
      - Id of the snapshot, a UTC timestamp like V(20261128T000000Z), for example the logical backup's id.
      - Default the start of O(window).
    type: str
  window:
    description: Schedule window used when O(snapshot_id) is not given; one snapshot per window.
    type: str
    default: daily
    choices: [daily, hourly, every_run]
attributes:
  check_mode:
    support: full
    details: Reads the stores and the bucket and returns the snapshot it would write; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.env
"""

EXAMPLES = r"""
- name: Snapshot production's variables next to today's backup
  pgdr.supabase.config_snapshot:
    source: production
    s3:
      bucket: acme-db-backups
      region: eu-west-1
    stores:
      - label: app
        store: {type: ssm, prefix: /acme/production, region: eu-west-1}
      - label: edge-functions
        store: {type: secretsmanager, secret_id: acme/production/functions, region: eu-west-1}
        names: [STRIPE_SECRET_KEY, RESEND_API_KEY]
    hmac_key: "{{ vault_config_snapshot_hmac_key }}"
  register: config_snapshot
"""

RETURN = r"""
snapshot_id:
  description: Id of the snapshot of this window.
  returned: always
  type: str
key:
  description: Key of the snapshot in the backup bucket.
  returned: always
  type: str
snapshot:
  description: The snapshot written now or found (stores; per variable store, name, present, version, hmac_sha256).
  returned: always
  type: dict
exists:
  description: Whether the window's snapshot existed before this run.
  returned: always
  type: bool
drift:
  description: When the window's snapshot existed already, the names added, removed, changed since it was taken.
  returned: when the snapshot existed
  type: dict
previous_id:
  description: Id of the snapshot before this one, or null.
  returned: always
  type: str
changes:
  description: Names C(added), C(removed), C(changed), C(unchanged), C(unknown) since the previous snapshot.
  returned: when a previous snapshot exists
  type: dict
run_warnings:
  description:
    - The config drift, by name only (never a value) - what changed since the previous snapshot, and what drifted
      since this window's snapshot was taken - one line each, for the backup run's alert.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import backup_set_spec, fail, s3_target


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import config_snapshot, envstore

    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "stores": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "label": {"type": "str"},
                    "names": {"type": "list", "elements": "str", "default": []},
                    "store": envstore.store_spec(),
                },
            },
            "hashing": {"type": "str", "default": "hmac", "choices": ["hmac", "none"]},
            "hmac_key": {"type": "str", "no_log": True},
            "snapshot_id": {"type": "str"},
            "window": {"type": "str", "default": "daily", "choices": ["daily", "hourly", "every_run"]},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = config_snapshot.run(
            s3_target(p["s3"]),
            p["stores"],
            p["prefix"],
            p["source"],
            hashing=p["hashing"],
            key=p["hmac_key"],
            snapshot_id=p["snapshot_id"],
            window=p["window"],
            check_mode=module.check_mode,
        )
        result["run_warnings"] = config_snapshot.drift_lines(result)
        count = len(result["snapshot"]["variables"])
        if result["exists"]:
            drift = result["drift"]
            result["msg"] = (
                f"config snapshot {result['snapshot_id']} exists already ({count} variables); since then "
                f"{len(drift['changed'])} changed, {len(drift['added'])} added, {len(drift['removed'])} removed"
            )
        else:
            verb = "would write" if module.check_mode else "wrote"
            result["msg"] = f"{verb} config snapshot {result['snapshot_id']} ({count} variables, no values)"
        module.exit_json(**result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
