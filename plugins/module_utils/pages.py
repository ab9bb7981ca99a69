"""The HTML pages of the record: one run's report, and the history of every restore and drill.

Both are single self-contained files: inline CSS and inline SVG only, no script, no external font, image or
style sheet, and a Content-Security-Policy that forbids loading anything, so they open the same from an
air-gapped laptop or as a ticket attachment. Every value shown goes through :func:`render.html`: operator
text (reason, initiator, errors) cannot add markup. The events are the record's own (secrets masked when
they were built); the pages add nothing but layout.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import urllib.parse

from ansible_collections.pgdr.supabase.plugins.module_utils import render, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.render import html as h
from ansible_collections.pgdr.supabase.plugins.module_utils.timefmt import parse_or_none as parse_time

DRILL_MAX_AGE_DAYS = 90
CHART_MAX_BARS = 40
BACKUP_CHART_DAYS = 90
LIST_LIMIT = 200
KIND_TITLES = {
    "restore": "Restore",
    "drill": "Drill",
    "promote": "Promote",
    "rollback": "Rollback",
    "pitr_restore": "PITR restore",
    "supabase_pitr_restore": "Supabase PITR restore",
}

CSS = """
:root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
  color: #1f2328; margin: 0 auto; max-width: 1100px; padding: 24px; line-height: 1.45; }
