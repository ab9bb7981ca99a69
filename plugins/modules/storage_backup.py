#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: storage_backup
short_description: Copy a project's Storage buckets incrementally into the backup bucket
description:
  - Lists the Storage buckets over their S3-compatible endpoint (ListObjectsV2, pages of 1000) and copies the
    objects that are new or changed since the last run into the backup bucket, streaming each one (download,
    SHA-256, multipart upload); there is no server-side copy across endpoints.
  - An object is unchanged when its size and ETag equal the last manifest's. A single-part ETag is the MD5 of the
    bytes and is checked against the bytes copied; a multipart ETag is only compared as a string; the SHA-256
    computed while copying is recorded for restore.
  - Layout under C(<prefix>/<source>/storage/) in the backup bucket, C(blobs/<sha256[:2]>/<sha256>) for the bytes
    of every file, stored once under their SHA-256 (a fixed-length key, so any key valid at the source is backed up,
    even one of 1024 bytes), and C(manifests/<run_id>.json) (every object, its original bucket and key, size,
    ETag, MD5, SHA-256, metadata and stored key) written last as the commit point. Stored objects are never
    overwritten, so every manifest stays restorable. Runs taken before this layout (C(objects/<run_id>/...)) are
    still read.
  - Objects deleted at the source stay in the backup, marked deleted; one deleted while the run copies it is
    recorded as deleted too (and named in RV(run_warnings)) and the run completes.
  - Content type, cache control, content disposition, encoding, language and user metadata are recorded; an object
    whose last-modified time moved is read with a HEAD, and a change of metadata alone is recorded without copying
    its bytes again.
  - A run that finds nothing new, changed or deleted writes nothing and reports C(changed=false).
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
  - pgdr.supabase.storage
options:
  source:
    description: Name of the source in object keys, for example V(production).
    type: str
    required: true
  storage:
    description:
      - The Storage endpoint to copy from. For Supabase V(https://<ref>.storage.supabase.co/storage/v1/s3) with
        the project's region and S3 access keys made in the dashboard (they bypass RLS). Keys from the vault.
  buckets:
    description: Storage buckets to back up. Empty for every bucket the keys can list (ListBuckets).
    type: list
    elements: str
    default: []
  prefix:
    description: Key prefix of all backups in the backup bucket.
    type: str
    default: backups
  concurrency:
    description: Objects copied at once.
    type: int
    default: 4
  part_size_mb:
    description: Multipart part size in MiB for large objects. Memory is about concurrency x 3 x part size.
    type: int
    default: 8
  verify_etag:
    description:
      - Check the MD5 of the bytes read against a single-part ETag.
      - Turn off for an endpoint whose ETags are not MD5s.
    type: bool
    default: true
  lock_wait:
    description: Seconds to wait for another run holding the storage lock before failing.
    type: int
    default: 0
  lock_stale_after:
    description: Seconds after which a lock that is no longer renewed is taken over.
    type: int
    default: 600
  cross_check_dsn:
    description:
      - Connection string of the project's database. When set, the rows of C(storage.objects) are compared with
        the backup and objects referenced in the database but missing from the backup are reported. Never logged.
    type: str
attributes:
  check_mode:
    support: full
    details: Lists the source and the backup bucket and returns the plan; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Needs boto3 (and psycopg for the cross-check) on the host that runs it.
seealso:
  - module: pgdr.supabase.storage_restore
"""

EXAMPLES = r"""
- name: Back up every Storage bucket of production
  pgdr.supabase.storage_backup:
    source: production
    storage:
      endpoint_url: https://abcdefghijklmnopqrst.storage.supabase.co/storage/v1/s3
      region: eu-west-1
      access_key: "{{ vault_storage_s3_access_key }}"
      secret_key: "{{ vault_storage_s3_secret_key }}"
    s3:
      bucket: acme-db-backups
      region: eu-west-1
    cross_check_dsn: "{{ vault_production_db_url }}"
  register: storage_backup
"""

RETURN = r"""
run_id:
  description: Id of the run that wrote a manifest now, or of the newest run when nothing changed (null if none).
  returned: always
  type: str
  sample: 20261128T021500Z
manifest_key:
  description: Key of the run's manifest (the newest one when nothing changed).
  returned: when a manifest exists
  type: str
plan:
  description: What the run does or would do, C(action) (V(copy) or V(none)), counts, objects to copy, leftovers.
  returned: always
  type: dict
manifest:
  description: The written manifest without its object list (counts, times, buckets).
  returned: when a run copied something
  type: dict
run_warnings:
  description: What the run found wrong without failing, one line each (files deleted while it ran, objects of
    C(storage.objects) missing from the backup), for the backup run's alert.
  returned: always
  type: list
  elements: str
cleaned:
  description: Keys left by an unfinished run that were removed.
  returned: always
  type: list
  elements: str
cross_check:
  description: C(storage.objects) against the backup, C(missing) (in the database only) and C(unreferenced).
  returned: with O(cross_check_dsn)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    backup_set_spec,
    fail,
    long_running,
    s3_target,
)


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import storage_assets

    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "storage": storage_assets.storage_spec(),
            "buckets": {"type": "list", "elements": "str", "default": []},
            "concurrency": {"type": "int", "default": 4},
            "part_size_mb": {"type": "int", "default": 8},
            "verify_etag": {"type": "bool", "default": True},
            "lock_wait": {"type": "int", "default": 0},
            "lock_stale_after": {"type": "int", "default": 600},
            "cross_check_dsn": {"type": "str", "no_log": True},
            "fail_on_missing": {"type": "bool", "default": False},
            "plan_limit": {"type": "int", "default": 100},
        },
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    p = module.params
    try:
        result = storage_assets.backup_assets(
            storage_assets.storage_target(p["storage"]),
            p["buckets"],
            s3_target(p["s3"]),
            p["prefix"],
            p["source"],
            endpoint=p["storage"].get("endpoint_url"),
            check_mode=module.check_mode,
            concurrency=p["concurrency"],
            part_size=p["part_size_mb"] * 1024 * 1024,
            verify_etag=p["verify_etag"],
            lock_wait=p["lock_wait"],
            lock_stale_after=p["lock_stale_after"],
            limit=p["plan_limit"],
            cross_check_dsn=p["cross_check_dsn"],
        )
        counts = result["plan"]["counts"]
        verb = "would copy" if module.check_mode else "copied"
        result["msg"] = (
            f"storage of {p['source']}: {verb} {counts['new']} new and {counts['changed']} changed objects, "
            f"{counts['metadata']} with new metadata, {counts['unchanged']} unchanged, "
            f"{counts['deleted']} newly deleted"
            if result["plan"]["action"] == "copy"
            else f"storage of {p['source']}: {counts['unchanged']} objects unchanged since run {result['run_id']}; "
            "nothing to copy"
        )
        storage_assets.report_missing(module, result, p["fail_on_missing"], "the storage backup")
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
