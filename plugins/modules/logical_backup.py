#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: logical_backup
short_description: Take a streamed, checksummed logical backup of a Supabase or PostgreSQL database into S3
description:
  - Backs up what a restore must give back, from one exported snapshot - the roles (C(pg_dumpall --roles-only)),
    the schema of the app's schemas (C(pg_dump --schema-only)), an index (the catalog fingerprint - every object
    with its owner and ACL, default privileges, the app's objects on platform tables, cron jobs, webhooks - and a
    content digest per table) and the rows as COPY streams written by O(jobs) parallel workers - and streams each
    object through zstd (and age with O(encryption_recipients)) and SHA-256 into an S3 multipart upload with S3
    SHA-256 checksums. Nothing is written to local disk and memory stays bounded whatever the database size.
  - The manifest (versioned JSON with every object's key, size and SHA-256, per-table row counts taken in the
    backup's own snapshot, a digest of the catalog fingerprint and the applied migration versions, signed with
    O(signing_key)) is written last, only if absent, after checking that every object is there. It is the commit
    point; a backup without one is incomplete and never offered for restore.
  - One backup per schedule window (O(window)); a second run inside the window changes nothing.
  - A failed or interrupted run aborts its multipart uploads and removes the objects it wrote itself, never a
    committed backup; a lock object in the bucket (compare-and-swap) keeps two runs against the same source from
    interleaving, and a run that loses the commit to another reports that run's backup.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
