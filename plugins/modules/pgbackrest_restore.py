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
  - The upper end of the window is the last archived commit, read from the newest archived WAL segments with
    C(pg_waldump). Replay by time stops only before a transaction that ended after the target, so a later target
    cannot be reached, and at that commit itself replay stops by its LSN. With O(switch_wal) and O(source_dsn), a
    target after it (and not in the future) first forces a WAL switch on the source and waits until that segment is
    archived; when no transaction ended between the last archived commit and the target, replay stops right after
    that commit (by LSN), which is the state at the target, and the result says so.
  - A marker file (C(pgdr-pitr.json)) in the data folder records what was restored (the target, where replay
    stopped, the last replayed commit, the timeline, the base backup). A second run for the same target time into
    the same folder changes nothing when the cluster is up and promoted, and only starts it when it is stopped.
  - A failed attempt stops its cluster and empties its data folder (its log stays); an attempt file next to the
    data folder lets the next run of the same command clean what a killed run left and restore again.
  - The repository's configuration file (S3 keys, cipher passphrase) exists only while the files are restored and
    WAL is replayed; it is removed after promotion or failure, and with it the C(restore_command) that names it.
  - The restored cluster holds the source's roles and password hashes; O(runbook_user) gets its own password
    (O(runbook_password)), set as O(admin_user) over the Unix socket with a SCRAM verifier (no plaintext reaches
    the server), so the source's password does not open it for the runbooks.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.pgbackrest
