"""Reporting a run's outcome to the configured sinks: a chat webhook, a dead-man's switch, a Prometheus textfile.

An event is what happened: a backup run that starts, succeeds or fails, or a freshness check that finds every
backup fresh or one of them stale. Each sink gets the events it cares about and answers with a delivery record
(delivered, skipped, or failed with the reason). A sink never raises: an unreachable or misconfigured sink must not
mask the outcome it reports, so the caller reads the records and reports delivery failures on their own.

Sinks (a list of dicts, as the modules take them):

- ``webhook``: Slack-compatible incoming webhook, JSON ``{"text": ..., "attachments": [{"color", "fields"}]}`` by
  POST. Sends the events in ``on`` (default: ``failed``, ``stale`` and ``warning``, a success that carries warnings;
  add ``success`` for a message on every run).
- ``healthchecks``: a dead-man's switch in the healthchecks.io style: ``<url>/start`` when a run starts, ``<url>``
  on success (or fresh), ``<url>/fail`` on failure (or stale), with a short log as the POST body. The service
  alerts by itself when the pings stop coming, which covers the runs that never report at all.
- ``prometheus_textfile``: writes ``<dir>/pgdr_backup_<source>.prom`` atomically for node_exporter's textfile
  collector, after each backup run (``success`` or ``failed``); the folder is made when missing.
  ``pgdr_backup_failures_total`` is a counter kept across runs by reading the previous file; the last success's
  timestamp, duration and size survive failures. A proof run (``run`` ``proof``, playbooks/prove.yml) writes
  ``<dir>/pgdr_proof_<source>.prom`` instead: the newest proven backup's timestamp, the last proof's wall time and
  restore time (the RTO a restore would take today), its verdict and a failure counter.

Every HTTP send has a timeout and a small retry (network errors, 429 and 5xx; never other 4xx). Sink URLs carry
tokens: they are secrets, shown only as ``scheme://host/…``.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.pgdr.supabase.plugins.module_utils import files, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

SINK_TYPES = ("webhook", "healthchecks", "prometheus_textfile")
EVENTS = ("start", "success", "failed", "fresh", "stale")
# What a sink's ``on`` may name: the events, and ``warning`` (a success or fresh verdict that carries warnings).
SUBSCRIPTIONS = (*EVENTS, "warning")
FAILURE_EVENTS = ("failed", "stale")
DEFAULT_WEBHOOK_EVENTS = ("failed", "stale", "warning")
# The run an event reports; only the backup run itself feeds the backup's dead-man's switch and metrics.
BACKUP_RUN = "backup"
DEFAULT_TIMEOUT = 10
DEFAULT_RETRIES = 2
USER_AGENT = "pgdr/0.1.0"
# healthchecks.io keeps the first 100 kB of a ping body; a short log is enough.
PING_BODY_LIMIT = 10_000
TEXTFILE_NAME = "pgdr_backup_{source}.prom"
# The proof run (playbooks/prove.yml): its own textfile, so that a backup and a proof never rewrite one file.
PROOF_RUN = "proof"
PROOF_TEXTFILE_NAME = "pgdr_proof_{source}.prom"
PROOF_METRICS = (
    (
        "pgdr_last_proven_backup_timestamp_seconds",
        "gauge",
        "Unix time the newest backup proven by a restore test was taken.",
    ),
    ("pgdr_last_proof_duration_seconds", "gauge", "Wall time of the last successful proof, in seconds."),
    (
        "pgdr_last_proof_restore_seconds",
        "gauge",
        "Restore time measured by the last successful proof (the RTO of a restore today), in seconds.",
    ),
    ("pgdr_last_proof_timestamp_seconds", "gauge", "Unix time the last proof ended, passed or failed."),
    ("pgdr_last_proof_success", "gauge", "1 if the last proof passed, 0 if it failed."),
    ("pgdr_proof_failures_total", "counter", "Proofs that failed, since the metrics file was first written."),
)

METRICS = (
    ("pgdr_backup_last_success_timestamp_seconds", "gauge", "Unix time the last successful backup finished."),
    ("pgdr_backup_last_duration_seconds", "gauge", "Duration of the last successful backup, in seconds."),
    ("pgdr_backup_last_size_bytes", "gauge", "Stored size of the last successful backup, in bytes."),
    ("pgdr_backup_failures_total", "counter", "Backup runs that failed, since the metrics file was first written."),
    ("pgdr_backup_last_run_timestamp_seconds", "gauge", "Unix time the last backup run ended, successful or not."),
    ("pgdr_backup_last_run_success", "gauge", "1 if the last backup run succeeded, 0 if it failed."),
    ("pgdr_backup_last_run_warnings", "gauge", "Warnings the last backup run reported (0 for a clean run)."),
)
_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)\{source="(?P<source>(?:[^"\\]|\\.)*)"\}\s+(?P<value>\S+)\s*$')


# -- secrets ------------------------------------------------------------------------------------------------------


def mask_url(url):
    """``https://hooks.example.com/…``: the scheme and host (with port) only; path, query and user info hidden."""
    try:
        parts = urllib.parse.urlsplit(str(url or ""))
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not host:
        return "<invalid url>"
    return f"{parts.scheme}://{host}/…"


