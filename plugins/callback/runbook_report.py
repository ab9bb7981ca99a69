# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: runbook_report
type: aggregate
short_description: Per-step timings and a closing verdict for runbook playbooks
description:
  - Times every task and, when the playbook ends, prints each step's duration, the total, and PASSED or FAILED.
  - Then one line per host (with C(ansible_connection=local), each host is a protected database, a project), PASSED
    or FAILED with the task that failed it and the first line of its message; the run is FAILED when one is.
  - With O(report_path) set, also writes the same as JSON, for a scheduler or the drill report to pick up.
requirements:
  - enabled in ansible.cfg (C(callbacks_enabled = runbook_report))
options:
  report_path:
    description: File to write the JSON run report to.
    type: path
    env:
      - name: PGDR_RUN_REPORT
"""

import json
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pgdr.supabase.runbook_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.started = time.time()
        self.steps = []
        self.current = None
        self.playbook = None
        # host -> (task, first line of the message) of its last failure that was not ignored
        self.host_failures = {}

    def _close_step(self):
        if self.current:
            self.current["duration_s"] = round(time.time() - self.current.pop("_t0"), 3)
            self.steps.append(self.current)
            self.current = None

    def v2_playbook_on_start(self, playbook):
        self.playbook = playbook._file_name

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close_step()
        self.current = {"task": task.get_name(), "status": "ok", "_t0": time.time()}

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def _mark(self, status):
        if self.current and self.current["status"] != "failed":
            self.current["status"] = status

    def _host_failed(self, result):
        msg = str(result._result.get("msg") or "").strip().splitlines()
        self.host_failures[result._host.get_name()] = (result._task.get_name(), msg[0][:200] if msg else "")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._mark("ignored" if ignore_errors else "failed")
        if not ignore_errors:
            self._host_failed(result)

    def v2_runner_on_unreachable(self, result):
        self._mark("failed")
        self._host_failed(result)

    def v2_runner_on_ok(self, result):
        if result._result.get("changed"):
            self._mark("changed")
        elif self.current and self.current["status"] == "skipped":
            self.current["status"] = "ok"

    def v2_runner_on_skipped(self, result):
        if self.current and self.current["status"] == "ok":
            self.current["status"] = "skipped"

    def v2_playbook_on_stats(self, stats):
        self._close_step()
        total = round(time.time() - self.started, 3)
        failed = any(stats.failures.values()) or any(stats.dark.values())
        verdict = "FAILED" if failed else "PASSED"
        self._display.banner(f"RUN REPORT: {verdict} in {total} s")
        for step in self.steps:
            self._display.display(f"  {step['duration_s']:9.2f} s  {step['status']:8s} {step['task']}")
        hosts = self._hosts(stats)
        if hosts:
            passed = sum(1 for h in hosts if h["verdict"] == "PASSED")
            self._display.display(f"  hosts: {passed} passed, {len(hosts) - passed} failed")
            width = max(len(h["host"]) for h in hosts)
            for h in hosts:
                line = f"    {h['host']:<{width}}  {h['verdict']}"
                if h["verdict"] == "FAILED" and h["failed_task"]:
                    line += f" at {h['failed_task']!r}" + (f": {h['msg']}" if h["msg"] else "")
                self._display.display(line)
        path = self.get_option("report_path")
        if path:
            report = {
                "playbook": self.playbook,
                "verdict": verdict,
                "duration_s": total,
                "steps": self.steps,
                "hosts": hosts,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(report, fh, indent=2)

    def _hosts(self, stats):
        """Each host of the run, in name order: its verdict, and the task that failed it."""
        found = []
        for host in sorted(stats.processed):
            failed = bool(stats.failures.get(host) or stats.dark.get(host))
            task, msg = self.host_failures.get(host, ("", "")) if failed else ("", "")
            found.append(
                {
                    "host": host,
                    "verdict": "FAILED" if failed else "PASSED",
                    "failed_task": task,
                    "msg": msg,
                    "ok": stats.ok.get(host, 0),
                    "changed": stats.changed.get(host, 0),
                }
            )
        return found
