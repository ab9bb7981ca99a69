#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pgbackrest_info
short_description: Read a pgBackRest repository - backups, WAL range, RPO right now and base backup age
description:
  - Reads C(pgbackrest info --output=json) and the repository listing (for the upload time of the newest archived
    WAL segment) and returns the backups, the archived WAL range, the restorable window and their freshness
    against thresholds (C(rpo_ok), C(base_ok)), which monitoring asserts on.
  - A stanza that does not exist is state (C(exists=false), not fresh), not a failure; an unreadable repository
    (wrong cipher passphrase, refused credentials) fails.
  - With O(verify=true) it also runs C(pgbackrest verify), which re-reads every file of the repository, and fails
    when the report shows damage (C(verify) exits 0 even then).
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.pgbackrest_config
options:
  max_wal_age_s:
    description: Oldest acceptable age of the newest archived WAL, in seconds (the RPO objective).
    type: int
    default: 300
  max_base_age_s:
    description: Oldest acceptable age of the newest base backup, in seconds.
    type: int
    default: 93600
  verify:
    description: Also re-read the repository with C(pgbackrest verify) and fail on damage.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.pgbackrest_backup
"""

EXAMPLES = r"""
- name: Read the PITR repository
  pgdr.supabase.pgbackrest_info:
    stanza: production
    config_file: /etc/pgbackrest/pgdr-production.conf
    max_wal_age_s: 300
  register: pitr

- name: Alert when WAL archiving is late
  ansible.builtin.assert:
    that: pitr.freshness.rpo_ok
    fail_msg: "newest archived WAL is {{ pitr.freshness.newest_wal_age_s }} s old"
"""

RETURN = r"""
exists:
  description: Whether the stanza exists in the repository.
  returned: always
  type: bool
backups:
  description: Backups, oldest first (label, type, prior, error, start, stop, wal_start, wal_stop, size, repo_size).
  returned: always
  type: list
  elements: dict
archive:
  description: Archived WAL range (id, min, max segment names).
  returned: always
  type: dict
window:
  description:
    - Restorable window (earliest, latest) as ISO-8601 times; nulls when nothing is restorable. latest is the last
      archived commit (read with pg_waldump from the newest archived segments), the newest moment replay can reach;
      text says it in words.
  returned: always
  type: dict
freshness:
  description: >-
    newest_wal_at, newest_wal_age_s (the RPO right now), newest_base_backup_at, newest_base_backup_age_s,
    the thresholds, rpo_ok and base_ok.
  returned: always
  type: dict
verify:
  description: Outcome of C(pgbackrest verify) (ok, status, problems).
  returned: when verify=true
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail, pgbackrest_config_spec


def main():
    module = AnsibleModule(
        argument_spec={
            **pgbackrest_config_spec(),
            "max_wal_age_s": {"type": "int", "default": 300},
            "max_base_age_s": {"type": "int", "default": 93600},
            "verify": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest as pb
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_repo as pb_repo
    from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt

    p = module.params
    try:
        tool = pb.PgBackRest(p["stanza"], config_file=p["config_file"])
        summary = pb_repo.parse_info(tool.info())
        if summary["exists"]:
            pb_repo.check_info(summary)
            summary["newest_wal_ts"] = tool.newest_wal_time(summary["archive"])
        fresh = pb_repo.freshness(summary, max_wal_age_s=p["max_wal_age_s"], max_base_age_s=p["max_base_age_s"])
        if summary["exists"] and summary["backups"] and summary["archive"]["max"]:
            # What a restore can reach ends at the last archived commit, not at the newest WAL's upload.
            bin_dir = pb.DEFAULT_BIN_DIR.format(major=summary.get("pg_version") or "15")
            moment, _unused, _unused = tool.last_archived_commit(summary["archive"], bin_dir)
            summary["last_commit_ts"] = moment.timestamp() if moment else None
        earliest, latest = pb_repo.restorable_window(summary)
        result = {
            "changed": False,
            "exists": summary["exists"],
            "status": summary["status"],
            "backups": summary["backups"],
            "archive": summary["archive"],
            "window": {
                "earliest": timefmt.iso_exact(earliest),
                "latest": timefmt.iso_exact(latest),
                "text": pb_repo.window_text(summary),
            },
            "freshness": fresh,
            "msg": (
                f"stanza {p['stanza']}: {len(summary['backups'])} backups, newest WAL {fresh['newest_wal_age_s']} s "
                f"old, newest base backup {fresh['newest_base_backup_age_s']} s old"
                if summary["exists"]
                else f"stanza {p['stanza']} does not exist in the repository"
            ),
        }
        if p["verify"] and summary["exists"]:
            report = tool.verify()
            result["verify"] = {k: report[k] for k in ("ok", "status", "problems")}
            if not report["ok"]:
                # result carries the summary msg: the failure's msg replaces it (msg= beside **result was a TypeError).
                damage = "pgbackrest verify found damage: " + "; ".join(report["problems"])
                module.fail_json(**{**result, "msg": damage})
        module.exit_json(**result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