def url_secrets(url):
    """The secret pieces of a sink URL (the whole URL, its path segments, query and user info) to scrub."""
    if not url:
        return []
    parts = urllib.parse.urlsplit(str(url))
    pieces = [str(url), parts.path, parts.query, parts.username, parts.password]
    pieces += [seg for seg in parts.path.split("/") if len(seg) >= 8]
    return [p for p in pieces if p and p != "/"]


def sink_secrets(sinks):
    found = []
    for sink in sinks or []:
        found += url_secrets(sink.get("url"))
    return found


# -- events -------------------------------------------------------------------------------------------------------


def _iso_to_unix(value):
    if not value:
        return None
    try:
        return timefmt.parse(value).timestamp()
    except ValueError:
        return None


def backup_event(outcome, source, result=None, environment=None, now=None, run=BACKUP_RUN):
    """The event of a backup run from the backup module's result (a dict) or an error message (a string).

    Only the fields needed for a report are taken from the result: never its arguments or anything secret. A result
    dict may also carry ``run_warnings`` (lines: what the run found wrong without failing, such as files missing
    from the Storage backup, config drift, bucket drift) and ``failed_steps`` (``{"step", "message"}`` each: steps
    that failed after the database backup was committed, which the message then says exists).
    """
    if outcome not in ("start", "success", "failed"):
        raise DRError(f"unknown backup outcome {outcome!r}", step="report outcome", hint="use start, success or failed")
    now = time.time() if now is None else now
    event = {
        "kind": "backup",
        "run": run or BACKUP_RUN,
        "outcome": outcome,
        "source": source,
        "environment": environment,
        "at": now,
        "backup_id": None,
        "message": None,
        "duration_s": None,
        "size_bytes": None,
        "finished_at": None,
        "taken_now": None,
        "warnings": [],
        "failed_steps": [],
        "committed": None,
        "proof": None,
    }
    if isinstance(result, dict):
        summary = result.get("summary") or {}
        manifest = result.get("manifest") or {}
        event["backup_id"] = result.get("backup_id") or summary.get("backup_id")
        event["duration_s"] = summary.get("duration_s", manifest.get("duration_s"))
        event["size_bytes"] = summary.get("size")
        event["finished_at"] = _iso_to_unix(summary.get("finished_at") or manifest.get("finished_at"))
        event["taken_now"] = result.get("changed")
        event["warnings"] = [str(w) for w in result.get("run_warnings") or [] if w]
        event["failed_steps"] = [
            {"step": str(f.get("step") or "?"), "message": str(f.get("message") or "failed")}
            for f in result.get("failed_steps") or []
            if isinstance(f, dict)
        ]
        event["committed"] = bool(event["backup_id"]) and bool(summary or manifest)
        if isinstance(result.get("proof"), dict):
            event["proof"] = {
                k: result["proof"].get(k) for k in ("result", "proven_at", "duration_s", "restore_s", "taken_at")
            }
        message = result.get("msg")
        error = result.get("error")
        if outcome == "failed" and isinstance(error, dict) and error.get("message"):
            message = error["message"]
        if outcome == "failed" and event["failed_steps"]:
            message = _after_commit(event)
        event["message"] = str(message) if message else None
    elif result:
        event["message"] = str(result)
    if outcome == "failed" and not event["message"]:
        event["message"] = "the backup failed (no error message was given)"
    return event


