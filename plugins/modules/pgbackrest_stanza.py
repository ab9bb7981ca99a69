#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pgbackrest_stanza
short_description: Configure pgBackRest for a PostgreSQL cluster and archive its WAL into an S3 repository
description:
  - Writes the pgBackRest configuration file (mode 600, owned by postgres; it holds the repository secrets), creates
    the stanza in the repository, points C(archive_command) at C(pgbackrest archive-push) and sets
    C(archive_timeout) (both with C(ALTER SYSTEM) and a reload; no restart), then runs C(pgbackrest check).
  - Idempotent; a second run with the same inputs reports C(changed=false). C(pgbackrest check) still runs (it
    archives one WAL segment to prove the path works) but changes no setting.
  - Refuses a server with C(archive_mode=off) or C(wal_level=minimal), since changing those needs a restart.
  - Must run on the database host, as root or postgres; pgBackRest runs as postgres.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.pgbackrest
options:
  dsn:
    description: libpq connection string of the cluster as a superuser (for C(ALTER SYSTEM)). Never logged.
    type: str
    required: true
  config_file:
    description: pgBackRest configuration file to write, for example V(/etc/pgbackrest/pgdr-production.conf).
    type: path
    required: true
  work_dir:
    description: Folder of pgBackRest's lock, log and spool folders (C(lock/), C(log/), C(spool/)), owned by postgres.
    type: path
    required: true
  pg_path:
    description: Data folder of the cluster. Default the server's C(data_directory).
    type: path
  pg_port:
    description: Port of the cluster. Default the server's C(port).
    type: int
  pg_socket_path:
    description: Unix socket folder pgBackRest connects through. Default the first of C(unix_socket_directories).
    type: path
  archive_timeout:
    description: Seconds after which PostgreSQL switches to a new WAL segment on a quiet database, the worst-case RPO.
    type: int
    default: 60
  retention_full:
    description: Full backups kept; older ones, and the WAL only they need, are expired after each backup.
    type: int
    default: 2
  retention_diff:
    description: Differential backups kept. Default pgBackRest's (as many as the full backups kept).
    type: int
  process_max:
    description: Parallel processes for compression and transfer.
    type: int
    default: 2
  compress_type:
    description: Compression of files in the repository.
    type: str
    default: zst
    choices: [zst, lz4, gz, bz2, none]
  compress_level:
    description: Compression level. Default pgBackRest's for the type.
    type: int
  archive_async:
    description: Push WAL asynchronously through the spool folder (faster on busy servers).
    type: bool
    default: false
  start_fast:
    description: Start backups with an immediate checkpoint instead of waiting for the next one (minutes).
    type: bool
    default: true
  binary:
    description: The pgbackrest command, as the server's C(archive_command) calls it.
    type: str
    default: pgbackrest
  check:
    description: Run C(pgbackrest check) at the end (not in check mode).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Reads the configuration file, the server's settings and the repository, and returns the steps a run
      would take. Writes nothing.
  diff_mode:
    support: none
    details: The configuration file holds secrets, so it is never shown; the steps name what would change.
  platform:
    platforms: posix
notes:
  - Needs psycopg and the pgbackrest package on the database host.
seealso:
  - module: pgdr.supabase.pgbackrest_backup
  - module: pgdr.supabase.pgbackrest_info
"""

EXAMPLES = r"""
- name: Archive production's WAL into the S3 repository
  pgdr.supabase.pgbackrest_stanza:
    stanza: production
    dsn: "{{ vault_production_superuser_dsn }}"
    config_file: /etc/pgbackrest/pgdr-production.conf
    work_dir: /var/lib/pgdr/pgbackrest
    repo:
      bucket: acme-db-pitr
      endpoint: s3.eu-west-1.amazonaws.com
      region: eu-west-1
      path: /pgbackrest/production
      access_key: "{{ vault_pitr_s3_access_key }}"
      secret_key: "{{ vault_pitr_s3_secret_key }}"
      cipher_pass: "{{ vault_pitr_cipher_pass }}"
  become: true
"""

RETURN = r"""
plan:
  description: What the run did or would do.
  returned: always
  type: dict
  contains:
    steps:
      description: The changes, in order; empty when the host is as it should be.
      type: list
      elements: str
    archive_command:
      description: The archive_command the server runs.
      type: str
    pg:
      description: The cluster pgBackRest backs up (path, port, socket_path, server).
      type: dict
    stanza_exists:
      description: Whether the stanza existed before the run.
      type: bool
check:
  description: Outcome and duration of C(pgbackrest check).
  returned: when it ran
  type: dict
  sample: {ok: true, duration_s: 0.9}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest as pb
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_stanza as pb_stanza

    module = AnsibleModule(
        argument_spec={
            "stanza": {"type": "str", "required": True},
            "repo": pb.repo_spec(),
            "dsn": {"type": "str", "required": True, "no_log": True},
            "config_file": {"type": "path", "required": True},
            "work_dir": {"type": "path", "required": True},
            "pg_path": {"type": "path"},
            "pg_port": {"type": "int"},
            "pg_socket_path": {"type": "path"},
            "archive_timeout": {"type": "int", "default": 60},
            "retention_full": {"type": "int", "default": 2},
            "retention_diff": {"type": "int"},
            "process_max": {"type": "int", "default": 2},
            "compress_type": {"type": "str", "default": "zst", "choices": ["zst", "lz4", "gz", "bz2", "none"]},
            "compress_level": {"type": "int"},
            "archive_async": {"type": "bool", "default": False},
            "start_fast": {"type": "bool", "default": True},
            "binary": {"type": "str", "default": "pgbackrest"},
            "check": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        work = p["work_dir"]
        settings = pb.Settings(
            pb.repo_from_params(p["repo"]),
            lock_path=f"{work}/lock",
            log_path=f"{work}/log",
            spool_path=f"{work}/spool",
            retention_full=p["retention_full"],
            retention_diff=p["retention_diff"],
            process_max=p["process_max"],
            compress_type=p["compress_type"],
            compress_level=p["compress_level"],
            archive_async=p["archive_async"],
            start_fast=p["start_fast"],
        )
        request = pb_stanza.StanzaRequest(
            p["stanza"],
            settings,
            p["config_file"],
            p["dsn"],
            pg_path=p["pg_path"],
            pg_port=p["pg_port"],
            pg_socket_path=p["pg_socket_path"],
            archive_timeout=p["archive_timeout"],
            binary=p["binary"],
            check=p["check"],
        )
        plan = pb_stanza.stanza_plan(request)
        changed = bool(plan["steps"])
        if module.check_mode:
            plan.pop("_config_text")
            verb = "would " + "; ".join(plan["steps"]) if changed else "nothing to change"
            module.exit_json(changed=changed, plan=plan, msg=f"stanza {p['stanza']}: {verb}")
        result = pb_stanza.stanza_apply(request, plan)
        verb = "; ".join(plan["steps"]) if changed else "already configured"
        module.exit_json(changed=changed, msg=f"stanza {p['stanza']}: {verb}", **result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
