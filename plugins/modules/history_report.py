#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: history_report
short_description: Write the history page of every restore and drill, with RTO, RPO and backup charts
description:
  - Reads every recorded run from the JSON-lines log that M(pgdr.supabase.record) appends to, and the source's
    backups from their manifests in the bucket, and writes one self-contained HTML page (inline CSS and SVG,
    nothing loaded from anywhere, so it opens from an air-gapped laptop).
  - The page holds every restore, drill, promote and rollback as a row (with a link to its own report page),
    charts of RTO and RPO per drill against their targets, charts of backup size and duration per day, and says
    plainly when the last successful drill is older than O(drill_max_age_days).
  - The page is rewritten only when what it shows differs (the time it was written aside), so a second run with
    nothing new reports C(changed=false). A bucket that cannot be read is said on the page, which is still written.
version_added: "0.2.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
options:
  jsonl_path:
    description: The JSON-lines log of recorded runs. A missing log is an empty history.
    type: path
    required: true
  path:
    description: The page to write (HTML).
    type: path
    required: true
  s3:
    description: The bucket whose manifests the backup charts come from; only read. Omit to leave backups out.
    required: false
  prefix:
    description: Key prefix of the backups in O(s3).
    type: str
    default: backups
  source:
    description: Source name whose backups are charted. Needed with O(s3).
    type: str
  drill_max_age_days:
    description: The page says plainly when the last successful drill is older than this many days (a quarter).
    type: int
    default: 90
attributes:
  check_mode:
    support: full
    details: Reads the log and the bucket and builds the page; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.record
"""

EXAMPLES = r"""
- name: Write the history page of the restores and drills
  pgdr.supabase.history_report:
    jsonl_path: docs/ops/restore-events.jsonl
    path: reports/history.html
    s3: "{{ backup_s3 }}"
    prefix: backups
    source: production
  register: history

- name: Say when the last drill is too old
  ansible.builtin.debug:
    msg: "{{ history.summary.drill_status }}"
"""

RETURN = r"""
path:
  description: The page.
  returned: always
  type: str
written:
  description: Whether the page was written now (false in check mode and when it holds the same already).
  returned: always
  type: bool
summary:
  description: What the page says.
  returned: always
  type: dict
  contains:
    events:
      description: Runs recorded.
      type: int
    drills:
      description: Drills among them.
      type: int
    last_successful_drill:
      description: Time of the last successful drill (null when there is none).
      type: str
    last_successful_drill_age_days:
      description: Its age in days.
      type: float
    drill_stale:
      description: Whether there is no successful drill within O(drill_max_age_days).
      type: bool
    drill_status:
      description: The sentence the page shows about it.
      type: str
backups_note:
  description: Where the backups were read from, or why they were not.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail, s3_spec, s3_target


def main():
    module = AnsibleModule(
        argument_spec={
            "jsonl_path": {"type": "path", "required": True},
            "path": {"type": "path", "required": True},
            "s3": {**s3_spec(), "required": False},
            "prefix": {"type": "str", "default": "backups"},
            "source": {"type": "str"},
            "drill_max_age_days": {"type": "int", "default": 90},
        },
        required_by={"s3": "source"},
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import history

    p = module.params
    try:
        result = history.write_history(
            p["path"],
            p["jsonl_path"],
            target=s3_target(p["s3"]) if p["s3"] else None,
            prefix=p["prefix"],
            source=p["source"],
            drill_max_age_days=p["drill_max_age_days"],
            check_mode=module.check_mode,
        )
        if result["written"]:
            result["msg"] = f"wrote {p['path']}"
        elif result["changed"]:
            result["msg"] = f"would write {p['path']}"
        else:
            result["msg"] = f"{p['path']} shows this already"
        module.exit_json(**result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()