options:
  source:
    description: Name of the source in object keys, for example V(production).
    type: str
    required: true
  dsn:
    description:
      - libpq connection string of the source database, for example
        V(postgresql://postgres:PASSWORD@db.REF.supabase.co:5432/postgres). Use the direct connection or the
        session pooler (port 5432), never the transaction pooler. Never logged; the password reaches pg_dump
        through its environment, not its command line.
    type: str
    required: true
  prefix:
    description: Key prefix of all backups in the bucket.
    type: str
    default: backups
  window:
    description: Schedule window; the backup id is the window's start, so one backup is taken per window.
    type: str
    default: daily
    choices: [daily, hourly, every_run]
  flavor:
    description:
      - V(supabase) leaves platform schemas and reserved roles out as the Supabase CLI does; V(postgres) dumps
        every user schema. V(auto) picks V(supabase) when the source has an C(auth) schema and the
        C(authenticated) role.
    type: str
    default: auto
    choices: [auto, supabase, postgres]
  bin_dir:
    description: Folder of pg_dump and pg_dumpall. Default the one matching the server's major version, then PATH.
    type: path
  compression_level:
    description: zstd level. 1 is fastest; higher levels trade time for size.
    type: int
    default: 1
  compression_threads:
    description: zstd worker threads (0 compresses on the reading thread).
    type: int
    default: 1
  part_size_mb:
    description: Multipart part size in MiB. Default 16, raised for very large databases to stay under 10,000 parts.
    type: int
  concurrency:
    description: Parts uploaded at once. Memory is about (concurrency + 1) x part size.
    type: int
    default: 3
  jobs:
    description:
      - Workers that read the tables' rows (each a session in the backup's snapshot) and write the data objects.
      - Memory is about O(jobs) x 3 x part size on top of the dumps' own.
    type: int
    default: 2
  lock_wait:
    description: Seconds to wait for another run holding the source's lock before failing.
    type: int
    default: 0
  lock_stale_after:
    description: Seconds after which a lock that is no longer renewed (a killed run) is taken over.
    type: int
    default: 600
  progress_file:
    description: File to append progress lines to (follow it with C(tail -f) during a long dump).
    type: path
  encryption_recipients:
    description:
      - age recipients (C(age1...)) to encrypt every object to, on this host, before it leaves it; whoever holds
        the bucket cannot read the dumps. Restores need a matching identity (C(AGE-SECRET-KEY-1...)).
      - The manifest records each object's SHA-256 as stored and of the plaintext stream, so both the stored
        bytes and the decrypted result are verified on restore.
    type: list
    elements: str
    default: []
  signing_key:
    description:
      - Ed25519 private key (PEM, PKCS#8, no passphrase) that signs the manifest, from a vault on the backup hosts
        only; never logged. Restores trust a manifest only when its signature verifies with one of their trusted
        public keys (M(pgdr.supabase.backup_select) O(pgdr.supabase.backup_select#module:manifest_public_keys)).
      - Without it the manifest is unsigned (the module warns) and a restore refuses it unless told, by its backup
        id, to accept it.
    type: str
attributes:
  check_mode:
    support: full
    details: Connects to the source and the bucket read-only and returns the plan; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Needs psycopg, boto3 and zstandard on the host that runs it, and PostgreSQL client tools of the server's major
    version or newer.
seealso:
  - module: pgdr.supabase.backup_info
"""

EXAMPLES = r"""
- name: Back up production once a day
  pgdr.supabase.logical_backup:
    source: production
    dsn: "{{ vault_production_db_url }}"
    s3:
      bucket: acme-db-backups
      region: eu-west-1
      access_key: "{{ vault_backup_s3_access_key }}"
      secret_key: "{{ vault_backup_s3_secret_key }}"
    window: daily
  register: backup

- name: Show what a backup would do (also what --check prints)
  pgdr.supabase.logical_backup:
    source: production
    dsn: "{{ vault_production_db_url }}"
    s3: "{{ backup_s3 }}"
  check_mode: true
  register: plan
"""

RETURN = r"""
backup_id:
  description: Id of the backup of this window (taken now, or found).
  returned: always
  type: str
  sample: 20261128T000000Z
manifest_key:
  description: Key of the manifest, the backup's commit point.
  returned: always
  type: str
  sample: backups/production/logical/20261128T000000Z/manifest.json
plan:
  description: What the run does or would do; the source, the objects and their keys, leftovers of an unfinished run.
  returned: always
  type: dict
summary:
  description: Listing row of the backup (id, times, size, objects); absent in check mode when it does not exist yet.
  returned: when the backup exists
  type: dict
manifest:
  description: The manifest written (or found), without the per-object schema hashes.
  returned: when the backup exists
  type: dict
cleaned:
  description: Leftovers of an earlier unfinished run that were removed (aborted uploads and objects).
  returned: always
  type: list
  elements: str
progress_file:
  description: The file the progress lines went to (O(progress_file)), or null.
  returned: always
  type: str
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
    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "dsn": {"type": "str", "required": True, "no_log": True},
            "window": {"type": "str", "default": "daily", "choices": ["daily", "hourly", "every_run"]},
            "flavor": {"type": "str", "default": "auto", "choices": ["auto", "supabase", "postgres"]},
            "bin_dir": {"type": "path"},
            "compression_level": {"type": "int", "default": 1},
            "compression_threads": {"type": "int", "default": 1},
            "part_size_mb": {"type": "int"},
            "concurrency": {"type": "int", "default": 3},
            "jobs": {"type": "int", "default": 2},
            "lock_wait": {"type": "int", "default": 0},
            "lock_stale_after": {"type": "int", "default": 600},
            "progress_file": {"type": "path"},
            "encryption_recipients": {"type": "list", "elements": "str", "default": []},
            "signing_key": {"type": "str", "no_log": True},
        },
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup

    p = module.params
    try:
        request = logical_backup.BackupRequest(
            p["source"],
            p["dsn"],
            s3_target(p["s3"]),
            prefix=p["prefix"],
            window=p["window"],
            flavor=p["flavor"],
            bin_dir=p["bin_dir"],
            compression_level=p["compression_level"],
            compression_threads=p["compression_threads"],
            part_size=p["part_size_mb"] * 1024 * 1024 if p["part_size_mb"] else None,
            concurrency=p["concurrency"],
            jobs=p["jobs"],
            lock_wait=p["lock_wait"],
            lock_stale_after=p["lock_stale_after"],
            progress_file=p["progress_file"],
            encryption_recipients=p["encryption_recipients"],
            sse=p["s3"].get("sse"),
            signing_key=p["signing_key"],
        )
        if not p["signing_key"]:
            module.warn("the manifest is not signed (no signing_key): restores refuse it unless named by its backup id")
        plan = logical_backup.plan(request)
        existing = plan.pop("existing_manifest")
        if module.check_mode or existing:
            result = {"changed": existing is None, "backup_id": plan["backup_id"], "plan": plan, "cleaned": []}
            if existing:
                result["msg"] = f"backup {plan['backup_id']} of {p['source']} exists already; nothing to do"
                result.update(manifest=existing, summary=plan["existing"])
            else:
                result["msg"] = f"would take backup {plan['backup_id']} of {p['source']}"
        else:
            result = logical_backup.run(request)
            result["plan"] = plan
        result["manifest_key"] = plan["manifest_key"]
        result["progress_file"] = p["progress_file"]
        if "manifest" in result:
            result["manifest"]["schema"].pop("objects", None)
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
