#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: storage_restore
short_description: Restore a Storage backup run into a staging project's buckets
description:
  - Reads a storage backup run's manifest (the newest, a given run, or the newest at or before a logical backup's
    id) and copies its objects from the backup bucket into the destination Storage endpoint's buckets, streaming
    each one and verifying the SHA-256 recorded at backup before the object becomes visible (a damaged copy is
    never written).
  - Each object gets back the metadata recorded at backup (content type, cache control, content disposition,
    encoding, language, user metadata), exactly.
  - Idempotent. An object already in the destination with the same bytes (its size, and the MD5 ETag or the
    multipart ETag the backup recorded) is skipped, and only its metadata is put back (a copy onto itself, no data
    sent) when that drifted, so a second run changes nothing. Objects marked deleted are not restored.
  - Objects the manifest does not list are left alone, unless O(prune) - then they are deleted from the restored
    buckets once every object of the run is in place, so the buckets hold exactly the run's state; in check mode
    they are listed (C(prune) in RV(plan)).
  - With O(from_secondary) O(s3) is the immutable bucket; the run's manifest and files are read at the exact locked
    versions its secure-copy record there names.
  - Buckets can be renamed on the way (O(bucket_map)); missing destination buckets are created only with
    O(create_buckets).
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
  - pgdr.supabase.storage