def _after_commit(event):
    steps = "; ".join(f"{f['step']}: {f['message']}" for f in event["failed_steps"])
    if event["committed"]:
        return f"the database backup {event['backup_id']} is committed and restorable; failed after it: {steps}"
    return f"failed: {steps}"


def freshness_event(source, checks, environment=None, now=None):
    """The event of a freshness check: ``stale`` when any check is not ok, else ``fresh``."""
    failing = [c for c in checks if not c.get("ok")]
    if failing:
        message = "; ".join(f"{c['name']}: {c.get('details') or 'not fresh'}" for c in failing)
    else:
        message = "; ".join(f"{c['name']}: ok" for c in checks) or "no checks configured"
    return {
        "kind": "freshness",
        "outcome": "stale" if failing else "fresh",
        "source": source,
        "environment": environment,
        "at": time.time() if now is None else now,
        "message": message,
        "checks": [{k: c.get(k) for k in ("name", "ok", "skipped", "age_s", "threshold_s", "details")} for c in checks],
        "failing": [c["name"] for c in failing],
    }


def _human_age(seconds):
    if seconds is None:
        return "never"
    seconds = float(seconds)
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _warned(event):
    return bool(event.get("warnings")) and event["outcome"] in ("success", "fresh")


def headline(event):
    """One line saying what happened, for chat messages and ping bodies."""
    where = f"{event['source']}" + (f" ({event['environment']})" if event.get("environment") else "")
    if event["kind"] == "backup":
        return _backup_headline(event, where)
    if event["outcome"] == "stale":
        return f"pgdr monitor: backups of {where} are STALE: {event.get('message')}"
    return f"pgdr monitor: backups of {where} are fresh"


def _backup_headline(event, where):
    run, outcome = event.get("run") or BACKUP_RUN, event["outcome"]
    if outcome == "start":
        return f"pgdr {run} of {where} started"
    if outcome == "success" and _warned(event):
        count = len(event["warnings"])
        return (
            f"pgdr {run} of {where} succeeded with {count} warning{'s' if count > 1 else ''}: "
            f"{event.get('backup_id') or '?'}: {'; '.join(event['warnings'])}"
        )
    if outcome == "success":
        return f"pgdr {run} of {where} succeeded: {event.get('backup_id') or '?'}"
    if event.get("failed_steps"):
        steps = ", ".join(f["step"] for f in event["failed_steps"])
        return f"pgdr {run} of {where} FAILED at {steps}: {event.get('message')}"
    return f"pgdr {run} of {where} FAILED: {event.get('message')}"


def text_log(event):
    """A short plain-text log of the event (the healthchecks ping body)."""
    lines = [headline(event)]
    if event["kind"] == "backup":
        for key in ("backup_id", "duration_s", "size_bytes", "message"):
            if event.get(key) is not None:
                lines.append(f"{key}: {event[key]}")
        lines += [f"failed step {f['step']}: {f['message']}" for f in event.get("failed_steps") or []]
        lines += [f"warning: {w}" for w in event.get("warnings") or []]
    else:
        for check in event.get("checks", []):
            state = "skipped" if check.get("skipped") else ("ok" if check.get("ok") else "STALE")
            lines.append(
                f"{check['name']}: {state}, age {_human_age(check.get('age_s'))}, "
                f"threshold {_human_age(check.get('threshold_s'))}: {check.get('details')}"
            )
    return "\n".join(lines)[:PING_BODY_LIMIT]


