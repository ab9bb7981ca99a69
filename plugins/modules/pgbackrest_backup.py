#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pgbackrest_backup
short_description: Take a pgBackRest base backup (full, differential or incremental) into the S3 repository
description:
  - Runs C(pgbackrest backup --type=TYPE) as postgres with the configuration written by
    M(pgdr.supabase.pgbackrest_stanza), then reads the repository back and returns the new backup (label, type,
    start and stop times, WAL range).
  - Every run takes a backup (C(changed=true)); schedule it (weekly full, daily diff, hourly incr).
  - pgBackRest turns a differential or incremental backup into a full one when no full backup exists yet;
    check mode says so.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.pgbackrest_config
options:
  type:
    description: Backup type.
    type: str
    default: full
    choices: [full, diff, incr]
  timeout:
    description: Seconds the backup may take before it is stopped and reported as failed.
    type: int
    default: 21600
attributes:
  check_mode:
    support: full
    details: Reads the repository and returns the type that would run and the newest backup. Writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.pgbackrest_stanza
  - module: pgdr.supabase.pgbackrest_info
"""

EXAMPLES = r"""
- name: Take the weekly full backup
  pgdr.supabase.pgbackrest_backup:
    stanza: production
    config_file: /etc/pgbackrest/pgdr-production.conf
    type: full
  become: true
"""

RETURN = r"""
type:
  description: The type that ran (or would run).
  returned: always
  type: str
  sample: full
backup:
  description: The backup taken (label, type, prior, start, stop, wal_start, wal_stop, size, repo_size).
  returned: when a backup was taken
  type: dict
newest:
  description: The newest backup before this run; null when there is none.
  returned: always
  type: dict
duration_s:
  description: Seconds the backup took.
  returned: when a backup was taken
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    fail,
    long_running,
    pgbackrest_config_spec,
)


def main():
    module = AnsibleModule(
        argument_spec={
            **pgbackrest_config_spec(),
            "type": {"type": "str", "default": "full", "choices": ["full", "diff", "incr"]},
            "timeout": {"type": "int", "default": 21600},
        },
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest as pb
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_repo as pb_repo

    p = module.params
    try:
        tool = pb.PgBackRest(p["stanza"], config_file=p["config_file"], timeout=p["timeout"])
        summary = pb_repo.parse_info(tool.info())
        pb_repo.check_info(summary)
        plan = pb_repo.backup_plan(summary, p["type"])
        if module.check_mode:
            module.exit_json(
                changed=True,
                type=plan["type"],
                newest=plan["newest"],
                note=plan["note"],
                msg=f"would take a {plan['type']} backup",
            )
        taken = pb_repo.take_backup(tool, plan["type"], timeout=p["timeout"])
        backup = taken["backup"]
        module.exit_json(
            changed=True,
            type=backup["type"],
            backup=backup,
            newest=plan["newest"],
            duration_s=taken["duration_s"],
            msg=f"took {backup['type']} backup {backup['label']} in {taken['duration_s']} s",
        )
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