options:
  target_time:
    description:
      - The time to restore to, ISO-8601 (V(2026-11-28T21:14:09Z), V(2026-11-28 22:14:09+01:00)). A time without an
        offset is read as UTC. Transactions that committed at or before it are kept.
    type: str
    required: true
  data_dir:
    description:
      - Data folder of the new cluster. Must not exist, or be empty. Its parent holds the cluster's files.
      - Give O(data_dir), or O(root) (the folder is then C(ROOT/NAME/data)).
    type: path
  root:
    description: Folder holding one sub-folder per restored cluster; the data folder is C(ROOT/NAME/data).
    type: path
  name:
    description:
      - Name of the restored cluster's folder under O(root). Empty for C(pitr-<the target as a UTC instant>)
        (C(pitr-20261128T140500Z), with the fraction of a second when the target has one), so two spellings of one
        instant find the same cluster and two instants never share one.
    type: str
    default: ""
  source_dsn:
    description:
      - libpq connection string of the source as a superuser (pg_switch_wal, pg_stat_archiver), used only with
        O(switch_wal). Never logged.
    type: str
  switch_wal:
    description:
      - When the target is after the last archived commit, force a WAL switch on the source (O(source_dsn)) first
        and wait until it is archived. In check mode the switch is only planned.
    type: bool
    default: false
  admin_user:
    description: A superuser of the restored cluster (a copy of the source's) that the postgres OS user reaches over
      the Unix socket (peer or trust). It sets O(runbook_user)'s password and runs the queries of the restore.
    type: str
    default: postgres
  runbook_user:
    description: The role the runbooks log in as over TCP after the restore.
    type: str
  runbook_password:
    description: The restored cluster's own password for O(runbook_user) (not the source's). Never logged.
    type: str
  dbname:
    description: Database the runbooks use (for the login check).
    type: str
    default: postgres
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
      window it would use, and when it would force a WAL switch on the source. Creates no folder, connects to no
      database (a planned WAL switch is only reported).
  diff_mode:
    support: none
  platform:
    platforms: posix
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
restore:
  description:
    - The one result every restore module returns (M(pgdr.supabase.logical_restore),
      M(pgdr.supabase.pgbackrest_restore), M(pgdr.supabase.supabase_pitr_restore)); M(pgdr.supabase.record) takes
      it as it is (its O(pgdr.supabase.record#module:restore) option).
    - C(dsn) the restored database's connection string with its password masked (the role puts the password back
      into a C(no_log) fact; empty while only planned for a target that does not exist yet), C(target) where it
      went, C(backup) (C(id), C(source), C(taken_at), and C(objects) for a logical backup), C(point_in_time) (the
      moment aimed at, C(target_time), and where the method knows it where replay stopped; null when the backup
      itself is given back), C(rpo_s) (data lost relative to it when measured; null when unknown), C(timings)
      (seconds per step), C(verification) (C(state) V(checksums), V(repository) or V(none), what the restore itself
      verified), C(method) (V(logical), V(pitr), V(supabase_pitr)), C(mode), C(planned) (check mode, only
      planned) and C(details) (what the record also keeps).
  returned: always
  type: dict
  sample:
    method: logical
    mode: new_database
    dsn: "postgresql://postgres:********@127.0.0.1:5433/restore_20261128t000000z"
    target: "127.0.0.1:5433/restore_20261128t000000z"
    backup: {id: 20261128T000000Z, source: production, taken_at: "2026-11-28T00:00:04Z"}
    point_in_time: null
    rpo_s: null
    timings: {download_verify: 1.2, data: 4.5}
    verification: {state: checksums}
    planned: false
    details: {}
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
  description:
    - Data lost relative to the target, in seconds - the target time minus the last replayed commit's time; null
      when nothing was replayed or in check mode.
  returned: always
  type: float
point_in_time:
  description:
    - The moment restored - target_time, restored_to (where replay stopped), last_replayed_commit_at, timeline,
      base_backup, base_backup_type, window, last_archived_commit_at, wal_switch, note, rpo_s.
  returned: unless check mode
  type: dict
data_dir:
  description: The data folder of the restored cluster.
  returned: always
  type: str
name:
  description: The restored cluster's folder name (with O(root)).
  returned: always
  type: str
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


def restore_of(p, request, plan, result, planned):
    """The restore result (restore_result.build) of this run or plan."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg, restore_result

    port = result.get("port") or plan.get("port")
    reachable = bool(port) and not planned
    backup = plan.get("backup") or {}
    point = result.get("point_in_time") or plan.get("point_in_time") or {"target_time": plan.get("target_time")}
    return restore_result.build(
        "pitr",
        "new_cluster",
        pg.url(p["runbook_user"], pg.MASK, request.host, port, p["dbname"]) if reachable and p["runbook_user"] else "",
        f"{request.host}:{port}/{p['dbname']}"
        if reachable
        else f"new cluster {request.data_dir} (planned) on {request.host}:{port or 'a free port'}",
        {"id": backup.get("label"), "source": p["stanza"], "taken_at": backup.get("stop")},
        point_in_time=point,
        rpo_s=point.get("rpo_s") if isinstance(point, dict) else None,
        timings=result.get("timings"),
        verification={"state": "repository" if p["verify"] and result.get("changed") and not planned else "none"},
        planned=planned,
    )


def main():
    import os

    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest as pb
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_restore as pb_restore

    module = AnsibleModule(
        argument_spec={
            "stanza": {"type": "str", "required": True},
            "repo": pb.repo_spec(),
            "target_time": {"type": "str", "required": True},
            "data_dir": {"type": "path"},
            "root": {"type": "path"},
            "name": {"type": "str", "default": ""},
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
            "source_dsn": {"type": "str", "no_log": True},
            "switch_wal": {"type": "bool", "default": False},
            "admin_user": {"type": "str", "default": "postgres"},
            "runbook_user": {"type": "str"},
            "runbook_password": {"type": "str", "no_log": True},
            "dbname": {"type": "str", "default": "postgres"},
        },
        required_one_of=[["data_dir", "root"]],
        mutually_exclusive=[["data_dir", "root"]],
        required_by={"runbook_password": "runbook_user"},
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    p = module.params
    try:
        target = pb.parse_time(p["target_time"])
        name = p["name"] or pb_restore.cluster_name(target)
        if p["switch_wal"] and not (p["source_dsn"] or "").strip():
            module.fail_json(
                msg="switch_wal needs the source's DSN (source_dsn, a superuser's): an empty connection string "
                "would fall back to libpq's defaults, which may name another server"
            )
        request = pb_restore.RestoreRequest(
            p["stanza"],
            pb.repo_from_params(p["repo"]),
            target,
            p["data_dir"] or os.path.join(p["root"], name, "data"),
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
            source_dsn=p["source_dsn"],
            switch_wal=p["switch_wal"],
            admin_user=p["admin_user"],
            runbook_user=p["runbook_user"],
            runbook_password=p["runbook_password"],
            dbname=p["dbname"],
        )
        plan = pb_restore.restore_plan(request, check_mode=module.check_mode)
        common = {
            "plan": plan,
            "host": request.host,
            "socket_dir": request.socket_dir,
            "data_dir": request.data_dir,
            "name": os.path.basename(os.path.dirname(request.data_dir)),
        }
        if module.check_mode:
            point = plan.get("point_in_time")
            planned = plan["action"] == "restore"
            module.exit_json(
                restore=restore_of(p, request, plan, {"port": plan.get("port"), "point_in_time": point}, planned),
                changed=plan["action"] != "none",
                port=plan.get("port"),
                rpo_s=(point or {}).get("rpo_s"),
                msg=pb_restore.describe_plan(plan),
                **({"point_in_time": point} if point else {}),
                **common,
            )
        result = pb_restore.restore(request, plan)
        result.update(common)
        result["rpo_s"] = (result.get("point_in_time") or {}).get("rpo_s")
        result["msg"] = pb_restore.describe_result(result)
        result["restore"] = restore_of(p, request, plan, result, False)
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