def webhook_payload(event):
    """Slack-compatible JSON: ``text`` plus one attachment with the structured fields."""
    failed = event["outcome"] in FAILURE_EVENTS
    fields = [{"title": "source", "value": str(event["source"]), "short": True}]
    if event.get("environment"):
        fields.append({"title": "environment", "value": str(event["environment"]), "short": True})
    fields.append({"title": "outcome", "value": event["outcome"], "short": True})
    if event["kind"] == "backup":
        for key in ("backup_id", "duration_s", "size_bytes"):
            if event.get(key) is not None:
                fields.append({"title": key, "value": str(event[key]), "short": True})
        if event.get("message"):
            fields.append({"title": "message", "value": event["message"][:1500], "short": False})
        for step in event.get("failed_steps") or []:
            fields.append({"title": f"failed step: {step['step']}", "value": step["message"][:1500], "short": False})
        if event.get("warnings"):
            text = "\n".join(event["warnings"])
            fields.append({"title": "warnings", "value": text[:1500], "short": False})
    else:
        for check in event.get("checks", []):
            state = "skipped" if check.get("skipped") else ("ok" if check.get("ok") else "STALE")
            fields.append(
                {
                    "title": f"{check['name']} ({state})",
                    "value": f"age {_human_age(check.get('age_s'))} / threshold {_human_age(check.get('threshold_s'))}"
                    f": {check.get('details')}"[:1500],
                    "short": False,
                }
            )
    color = "danger" if failed else ("warning" if _warned(event) else "good")
    return {
        "text": headline(event)[:3000],
        "attachments": [{"color": color, "fallback": headline(event)[:300], "fields": fields}],
    }


def healthchecks_url(base, outcome):
    base = str(base).rstrip("/")
    if outcome == "start":
        return base + "/start"
    if outcome in FAILURE_EVENTS:
        return base + "/fail"
    return base


# -- HTTP ---------------------------------------------------------------------------------------------------------


def http_send(url, data, content_type, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES, sleep=time.sleep):
    """POST data to url with a timeout; retry network errors, 429 and 5xx. Returns (status, attempts, error).

    ``error`` is None on a 2xx answer; otherwise a message with the URL masked and its secret pieces scrubbed.
    """
    secrets = url_secrets(url)
    masked = mask_url(url)
    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, 0, f"not an http(s) URL ({masked})"
    attempts = 0
    status = None
    error = None
    for attempt in range(retries + 1):
        attempts = attempt + 1
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url, data=data, method="POST", headers={"Content-Type": content_type, "User-Agent": USER_AGENT}
        )
        retry = False
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                status = response.status
                response.read(1024)
            return status, attempts, None
        except urllib.error.HTTPError as exc:
            status = exc.code
            body = exc.read(300).decode("utf-8", "replace").strip()
            error = f"{masked} answered HTTP {exc.code}" + (f": {body}" if body else "")
            retry = exc.code == 429 or exc.code >= 500
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"cannot reach {masked}: {reason}"
            retry = True
        if not retry or attempt == retries:
            break
        sleep(min(0.5 * 2**attempt, 4.0))
    return status, attempts, redact(error, secrets)


# -- the Prometheus textfile --------------------------------------------------------------------------------------


def textfile_path(directory, source, run=BACKUP_RUN):
    name = PROOF_TEXTFILE_NAME if run == PROOF_RUN else TEXTFILE_NAME
    return os.path.join(directory, name.format(source=re.sub(r"[^A-Za-z0-9_.-]", "_", source)))


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def read_textfile(path, source):
    """The samples of source in an earlier metrics file: {metric name: float}. A missing file reads as empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DRError(f"cannot read the metrics file: {exc}", step="read metrics", subject=path) from None
    values = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match["source"] == _label(source):
            try:
                values[match["name"]] = float(match["value"])
            except ValueError:
                continue
    return values


def _number(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(round(value, 3))


def metrics_for(event, previous):
    """The metric values after this run, from the previous file's values and the event."""
    values = dict(previous)
    success = event["outcome"] == "success"
    values.setdefault("pgdr_backup_failures_total", 0.0)
    if success:
        values["pgdr_backup_last_success_timestamp_seconds"] = event.get("finished_at") or event["at"]
        if event.get("duration_s") is not None:
            values["pgdr_backup_last_duration_seconds"] = float(event["duration_s"])
        if event.get("size_bytes") is not None:
            values["pgdr_backup_last_size_bytes"] = float(event["size_bytes"])
    else:
        values["pgdr_backup_failures_total"] += 1
    values["pgdr_backup_last_run_timestamp_seconds"] = event["at"]
    values["pgdr_backup_last_run_success"] = 1.0 if success else 0.0
    values["pgdr_backup_last_run_warnings"] = float(len(event.get("warnings") or []))
    return values


