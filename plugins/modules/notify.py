#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: notify
short_description: Report a backup run's outcome or a freshness check's verdict to alert sinks
description:
  - Sends one event (a backup run that starts, succeeds or fails; a freshness check that finds the backups fresh or
    stale) to each configured sink that takes it, and returns one delivery record per sink.
  - Sinks are a Slack-compatible chat V(webhook) (JSON C(text) plus an attachment with the fields; by default on
    V(failed), V(stale) and V(warning), a success that carries warnings), a V(healthchecks) dead-man's switch
    (C(<url>/start), C(<url>) on success or fresh, C(<url>/fail) on failure or stale, with a short log as the body)
    and a V(prometheus_textfile) written atomically as C(<dir>/pgdr_backup_<source>.prom) after each backup run,
    with a failure counter kept across runs.
  - A sink that cannot be reached or is misconfigured never makes this module fail, so it never masks the outcome
    it reports. Its failure is returned in RV(failed_sinks) and RV(deliveries), and printed as a warning; the caller
    decides (the P(pgdr.supabase.backup_notify#role) role fails after the backup's own result is known).
  - Sink URLs carry tokens; they are never logged and are shown only as C(scheme://host/…).
  - C(changed) is always false. An alert is a report about a run, not a change to managed state (like
    C(ansible.builtin.debug)), so a backup playbook that notifies stays idempotent.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  outcome:
    description:
      - V(start), V(success), V(failed) for a backup run; V(fresh), V(stale) for a freshness check.
    type: str
    required: true
    choices: [start, success, failed, fresh, stale]
  source:
    description: Name of the backed-up source, for example V(production).
    type: str
    required: true
  result:
    description:
      - For a backup run, the registered result of M(pgdr.supabase.logical_backup) (backup id, size and duration are
        taken from it), or the error message of a failed run (a string, or the failed task's result whose C(msg) is
        used).
      - It may also carry C(run_warnings) (lines the run found wrong without failing; a success with warnings says
        them, and reaches the webhooks that take V(warning)) and C(failed_steps) (C(step), C(message) each - steps
        that failed after the database backup was committed; the message then says the database backup exists).
      - For V(fresh) and V(stale), the registered result of M(pgdr.supabase.freshness) (its C(checks) are reported).
    type: raw
  environment:
    description: Environment name shown in messages, for example V(production).
    type: str
  run:
    description:
      - What ran, as the messages name it. V(backup) feeds every sink; another run (V(secure copy)) reaches only the
        webhooks, so the backup's dead-man's switch and metrics keep following the backup itself.
    type: str
    default: backup
  sinks:
    description: Where to report. An empty list reports nowhere.
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description: Kind of sink.
        type: str
        required: true
        choices: [webhook, healthchecks, prometheus_textfile]
      name:
        description: Name of the sink in results and warnings. Default its type and position.
        type: str
      url:
        description:
          - Incoming webhook URL (V(webhook)) or the check's ping URL (V(healthchecks)), for example
            V(https://hc-ping.com/<uuid>). A secret (it carries the token); from a vault file. Never logged.
        type: str
      dir:
        description: Folder read by node_exporter's textfile collector (V(prometheus_textfile)). Must exist.
        type: path
      "on":
        description:
          - Events this sink takes (V(start), V(success), V(failed), V(fresh), V(stale), and V(warning) for a
            success that carries warnings). Default V([failed, stale, warning]) for V(webhook), every event for
            V(healthchecks), V([success, failed]) for V(prometheus_textfile) (which only ever takes backup runs).
        type: list
        elements: str
      timeout:
        description: Seconds to wait for one HTTP answer.
        type: int
        default: 10
      retries:
        description: Retries after a network error, 429 or 5xx (never after another 4xx), with a short backoff.
        type: int
        default: 2
attributes:
  check_mode:
    support: full
    details: Sends and writes nothing; RV(deliveries) says what each sink would get (C(action)).
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.freshness
  - module: pgdr.supabase.logical_backup
"""

EXAMPLES = r"""
- name: Report a successful backup
  pgdr.supabase.notify:
    outcome: success
    source: production
    result: "{{ logical_backup_result }}"
    sinks:
      - type: webhook
        url: "{{ vault_alert_webhook_url }}"
      - type: healthchecks
        url: "{{ vault_backup_healthchecks_url }}"
      - type: prometheus_textfile
        dir: /var/lib/prometheus/node-exporter
  register: notified

- name: Report a failed backup with its error message
  pgdr.supabase.notify:
    outcome: failed
    source: production
    result: "{{ ansible_failed_result.msg }}"
    sinks: "{{ pgdr_alert_sinks }}"
"""

RETURN = r"""
event:
  description: The event reported (kind, outcome, source, backup_id, message, duration_s, size_bytes, checks).
  returned: always
  type: dict
deliveries:
  description:
    - One record per sink, in order - sink, type, target (masked URL or file), event, action (what is or would be
      done), delivered, skipped, attempts, status (HTTP), error, and metrics for the textfile.
  returned: always
  type: list
  elements: dict
failed_sinks:
  description: Names of the sinks whose delivery failed (empty when every delivery worked or was skipped).
  returned: always
  type: list
  elements: str
delivery_error:
  description: One line naming each failed sink and why; empty when none failed.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail

SINK_OPTIONS = {
    "type": {"type": "str", "required": True, "choices": ["webhook", "healthchecks", "prometheus_textfile"]},
    "name": {"type": "str"},
    "url": {"type": "str", "no_log": True},
    "dir": {"type": "path"},
    "on": {"type": "list", "elements": "str"},
    "timeout": {"type": "int", "default": 10},
    "retries": {"type": "int", "default": 2},
}


def main():
    module = AnsibleModule(
        argument_spec={
            "outcome": {"type": "str", "required": True, "choices": ["start", "success", "failed", "fresh", "stale"]},
            "source": {"type": "str", "required": True},
            "result": {"type": "raw"},
            "environment": {"type": "str"},
            "run": {"type": "str", "default": "backup"},
            "sinks": {"type": "list", "elements": "dict", "default": [], "options": SINK_OPTIONS},
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import alerts
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import redact

    p = module.params
    secrets = alerts.sink_secrets(p["sinks"])
    try:
        if p["outcome"] in ("fresh", "stale"):
            checks = (p["result"] or {}).get("checks", []) if isinstance(p["result"], dict) else []
            event = alerts.freshness_event(p["source"], checks, environment=p["environment"])
            event["outcome"] = p["outcome"]
        else:
            event = alerts.backup_event(
                p["outcome"], p["source"], p["result"], environment=p["environment"], run=p["run"]
            )
        records = alerts.deliver(p["sinks"], event, check_mode=module.check_mode)
        failed, line = alerts.delivery_summary(records)
        for record in failed:
            module.warn(redact(f"alert sink {record['sink']} ({record['target']}) failed: {record['error']}", secrets))
        verb = "would report" if module.check_mode else "reported"
        sent = [
            r["sink"] for r in records if r["delivered"] or (module.check_mode and r["action"] and not r["skipped"])
        ]
        msg = f"{verb} {p['outcome']} of {p['source']} to {len(sent)} of {len(records)} sinks"
        if failed:
            msg += f"; delivery failed: {line}"
        module.exit_json(
            changed=False,
            event=event,
            deliveries=records,
            failed_sinks=[r["sink"] for r in failed],
            delivery_error=redact(line, secrets),
            msg=redact(msg, secrets),
        )
    except Exception as exc:  # the one error path (bad arguments only: sinks never raise)
        fail(module, exc)


if __name__ == "__main__":
    main()