h1 { font-size: 1.7em; margin: 0 0 4px; } h2 { font-size: 1.25em; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; margin-top: 28px; } h3 { font-size: 1.05em; margin: 16px 0 6px; }
.verdict { border-radius: 8px; padding: 14px 18px; color: #fff; }
.verdict.pass { background: var(--ok); } .verdict.fail { background: var(--bad); }
.verdict p { margin: 2px 0 0; }
.banner { border-radius: 6px; padding: 10px 14px; margin: 16px 0; border: 1px solid; font-weight: 600; }
.banner.ok { border-color: var(--ok); color: var(--ok); background: #dafbe1; }
.banner.stale { border-color: var(--bad); color: var(--bad); background: #ffebe9; }
.banner.warn { border-color: var(--warn); color: var(--warn); background: #fff8c5; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 0.92em; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); }
table.kv th { width: 22%; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em;
  overflow-wrap: anywhere; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 0.85em; font-weight: 700;
  color: #fff; white-space: nowrap; }
.badge.pass { background: var(--ok); } .badge.fail { background: var(--bad); }
.badge.none { background: var(--muted); }
.muted { color: var(--muted); }
details { border: 1px solid var(--line); border-radius: 6px; padding: 4px 10px; margin: 6px 0; }
details.fail { border-color: var(--bad); }
summary { cursor: pointer; font-weight: 600; }
ul.diff li { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em;
  overflow-wrap: anywhere; }
svg { display: block; max-width: 100%; height: auto; margin: 6px 0 12px; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
  font-size: 12px; fill: #1f2328; }
svg .axis { stroke: var(--line); stroke-width: 1; } svg .tick { fill: var(--muted); font-size: 11px; }
svg .bar { fill: #0969da; } svg .bar.ok { fill: #2da44e; } svg .bar.bad { fill: var(--bad); }
svg .target { stroke: var(--bad); stroke-width: 1.5; stroke-dasharray: 6 4; }
svg .target-label { fill: var(--bad); font-size: 11px; } svg .missing { fill: var(--bad); font-size: 11px; }
footer { margin-top: 32px; color: var(--muted); font-size: 0.85em; border-top: 1px solid var(--line);
  padding-top: 8px; }
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'"


def page(title, body, generated_at):
    """A whole HTML document around body (already HTML): inline style, nothing loaded from anywhere."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="pgdr">\n<title>{h(title)}</title>\n<style>{CSS}</style>\n'
        f"</head>\n<body>\n{body}\n<footer>Written by pgdr at {h(render.timestamp(generated_at))}. "
        "Self-contained: inline styles and drawings only, nothing is loaded from anywhere.</footer>\n"
        "</body>\n</html>\n"
    )


def kind_title(kind):
    return KIND_TITLES.get(kind, render.text(kind).replace("_", " ").capitalize() or "Run")


def verdict(event):
    return "PASSED" if event.get("outcome") == "success" else "FAILED"


def badge(ok, yes="PASS", no="FAIL", unknown="n/a"):
    if ok is None:
        return f'<span class="badge none">{h(unknown)}</span>'
    return f'<span class="badge pass">{h(yes)}</span>' if ok else f'<span class="badge fail">{h(no)}</span>'


def _changed_text(changed):
    if changed is None:
        return "unknown"
    return "yes" if changed else "nothing: everything was in place already (a rerun)"


# ---------------------------------------------------------------------------------------------- values as HTML


def _is_scalar(value):
    return value is None or isinstance(value, (str, int, float, bool))


def _scalar(value):
    if value is None:
        return '<span class="muted">none</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f'<span class="text">{h(value)}</span>'


def _json_block(value):
    return f'<pre class="mono text">{h(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>'


def _list_html(items, css=""):
    shown = items[:LIST_LIMIT]
    rows = "".join(f"<li>{_scalar(item)}</li>" for item in shown)
    more = f"<li class='muted'>... and {len(items) - LIST_LIMIT} more</li>" if len(items) > LIST_LIMIT else ""
    return f'<ul class="{css}">{rows}{more}</ul>' if css else f"<ul>{rows}{more}</ul>"


def _rows_table(rows):
    """A list of dicts as one table, a column per key (in first-seen order)."""
    columns = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    head = "".join(f"<th>{h(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{value_html(row.get(c), depth=2)}</td>" for c in columns) + "</tr>"
        for row in rows[:LIST_LIMIT]
    )
    more = (
        f"<tr><td colspan='{len(columns)}' class='muted'>... and {len(rows) - LIST_LIMIT} more</td></tr>"
        if len(rows) > LIST_LIMIT
        else ""
    )
    return f"<table><tr>{head}</tr>{body}{more}</table>"


NONE_HTML = '<span class="muted">none</span>'


def _sequence_html(items, depth):
    if all(_is_scalar(i) for i in items):
        return _list_html(items)
    if all(isinstance(i, dict) for i in items) and len({k for i in items for k in i}) <= 8:
        return _rows_table(items)
    return "<ol>" + "".join(f"<li>{value_html(i, depth + 1)}</li>" for i in items[:LIST_LIMIT]) + "</ol>"


def value_html(value, depth=0):
    """Any JSON value, readable: scalars as text, lists as lists, dicts as key/value tables, lists of dicts as a
    table; anything deeper than a few levels as indented JSON."""
    if _is_scalar(value):
        return _scalar(value)
    if not value:
        return NONE_HTML
    if depth > 3:
        return _json_block(value)
    if isinstance(value, dict):
        return kv_table(value, depth + 1)
    if isinstance(value, (list, tuple)):
        return _sequence_html(list(value), depth)
    return _scalar(str(value))


def kv_table(mapping, depth=0):
    rows = "".join(f"<tr><th>{h(k)}</th><td>{value_html(v, depth)}</td></tr>" for k, v in mapping.items())
    return f'<table class="kv">{rows}</table>'


# ------------------------------------------------------------------------------------------------------ charts


def _nice(raw):
    """The smallest 1, 2 or 5 times a power of ten that is at least raw."""
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude  # pragma: no cover


def axis(top, unit):
    """(axis maximum, [(value, label)]) with about five round ticks, in seconds or bytes."""
    top = max(float(top or 0), 1e-9)
    if unit == "bytes":
        scales = [(1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB"), (1, "B")]
    else:
        scales = [(3600, "h"), (60, "min"), (1, "s")]
    # Bytes in the largest unit the top reaches; time in minutes or hours only from two of them (90 s, not 1.5 min).
    div, name = next(((d, n) for d, n in scales if top >= (d if unit == "bytes" else 2 * d)), scales[-1])
    step = _nice(top / div / 5) * div
    count = max(1, math.ceil(top / step - 1e-9))
    ticks = [(i * step, f"{i * step / div:g} {name}") for i in range(count + 1)]
    return count * step, ticks


def fmt(value, unit):
    return render.size(value) if unit == "bytes" else render.duration(value)


def hbars(rows, unit, reference=None, width=760, label_width=190):
    """Horizontal bars on one scale: rows of (label, value, css class, tooltip). reference (label, value) adds
    a dashed line (a target) to the same scale."""
    values = [r[1] for r in rows if r[1] is not None]
    if reference:
        values.append(reference[1])
    top, ticks = axis(max(values or [1]), unit)
    row_h, pad_top = 24, 8
    plot_w = width - label_width - 110
    height = pad_top + row_h * len(rows) + 26
    x0 = label_width

    def x(value):
        return x0 + plot_w * (value / top if top else 0)

    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    base = pad_top + row_h * len(rows)
    for value, label in ticks:
        out.append(f'<line class="axis" x1="{x(value):.1f}" y1="{pad_top - 4}" x2="{x(value):.1f}" y2="{base}"/>')
        out.append(f'<text class="tick" x="{x(value):.1f}" y="{base + 16}" text-anchor="middle">{h(label)}</text>')
    for i, (label, value, css, tip) in enumerate(rows):
        y = pad_top + i * row_h
        out.append(f'<text x="{x0 - 8}" y="{y + 16}" text-anchor="end">{h(label)}</text>')
        if value is None:
            out.append(f'<text class="missing" x="{x0 + 4}" y="{y + 16}">not measured</text>')
            continue
        bar_w = max(plot_w * value / top, 1.5) if top else 1.5
        out.append(
            f'<rect class="bar {css}" x="{x0}" y="{y + 4}" width="{bar_w:.1f}" height="{row_h - 8}">'
            f"<title>{h(tip)}</title></rect>"
        )
        out.append(f'<text x="{x0 + bar_w + 6:.1f}" y="{y + 16}">{h(fmt(value, unit))}</text>')
    if reference:
        rx = x(reference[1])
        out.append(f'<line class="target" x1="{rx:.1f}" y1="{pad_top - 6}" x2="{rx:.1f}" y2="{base}"/>')
        out.append(
            f'<text class="target-label" x="{min(rx, width - 4):.1f}" y="{pad_top + 2}" text-anchor="end">'
            f"{h(reference[0])}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def vbars(columns, unit, target=None, target_label="", width=1000, height=230):
    """Vertical bars on one scale: columns of dicts with label, value (None for a gap), css, tip and note (the
    text shown instead of a bar when value is None). target draws a dashed line at that value."""
    values = [c["value"] for c in columns if c.get("value") is not None]
    if target is not None:
        values.append(target)
    top, ticks = axis(max(values or [1]), unit)
    left, right, pad_top, bottom = 70, 16, 18, 46
    plot_w, plot_h = width - left - right, height - pad_top - bottom
    slot = plot_w / max(len(columns), 1)
    bar_w = max(min(slot * 0.7, 48), 2)
    label_every = max(1, math.ceil(len(columns) / 16))

    def y(value):
        return pad_top + plot_h * (1 - (value / top if top else 0))

    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for value, label in ticks:
        out.append(f'<line class="axis" x1="{left}" y1="{y(value):.1f}" x2="{width - right}" y2="{y(value):.1f}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{h(label)}</text>')
    base = pad_top + plot_h
    for i, col in enumerate(columns):
        cx = left + slot * i + slot / 2
        if i % label_every == 0 or i == len(columns) - 1:
            out.append(f'<text class="tick" x="{cx:.1f}" y="{base + 16}" text-anchor="middle">{h(col["label"])}</text>')
        value = col.get("value")
        if value is None:
            out.append(
                f'<text class="missing" x="{cx:.1f}" y="{base - 4}" text-anchor="middle">{h(col.get("note", "x"))}'
                f"<title>{h(col.get('tip', ''))}</title></text>"
            )
            continue
        top_y = min(y(value), base - 1.5)
        out.append(
            f'<rect class="bar {col.get("css", "")}" x="{cx - bar_w / 2:.1f}" y="{top_y:.1f}" width="{bar_w:.1f}" '
            f'height="{base - top_y:.1f}"><title>{h(col.get("tip", ""))}</title></rect>'
        )
        if len(columns) <= 24:
            out.append(
                f'<text class="tick" x="{cx:.1f}" y="{top_y - 4:.1f}" text-anchor="middle">{h(fmt(value, unit))}</text>'
            )
    if target is not None:
        ty = y(target)
        out.append(f'<line class="target" x1="{left}" y1="{ty:.1f}" x2="{width - right}" y2="{ty:.1f}"/>')
        out.append(
            f'<text class="target-label" x="{width - right}" y="{ty - 4:.1f}" text-anchor="end">'
            f"{h(target_label)}</text>"
        )
    out.append(f'<line class="axis" x1="{left}" y1="{base}" x2="{width - right}" y2="{base}"/>')
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------------- run page


def _objective(event, name):
    value, target, met = event.get(f"{name}_s"), event.get(f"{name}_target_s"), event.get(f"{name}_met")
    word = "" if met is None else (" (met)" if met else " (MISSED)")
    return f"{render.duration(value)}{word}, target {render.duration(target)}"


def _backup_text(backup):
    if not backup or not backup.get("id"):
        return "none (the run did not get as far as choosing one)"
    text = f"{backup['id']} of {backup.get('source') or 'unknown source'}"
    return text + (f", taken {render.timestamp(backup['taken_at'])}" if backup.get("taken_at") else "")


def _point_in_time(event):
    from ansible_collections.pgdr.supabase.plugins.module_utils import audit

    return audit.point_in_time_text(event)


def _not_checked_rows(event):
    return [("Not checked", _scalar(item)) for item in (event.get("details") or {}).get("not_checked") or []]


def _summary_section(event):
    details = event.get("details") or {}
    rows = [
        ("Verdict", badge(event.get("outcome") == "success", "PASSED", "FAILED")),
        ("When", h(render.timestamp(event.get("time")))),
        ("Initiator", _scalar(event.get("initiator"))),
        ("Reason", _scalar(event.get("reason") or "(none given)")),
        ("Backup", h(_backup_text(event.get("backup") or {}))),
        ("Target", _scalar(event.get("target") or "none (not reached)")),
        ("Changed", h(_changed_text(event.get("changed")))),
        ("RTO", h(_objective(event, "rto"))),
        ("RPO", h(_objective(event, "rpo"))),
        ("Checks", h(f"{event.get('checks_passed', 0)} passed, {event.get('checks_failed', 0)} failed")),
    ]
    if details.get("error"):
        rows.insert(1, ("Error", f'<span class="text">{h(details["error"])}</span>'))
    point = _point_in_time(event)
    if point:
        rows.insert(7 if details.get("error") else 6, ("Point in time", _scalar(point)))
    rows += _not_checked_rows(event)
    for note in event.get("notes") or []:
        rows.append(("Note", _scalar(note)))
    rows.append(("Event key", f"<code>{h(event.get('key'))}</code>"))
    body = "".join(f"<tr><th>{h(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section id="summary"><h2>Summary</h2><table class="kv">{body}</table></section>'


def _objectives_section(event):
    rows = []
    for name in ("rto", "rpo"):
        value, target, met = event.get(f"{name}_s"), event.get(f"{name}_target_s"), event.get(f"{name}_met")
        css = "" if met is None else ("ok" if met else "bad")
        rows.append(
            (name.upper(), value, css, f"{name.upper()} {render.duration(value)}, target {render.duration(target)}")
        )
    charts = []
    for (label, value, css, tip), name in zip(rows, ("rto", "rpo"), strict=True):
        target = event.get(f"{name}_target_s")
        reference = (f"target {render.duration(target)}", target) if target else None
        charts.append(hbars([(label, value, css, tip)], "seconds", reference=reference, label_width=60))
    return (
        '<section id="objectives"><h2>Recovery objectives</h2>'
        '<p class="muted">RTO: from the start of the run to the verified restore. RPO: how much data the restored '
        "copy can lack (the backup's age at the point aimed at). Each against its target (dashed line).</p>"
        + "".join(charts)
        + "</section>"
    )


def _timeline_section(event):
    durations = event.get("durations_s") or {}
    steps = [(str(k), float(v)) for k, v in durations.items() if isinstance(v, (int, float))]
    if not steps:
        return (
            '<section id="timeline"><h2>Step timeline</h2><p class="muted">No step durations were recorded '
            "(the run stopped before its steps, or this kind of run does not time them).</p></section>"
        )
    total = sum(v for _unused, v in steps)
    rows = [(name, value, "", f"{name}: {value:.3f} s") for name, value in steps]
    return (
        '<section id="timeline"><h2>Step timeline</h2>'
        f'<p class="muted">{h(render.count(len(steps), "step"))}, {h(render.duration(total))} in all; '
        "one bar per step in the order they ran, all on the same scale.</p>" + hbars(rows, "seconds") + "</section>"
    )


def _check_details(check):
    details = check.get("details")
    if details in (None, "", {}, []):
        return '<p class="muted">No details.</p>'
    if isinstance(details, dict) and isinstance(details.get("differences"), list):
        differences = details["differences"]
        if all(isinstance(d, str) for d in differences):
            rest = {k: v for k, v in details.items() if k != "differences"}
            head = f"<h3>Differences ({len(differences)})</h3>" if differences else "<p>No differences.</p>"
            out = head + (_list_html(differences, "diff") if differences else "")
            return out + (f"<h3>Other details</h3>{kv_table(rest)}" if rest else "")
    if isinstance(details, dict):
        return kv_table(details)
    return value_html(details)


def _checks_section(event):
    checks = event.get("checks") or []
    if not checks:
        return (
            '<section id="checks"><h2>Checks</h2><p class="muted">No check ran (the run stopped before the '
            "verification, or this kind of run has none).</p></section>"
        )
    rows = "".join(
        f"<tr><td>{badge(c.get('ok'))}</td><td>{h(c.get('name'))}</td><td class='text'>{h(c.get('summary'))}</td>"
        f"<td class='num'>{h(render.duration(c.get('duration_s')) if c.get('duration_s') is not None else '')}</td>"
        "</tr>"
        for c in checks
    )
    blocks = "".join(
        f'<details{" open" if not c.get("ok") else ""} class="{"pass" if c.get("ok") else "fail"}">'
        f"<summary>{h(c.get('name'))}: {'passed' if c.get('ok') else 'FAILED'}</summary>{_check_details(c)}</details>"
        for c in checks
    )
    failed = event.get("checks_failed", 0)
    return (
        '<section id="checks"><h2>Checks</h2>'
        f"<p>{h(event.get('checks_passed', 0))} passed, {h(failed)} failed"
        f"{'; the failed ones are opened below' if failed else ''}.</p>"
        f"<table><tr><th>Result</th><th>Check</th><th>Summary</th><th>Time</th></tr>{rows}</table>"
        f"<h3>Details of each check</h3>{blocks}</section>"
    )


def _disarmed_section(event):
    disarmed = (event.get("details") or {}).get("disarmed")
    if disarmed is None:
        body = (
            '<p class="muted">Not reported: this run did not say what it disarmed in staging (cron jobs, '
            "webhooks). Check the restored database before anything runs against it.</p>"
        )
    elif not disarmed:
        body = "<p>Nothing needed disarming.</p>"
    else:
        body = value_html(disarmed)
    return f'<section id="disarmed"><h2>Disarmed in staging</h2>{body}</section>'


def _objects_section(event):
    objects = (event.get("backup") or {}).get("objects") or []
    if not objects:
        return (
            '<section id="backup"><h2>Backup objects</h2><p class="muted">No objects recorded (no logical backup '
            "was chosen, or the restore method does not list them).</p></section>"
        )
    rows = []
    for o in objects:
        plain = o.get("plain_size")
        rows.append(
            f"<tr><td>{h(o.get('name'))}</td>"
            f"<td class='num' title='{h(o.get('size'))} bytes'>{h(render.size(o.get('size')))}</td>"
            f"<td class='num'>{h(render.size(plain) if plain is not None else '')}</td>"
            f"<td><code>{h(o.get('sha256'))}</code></td><td><code>{h(o.get('key', ''))}</code></td></tr>"
        )
    total = sum(o.get("size") or 0 for o in objects)
    return (
        '<section id="backup"><h2>Backup objects</h2>'
        f"<p>{h(render.count(len(objects), 'object'))}, {h(render.size(total))} stored; "
        "each verified against its SHA-256 before the restore.</p>"
        "<table><tr><th>Object</th><th>Stored size</th><th>Plain size</th><th>SHA-256 (stored)</th>"
        f"<th>Key</th></tr>{''.join(rows)}</table></section>"
    )


def _other_details_section(event):
    rest = {k: v for k, v in (event.get("details") or {}).items() if k not in ("error", "disarmed")}
    if not rest:
        return ""
    return f'<section id="details"><h2>Other details</h2>{kv_table(rest)}</section>'


def run_page(event, generated_at=None):
    """One run's report as a self-contained HTML page."""
    title = f"{kind_title(event.get('kind'))} {verdict(event)}"
    ok = event.get("outcome") == "success"
    header = (
        f'<header class="verdict {"pass" if ok else "fail"}"><h1>{h(title)}</h1>'
        f"<p>{h(render.timestamp(event.get('time')))} by {h(render.one_line(event.get('initiator') or 'unknown'))}"
        f" &middot; RTO {h(render.duration(event.get('rto_s')))} &middot; RPO {h(render.duration(event.get('rpo_s')))}"
        "</p></header>"
    )
    body = (
        header
        + _summary_section(event)
        + _objectives_section(event)
        + _timeline_section(event)
        + _checks_section(event)
        + _disarmed_section(event)
        + _objects_section(event)
        + _other_details_section(event)
    )
    return page(f"{title}: {render.timestamp(event.get('time'))}", body, generated_at or event.get("time"))


# ------------------------------------------------------------------------------------------------ history page


def drill_status(events, now, max_age_days=DRILL_MAX_AGE_DAYS):
    """The last successful drill and whether it is older than max_age_days: {last, age_days, stale, message}."""
    drills = [
        e for e in events if e.get("kind") == "drill" and e.get("outcome") == "success" and parse_time(e.get("time"))
    ]
    if not drills:
        return {
            "last": None,
            "age_days": None,
            "stale": True,
            "message": "No successful drill is on record: run playbooks/drill.yml, the quarterly restore drill.",
        }
    last = max(drills, key=lambda e: parse_time(e["time"]))
    age = (now - parse_time(last["time"])).total_seconds() / 86400
    when = render.timestamp(last["time"])
    ago = "less than a day ago" if age < 1 else f"{render.count(int(age), 'day')} ago"
    if age > max_age_days:
        message = (
            f"The last successful drill was {ago} ({when}): older than {max_age_days} days "
            "(a quarter). Run playbooks/drill.yml."
        )
    else:
        message = f"The last successful drill was {ago} ({when}), within {max_age_days} days."
    return {"last": last.get("time"), "age_days": round(age, 1), "stale": age > max_age_days, "message": message}


def _objective_chart(drills, name):
    drills = drills[-CHART_MAX_BARS:]
    columns = []
    for e in drills:
        value, met = e.get(f"{name}_s"), e.get(f"{name}_met")
        failed = e.get("outcome") != "success"
        css = "bad" if failed or met is False else "ok"
        when = render.timestamp(e.get("time"))
        columns.append(
            {
                "label": (e.get("time") or "")[:10],
                "value": value,
                "css": css,
                "note": "failed" if failed else "n/a",
                "tip": f"{when}: {name.upper()} {render.duration(value)}{' (drill FAILED)' if failed else ''}",
            }
        )
    targets = [e.get(f"{name}_target_s") for e in drills if e.get(f"{name}_target_s")]
    target = targets[-1] if targets else None
    label = f"target {render.duration(target)}" if target else ""
    return vbars(columns, "seconds", target=target, target_label=label)


def _by_day(backups, days=BACKUP_CHART_DAYS):
    """The newest complete backup of each day (UTC), over the days from the first to the last one shown."""
    complete = [b for b in backups if b.get("complete") and parse_time(b.get("started_at"))]
    if not complete:
        return []
    per_day = {}
    for b in complete:
        day = parse_time(b["started_at"]).date()
        per_day.setdefault(day, []).append(b)
    last = max(per_day)
    first = max(min(per_day), last - dt.timedelta(days=days - 1))
    out = []
    day = first
    while day <= last:
        found = sorted(per_day.get(day, []), key=lambda b: b["backup_id"])
        out.append((day, found[-1] if found else None, len(found)))
        day += dt.timedelta(days=1)
    return out


def _backup_charts(by_day):
    sizes, durations = [], []
    for day, backup, count in by_day:
        label = day.strftime("%m-%d")
        if backup is None:
            gap = {"label": label, "value": None, "note": "x", "tip": f"{day}: no complete backup"}
            sizes.append(gap)
            durations.append(gap)
            continue
        more = f" ({count} that day, the newest shown)" if count > 1 else ""
        sizes.append(
            {
                "label": label,
                "value": backup.get("size"),
                "css": "",
                "tip": f"{backup['backup_id']}: {render.size(backup.get('size'))}{more}",
            }
        )
        durations.append(
            {
                "label": label,
                "value": backup.get("duration_s"),
                "css": "",
                "tip": f"{backup['backup_id']}: {render.duration(backup.get('duration_s'))}{more}",
            }
        )
    return (
        "<h3>Backup size per day</h3>"
        + vbars(sizes, "bytes")
        + "<h3>Backup duration per day</h3>"
        + vbars(durations, "seconds")
    )


def _backups_section(backups, backups_note):
    intro = f'<p class="muted">{h(backups_note)}</p>' if backups_note else ""
    if backups is None:
        return f'<section id="backups"><h2>Backups</h2>{intro}</section>'
    by_day = _by_day(backups)
    complete = [b for b in backups if b.get("complete")]
    incomplete = len(backups) - len(complete)
    summary = f"<p>{render.count(len(complete), 'complete backup')}" + (
        f", {incomplete} incomplete (never restored)" if incomplete else ""
    )
    summary += "; a red x marks a day without a complete backup.</p>" if by_day else ".</p>"
    charts = _backup_charts(by_day) if by_day else '<p class="muted">No complete backup to chart.</p>'
    rows = "".join(
        f"<tr><td><code>{h(b.get('backup_id'))}</code></td>"
        f"<td>{badge(b.get('complete'), 'complete', 'INCOMPLETE')}</td>"
        f"<td>{h(render.timestamp(b.get('started_at')))}</td>"
        f"<td class='num'>{h(render.size(b.get('size')))}</td>"
        f"<td class='num'>{h(render.duration(b.get('duration_s')))}</td><td class='num'>{h(b.get('objects'))}</td></tr>"
        for b in backups[:LIST_LIMIT]
    )
    table = (
        "<details><summary>Every backup listed</summary><table><tr><th>Backup</th><th>State</th><th>Taken</th>"
        f"<th>Size</th><th>Duration</th><th>Objects</th></tr>{rows}</table></details>"
        if backups
        else ""
    )
    return f'<section id="backups"><h2>Backups</h2>{intro}{summary}{charts}{table}</section>'


def _report_link(event, link_dir):
    """A relative link to the run's own page (both files travel together), or 'none'."""
    html_path = render.text((event.get("report") or {}).get("html"))
    if not html_path:
        return '<span class="muted">none</span>'
    href = os.path.relpath(html_path, link_dir) if link_dir and os.path.isabs(html_path) else html_path
    return f'<a href="{h(urllib.parse.quote(href))}">{h(os.path.basename(html_path))}</a>'


def _events_section(events, link_dir):
    if not events:
        return (
            '<section id="events"><h2>Every restore and drill</h2><p>No restore, drill, promote or rollback has been '
            "recorded yet.</p></section>"
        )
    rows = []
    for e in sorted(events, key=lambda e: str(e.get("time") or ""), reverse=True):
        backup = e.get("backup") or {}
        rows.append(
            f"<tr><td>{h(render.timestamp(e.get('time')))}</td><td>{h(kind_title(e.get('kind')))}</td>"
            f"<td>{badge(e.get('outcome') == 'success', 'PASSED', 'FAILED')}</td>"
            f"<td>{h({True: 'yes', False: 'nothing'}.get(e.get('changed'), 'unknown'))}</td>"
            f"<td class='text'>{h(e.get('initiator'))}</td><td class='text'>{h(e.get('reason'))}</td>"
            f"<td><code>{h(backup.get('id') or '')}</code></td><td class='text'>{h(e.get('target') or '')}</td>"
            f"<td class='num'>{h(render.duration(e.get('rto_s')))}</td>"
            f"<td class='num'>{h(render.duration(e.get('rpo_s')))}</td>"
            f"<td class='num'>{h(e.get('checks_passed', 0))} / {h(e.get('checks_failed', 0))}</td>"
            f"<td>{_report_link(e, link_dir)}</td></tr>"
        )
    return (
        f'<section id="events"><h2>Every restore and drill ({render.count(len(events), "run")}, newest first)</h2>'
        "<table><tr><th>When</th><th>Kind</th><th>Result</th><th>Changed</th><th>Initiator</th><th>Reason</th>"
        "<th>Backup</th><th>Target</th><th>RTO</th><th>RPO</th><th>Checks passed / failed</th><th>Report</th></tr>"
        f"{''.join(rows)}</table></section>"
    )


def history_page(
    events,
    backups=None,
    backups_note="",
    now=None,
    drill_max_age_days=DRILL_MAX_AGE_DAYS,
    log_note="",
    generated_at=None,
    link_dir=None,
):
    """The history of every recorded run, with RTO/RPO per drill against their targets and the backups per day.

    backups: catalog rows (complete and incomplete) or None when they were not read; backups_note says where
    they were read from or why not. log_note names the log and anything in it that could not be read."""
    now = now or timefmt.utcnow()
    status = drill_status(events, now, drill_max_age_days)
    banner_css = "stale" if status["stale"] else "ok"
    drills = sorted(
        (e for e in events if e.get("kind") == "drill" and parse_time(e.get("time"))),
        key=lambda e: parse_time(e["time"]),
    )
    if drills:
        shown = f" (the last {CHART_MAX_BARS})" if len(drills) > CHART_MAX_BARS else ""
        charts = (
            f"<p class='muted'>{render.count(len(drills), 'drill')}{shown}; red: failed, or the target missed.</p>"
            f"<h3>RTO per drill</h3>{_objective_chart(drills, 'rto')}"
            f"<h3>RPO per drill</h3>{_objective_chart(drills, 'rpo')}"
        )
    else:
        charts = "<p class='muted'>No drill recorded yet: nothing to chart.</p>"
    body = (
        "<header><h1>Restore and drill history</h1>"
        f"<p class='muted'>{h(log_note)}</p></header>"
        f'<div class="banner {banner_css}" id="drill-status">{h(status["message"])}</div>'
        f'<section id="drills"><h2>Drills: RTO and RPO against their targets</h2>{charts}</section>'
        + _backups_section(backups, backups_note)
        + _events_section(events, link_dir)
    )
    return page("Restore and drill history", body, generated_at or timefmt.iso_seconds(now))