def proof_metrics_for(event, previous):
    """The proof textfile's values after this proof, from the previous file's values and the event."""
    values = dict(previous)
    proof = event.get("proof") or {}
    success = event["outcome"] == "success"
    values.setdefault("pgdr_proof_failures_total", 0.0)
    if success:
        taken = _iso_to_unix(proof.get("taken_at"))
        if taken is not None:
            values["pgdr_last_proven_backup_timestamp_seconds"] = max(
                taken, values.get("pgdr_last_proven_backup_timestamp_seconds", 0.0)
            )
        for metric, key in (
            ("pgdr_last_proof_duration_seconds", "duration_s"),
            ("pgdr_last_proof_restore_seconds", "restore_s"),
        ):
            if proof.get(key) is not None:
                values[metric] = float(proof[key])
    else:
        values["pgdr_proof_failures_total"] += 1
    values["pgdr_last_proof_timestamp_seconds"] = event["at"]
    values["pgdr_last_proof_success"] = 1.0 if success else 0.0
    return values


def render_textfile(source, values, metrics=METRICS):
    """The exposition text: # HELP and # TYPE for each metric with a value, one sample each."""
    lines = []
    for name, kind, help_text in metrics:
        if name not in values:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines.append(f'{name}{{source="{_label(source)}"}} {_number(values[name])}')
    return "\n".join(lines) + "\n"


# -- the sinks ----------------------------------------------------------------------------------------------------


def check_sink(sink):
    """Raise a DRError for a sink that cannot work as configured (named, secrets masked)."""
    kind = sink.get("type")
    label = sink.get("name") or kind
    if kind not in SINK_TYPES:
        raise DRError(f"unknown sink type {kind!r}", step="check sinks", subject=label, hint=", ".join(SINK_TYPES))
    if kind in ("webhook", "healthchecks"):
        url = sink.get("url")
        parts = urllib.parse.urlsplit(str(url or ""))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DRError(
                f"sink {label} needs an http(s) url",
                step="check sinks",
                subject=mask_url(url) if url else "no url",
                hint="set its url (from the vault)",
            )
    if kind == "prometheus_textfile" and not sink.get("dir"):
        raise DRError(
            f"sink {label} needs dir",
            step="check sinks",
            hint="the node_exporter textfile collector's folder",
        )
    for outcome in sink.get("on") or []:
        if outcome not in SUBSCRIPTIONS:
            raise DRError(
                f"sink {label}: unknown event {outcome!r} in 'on'", step="check sinks", hint=", ".join(SUBSCRIPTIONS)
            )


def _wants(sink, event):
    kind = sink["type"]
    outcome = event["outcome"]
    run = event.get("run") or BACKUP_RUN
    other_run = event["kind"] == "backup" and run != BACKUP_RUN
    if kind == "webhook":
        on = sink.get("on") or DEFAULT_WEBHOOK_EVENTS
        return outcome in on or ("warning" in on and _warned(event))
    if kind == "prometheus_textfile" and run == PROOF_RUN:
        return event["kind"] == "backup" and outcome in (sink.get("on") or ("success", "failed"))  # its own file
    if other_run:
        return False  # the dead-man's switch and the metrics follow the backup run itself, not a secure copy
    if kind == "healthchecks":
        return outcome in (sink.get("on") or EVENTS)
    # The textfile describes backup runs; freshness is read from it by Prometheus itself.
    return event["kind"] == "backup" and outcome in (sink.get("on") or ("success", "failed"))


