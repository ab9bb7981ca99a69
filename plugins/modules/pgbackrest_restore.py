#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pgbackrest_restore
short_description: Restore a PostgreSQL cluster to a point in time from a pgBackRest repository, into a new cluster
description:
  - Chooses the newest base backup that ended at or before O(target_time), runs C(pgbackrest verify) (and reads its
    report, since it exits 0 even on damage), restores the backup into a new, empty data folder with
    C(--type=time --target-action=promote), then starts the new cluster on its own port with C(archive_mode=off)
    (so it never writes into the source's repository) and waits until recovery ends and it is promoted.
  - Never writes over anything. It refuses a data folder that exists and is not empty, and a target time outside
    the restorable window (from the end of the first backup to the upload of the newest archived WAL), naming the
    window.
  - A marker file (C(pgdr-pitr.json)) in the data folder records what was restored. A second run for the same
    target time into the same folder changes nothing when the cluster is up and promoted, and only starts it when
    it is stopped.
  - The restored cluster holds the source's roles and passwords.
version_added: "0.1.0"
author: pgdr authors
extends_documentation_fragment:
  - pgdr.supabase.pgbackrest
options:
  target_time:
    description:
      - The time to restore to, ISO-8601 (V(2026-11-28T21:14:09Z), V(2026-11-28 22:14:09+01:00)). A time without an
        offset is read as UTC. Transactions that committed at or before it are kept.
    type: str
    required: true
  data_dir:
    description: Data folder of the new cluster. Must not exist, or be empty. Its parent holds the cluster's files.
    type: path
    required: true
  port:
    description: Port of the new cluster; V(0) picks a free one (kept in the marker for later runs).
    type: int
    default: 0
  listen_addresses:
    description: Addresses the new cluster listens on.
    type: str
    default: 127.0.0.1
  config_file:
    description: pgBackRest configuration file of the restore (its archive-get reads it). Default C(pgbackrest.conf)
      next to O(data_dir).
    type: path
  work_dir:
    description: pgBackRest's lock, log and spool folders. Default C(pgbackrest/) next to O(data_dir).
    type: path
  socket_dir:
    description: Unix socket folder of the new cluster. Default C(run/) next to O(data_dir).
    type: path
  log_file:
    description: Server log of the new cluster. Default C(log/postgresql.log) next to O(data_dir).
    type: path
  bin_dir:
    description: PostgreSQL server binaries. Default C(/usr/lib/postgresql/MAJOR/bin) of the restored version.
    type: path
  timeout:
    description: Seconds the restore, and then the replay of WAL, may each take.
    type: int
    default: 600
  process_max:
    description: Parallel processes for the restore.
    type: int
    default: 2
  verify:
    description: Re-read the repository with C(pgbackrest verify) before restoring, and stop on damage.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Reads the repository (without writing a configuration file) and returns the base backup, WAL range and
      window it would use. Creates no folder.
  diff_mode:
    support: none
seealso:
  - module: pgdr.supabase.pgbackrest_info
"""

EXAMPLES = r"""
- name: Restore production as of 14:05 UTC into a new cluster on the staging host
  pgdr.supabase.pgbackrest_restore:
    stanza: production
    repo: "{{ pitr_repo }}"
    target_time: "2026-11-28T14:05:00Z"
    data_dir: /srv/pitr/drill-20261128/data
    port: 0
  become: true
  register: restored
"""

RETURN = r"""
plan:
  description: What the run did or would do - action (restore, start, none), backup, wal_range, window.
  returned: always
  type: dict
port:
  description: Port of the restored cluster.
  returned: unless check mode chose a port yet to pick
  type: int
host:
  description: Address to connect to (the first of listen_addresses).
  returned: always
  type: str
socket_dir:
  description: Unix socket folder of the restored cluster.
  returned: always
  type: str
timings:
  description: Seconds spent in verify_s, restore_s (files), replay_s (start to promoted), total_s.
  returned: when something ran
  type: dict
rpo_s:
  description: Age of the newest archived WAL when the restore started (the RPO achieved by this restore).
  returned: when a restore ran or would run
  type: float
last_replayed_transaction_at:
  description: Commit time of the last transaction replayed.
  returned: when a restore ran
  type: str
marker:
  description: The marker written in the data folder.
  returned: unless check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import Interrupted, fail, long_running


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest as pb

    module = AnsibleModule(
        argument_spec={
            "stanza": {"type": "str", "required": True},
            "repo": pb.repo_spec(),
            "target_time": {"type": "str", "required": True},
            "data_dir": {"type": "path", "required": True},
            "port": {"type": "int", "default": 0},
            "listen_addresses": {"type": "str", "default": "127.0.0.1"},
            "config_file": {"type": "path"},
            "work_dir": {"type": "path"},
            "socket_dir": {"type": "path"},
            "log_file": {"type": "path"},
            "bin_dir": {"type": "path"},
            "timeout": {"type": "int", "default": 600},
            "process_max": {"type": "int", "default": 2},
            "verify": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    p = module.params
    try:
        request = pb.RestoreRequest(
            p["stanza"],
            pb.repo_from_params(p["repo"]),
            pb.parse_time(p["target_time"]),
            p["data_dir"],
            port=p["port"],
            config_file=p["config_file"],
            work_dir=p["work_dir"],
            socket_dir=p["socket_dir"],
            log_file=p["log_file"],
            listen_addresses=p["listen_addresses"],
            bin_dir=p["bin_dir"],
            timeout=p["timeout"],
            process_max=p["process_max"],
            verify=p["verify"],
        )
        plan = pb.restore_plan(request)
        common = {
            "plan": plan,
            "host": p["listen_addresses"].split(",")[0].strip(),
            "socket_dir": request.socket_dir,
            "data_dir": request.data_dir,
        }
        if plan["action"] == "restore":
            common["rpo_s"] = plan["newest_wal_age_s"]
        if module.check_mode:
            module.exit_json(
                changed=plan["action"] != "none", port=plan.get("port"), msg=pb.describe_plan(plan), **common
            )
        result = pb.restore(request, plan)
        result.update(common)
        result["msg"] = pb.describe_result(result)
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