options:
  source:
    description: Name of the backed-up source in object keys, for example V(production).
    type: str
    required: true
  storage:
    description:
      - The Storage endpoint to restore into (the staging project). For Supabase
        V(https://<ref>.storage.supabase.co/storage/v1/s3) with the project's region and S3 access keys made in
        its dashboard. Keys from the vault.
  prefix:
    description: Key prefix of all backups in the backup bucket.
    type: str
    default: backups
  run_id:
    description: The storage backup run to restore, or V(latest).
    type: str
    default: latest
  at_or_before:
    description:
      - Restore the newest run at or before this UTC timestamp id (for example the logical backup's id
        V(20261128T000000Z)), so files and database describe about the same moment. Overrides O(run_id).
    type: str
  buckets:
    description: Source buckets to restore. Empty for all of the manifest's buckets.
    type: list
    elements: str
    default: []
  bucket_map:
    description: Source bucket name to destination bucket name, for buckets restored under another name.
    type: dict
    default: {}
  create_buckets:
    description: Create destination buckets that do not exist (else the run fails naming them).
    type: bool
    default: false
  concurrency:
    description: Objects restored at once.
    type: int
    default: 4
  part_size_mb:
    description: Objects up to this many MiB are verified in memory and written with one PUT, larger ones by multipart.
    type: int
    default: 8
  cross_check_dsn:
    description:
      - Connection string of the restored database. When set, its C(storage.objects) rows are compared with the
        run's manifest, reporting objects referenced in the database but missing from the backup. Never logged.
    type: str
  prune:
    description:
      - Delete the objects of the restored buckets that the run does not hold (files added after it), so each
        bucket is exactly the run's state. Off by default; check mode lists what it would delete.
    type: bool
    default: false
  from_secondary:
    description: O(s3) is the immutable bucket; read the locked versions its secure-copy records name.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Reads the manifest and the destination and returns the plan (buckets to create, objects); writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.storage_backup
"""

EXAMPLES = r"""
- name: Restore production's newest storage backup into the staging project
  pgdr.supabase.storage_restore:
    source: production
    s3:
      bucket: acme-db-backups
      region: eu-west-1
    storage:
      endpoint_url: https://tsrqponmlkjihgfedcba.storage.supabase.co/storage/v1/s3
      region: eu-west-1
      access_key: "{{ vault_staging_storage_s3_access_key }}"
      secret_key: "{{ vault_staging_storage_s3_secret_key }}"
    at_or_before: "{{ selected_backup_id }}"
    create_buckets: true
"""

RETURN = r"""
run_id:
  description: Id of the storage backup run restored.
  returned: always
  type: str
manifest_key:
  description: Key of that run's manifest.
  returned: always
  type: str
plan:
  description:
    - Buckets (existing or to create), counts (objects, copy, metadata, skip, overwrite, prune), the first objects
      to copy, whose metadata to put back (C(metadata)) and to delete with O(prune) (C(prune)).
  returned: always
  type: dict
metadata_restored:
  description: Objects whose metadata was put back now (their bytes were right).
  returned: always
  type: int
pruned:
  description: Objects deleted now because the run does not hold them (O(prune)).
  returned: always
  type: int
restored:
  description: Objects written now.
  returned: always
  type: int
bytes_restored:
  description: Bytes written now.
  returned: always
  type: int
cross_check:
  description: C(storage.objects) of O(cross_check_dsn) against the manifest (C(missing), C(unreferenced)).
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
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import immutable
    from ansible_collections.pgdr.supabase.plugins.module_utils import storage_assets as sa

    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "storage": sa.storage_spec(),
            "run_id": {"type": "str", "default": "latest"},
            "at_or_before": {"type": "str"},
            "buckets": {"type": "list", "elements": "str", "default": []},
            "bucket_map": {"type": "dict", "default": {}},
            "create_buckets": {"type": "bool", "default": False},
            "concurrency": {"type": "int", "default": 4},
            "part_size_mb": {"type": "int", "default": 8},
            "cross_check_dsn": {"type": "str", "no_log": True},
            "fail_on_missing": {"type": "bool", "default": False},
            "plan_limit": {"type": "int", "default": 100},
            "prune": {"type": "bool", "default": False},
            "from_secondary": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    p = module.params
    try:
        backup = s3_target(p["s3"])
        sprefix = sa.storage_prefix(p["prefix"], p["source"])
        runs = immutable.list_secured_runs(backup, sprefix) if p["from_secondary"] else sa.list_runs(backup, sprefix)
        run_id = sa.select_run(runs, p["run_id"], p["at_or_before"])
        if run_id is None:
            raise DRError(
                f"no storage backup run matches (run_id={p['run_id']}, at_or_before={p['at_or_before']})",
                step="select storage backup",
                subject=backup.where(sprefix + "manifests/"),
                hint=f"runs found: {', '.join(runs[-5:]) or 'none'}; run the storage backup first or pick one of them",
            )
        if p["from_secondary"]:
            manifest, _record, _info = immutable.load_secured_run(backup, sprefix, run_id)
        else:
            manifest = sa.load_manifest(backup, sprefix, run_id)
        result = sa.restore_assets(
            backup,
            manifest,
            sa.storage_target(p["storage"]),
            bucket_map=p["bucket_map"],
            buckets=p["buckets"],
            create_buckets=p["create_buckets"],
            check_mode=module.check_mode,
            concurrency=p["concurrency"],
            part_size=p["part_size_mb"] * 1024 * 1024,
            region=p["storage"].get("region"),
            limit=p["plan_limit"],
            prune=p["prune"],
        )
        result.update(run_id=run_id, manifest_key=sa.manifest_key(sprefix, run_id))
        counts = result["plan"]["counts"]
        verb = "would restore" if module.check_mode else "restored"
        result["msg"] = (
            f"storage run {run_id} of {p['source']}: {verb} {counts['copy']} of {counts['objects']} objects "
            f"({counts['skip']} already there, {counts['metadata']} with their metadata put back"
            + (
                f", {counts['prune']} not in the run {'to delete' if module.check_mode else 'deleted'}"
                if p["prune"]
                else ""
            )
            + ")"
        )
        if p["cross_check_dsn"]:
            result["cross_check"] = sa.cross_check(p["cross_check_dsn"], manifest, p["buckets"], p["plan_limit"])
            sa.report_missing(module, result, p["fail_on_missing"], f"storage run {run_id}")
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