def describe_sink(sink):
    kind = sink.get("type")
    if kind == "prometheus_textfile":
        return sink.get("dir") or "?"
    return mask_url(sink.get("url"))


def deliver(sinks, event, check_mode=False, sleep=time.sleep):
    """Send event to every sink that wants it. Returns one record per sink; never raises for a sink's failure.

    A record: ``sink`` (name), ``type``, ``target`` (masked), ``event``, ``action`` (what is or would be done),
    ``delivered``, ``skipped``, ``attempts``, ``status``, ``error``. In check mode nothing is sent or written.
    """
    records = []
    for index, given in enumerate(sinks or []):
        sink = dict(given)
        record = {
            "sink": sink.get("name") or f"{sink.get('type')}[{index}]",
            "type": sink.get("type"),
            "target": describe_sink(sink),
            "event": event["outcome"],
            "action": None,
            "delivered": False,
            "skipped": False,
            "attempts": 0,
            "status": None,
            "error": None,
        }
        records.append(record)
        try:
            check_sink(sink)
        except DRError as exc:
            record["error"] = redact(str(exc), url_secrets(sink.get("url")))
            continue
        if not _wants(sink, event):
            record["skipped"] = True
            record["action"] = f"nothing: {sink['type']} does not take {event['outcome']} events"
            continue
        timeout = sink.get("timeout") or DEFAULT_TIMEOUT
        retries = DEFAULT_RETRIES if sink.get("retries") is None else sink["retries"]
        try:
            if sink["type"] == "webhook":
                record["action"] = f"POST a chat message to {record['target']}: {headline(event)[:200]}"
                data = json.dumps(webhook_payload(event)).encode()
                if not check_mode:
                    status, attempts, error = http_send(
                        sink["url"], data, "application/json", timeout=timeout, retries=retries, sleep=sleep
                    )
                    record.update(status=status, attempts=attempts, error=error, delivered=error is None)
            elif sink["type"] == "healthchecks":
                url = healthchecks_url(sink["url"], event["outcome"])
                suffix = url[len(str(sink["url"]).rstrip("/")) :]
                record["action"] = f"ping {record['target']} {suffix or '(success)'}"
                if not check_mode:
                    status, attempts, error = http_send(
                        url,
                        text_log(event).encode(),
                        "text/plain; charset=utf-8",
                        timeout=timeout,
                        retries=retries,
                        sleep=sleep,
                    )
                    record.update(status=status, attempts=attempts, error=error, delivered=error is None)
            else:
                proof_run = (event.get("run") or BACKUP_RUN) == PROOF_RUN
                path = textfile_path(sink["dir"], event["source"], event.get("run") or BACKUP_RUN)
                previous = read_textfile(path, event["source"])
                values = proof_metrics_for(event, previous) if proof_run else metrics_for(event, previous)
                text = render_textfile(event["source"], values, PROOF_METRICS if proof_run else METRICS)
                record["target"] = path
                record["action"] = f"write {path}"
                record["metrics"] = values
                if not check_mode:
                    try:
                        os.makedirs(sink["dir"], mode=0o755, exist_ok=True)
                        files.write_atomic(path, text, 0o644, fsync=True)
                    except OSError as exc:
                        raise DRError(
                            f"cannot write the metrics file: {exc}",
                            step="write metrics",
                            subject=path,
                            hint="make dir a writable folder (the node_exporter textfile collector's)",
                        ) from None
                    record.update(delivered=True, attempts=1)
        except DRError as exc:
            record["error"] = str(exc)
        except Exception as exc:  # a sink never masks the outcome it reports
            record["error"] = redact(f"{type(exc).__name__}: {exc}", url_secrets(sink.get("url")))
    return records


def delivery_summary(records):
    """(failed records, one line naming each failed sink and why)."""
    failed = [r for r in records if r["error"]]
    line = "; ".join(f"{r['sink']} ({r['target']}): {r['error']}" for r in failed)
    return failed, line
