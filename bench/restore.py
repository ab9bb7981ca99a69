"""Restore benchmark: our logical restore against plain pg_restore, the drill's overhead, and --check's time.

Measurements (a and b interleaved: a b, a b, ... so that they share the machine's noise):
  a  createdb -T template0 + pg_restore -j 2 FILE     a plain full pg_dump -Fc file from local disk
  b  logical_restore.run(...)                         our restore: download, verify, decompress, restore
  c  ansible-playbook playbooks/drill.yml             the whole drill, once; its restore step timed apart
  d  ansible-playbook playbooks/restore.yml --check   the dry run, once
One backup (logical_backup.run) and one pg_dump -Fc file are made at the start, unmeasured. Each restored
database is dropped after its run. Wall time, CPU time and the peak RSS of each job's whole process tree
(sampled from /proc every 50 ms) are recorded. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# bench/run.py puts the engine (the collection's module_utils) and scripts/ on the path.
from run import (
    DEFAULT_SANDBOX,
    MIB,
    REPO,
    clear_prefix,
    db_size,
    fmt_range,
    loadavg,
    log,
    machine_facts,
    measure,
    prepare_sandbox,
    s3_params,
    summarize,
    target_for,
)

# After run, which puts the collection (collections/) on the path.
from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup, pg

CHILD = Path(__file__).resolve().parent / "restore_child.py"
PREFIX = "bench-restore"
SOURCE = "production"  # the drill restores the latest backup of pgdr_source_name (production)
DB_PREFIX = "bench_restore_"
TARGETS = (
    # (name, limit, unit)
    ("b/a wall time", 1.15, "x"),
    ("drill wall - its restore step", 60.0, "s"),
    ("restore.yml --check wall", 30.0, "s"),
)
LABELS = {
    "a": "a  createdb -T template0 + pg_restore -j N (local gzip dump)",
    "b": "b  pgdr logical restore from S3",
    "b_tls": "b  pgdr logical restore from S3 over TLS",
    "c": "c  drill.yml (whole playbook)",
    "d": "d  restore.yml --check",
}


def conninfo_for(dsn: str, dbname: str) -> str:
    """The connection string without its password (it goes in PGPASSWORD), pointing at dbname."""
    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    params["dbname"] = dbname
    return make_conninfo(**params)


def env_for(dsn: str) -> dict:
    env = dict(os.environ, PGAPPNAME="pgdr bench")
    password = conninfo_to_dict(dsn).get("password")
    if password is not None:
        env["PGPASSWORD"] = password
    return env


class RestoreBench:
    def __init__(self, args, state: dict):
        self.args = args
        self.state = state
        self.root = Path(state["dir"])
        self.work = self.root / "bench-restore-work"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(mode=0o700)
        self.log_file = self.work / "children.log"
        self.source_dsn = state["production"]["dsn"]
        self.staging_dsn = state["staging"]["dsn"]
        self.maintenance_db = state["staging"]["dbname"]
        with pg.connect(self.staging_dsn) as conn:
            self.facts = pg.server_facts(conn)
        version = self.facts["server_version_num"]
        self.bin = {name: pg.find_binary(name, None, version) for name in ("pg_dump", "pg_restore", "createdb")}
        self.python = sys.executable
        self.counter = 0
        self.manifest = None
        self.dump_file = self.work / "baseline.dump"

    # -------------------------------------------------------------------------------------- staging

    def staging(self):
        return psycopg.connect(self.staging_dsn, autocommit=True)

    def drop(self, database: str) -> None:
        with self.staging() as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))

    def settle(self) -> None:
        """A checkpoint on staging, so that no run pays for writing out the previous run's pages."""
        with self.staging() as conn:
            conn.execute("CHECKPOINT")

    def drop_leftovers(self) -> list[str]:
        """Databases an interrupted earlier run of this bench left on staging."""
        with self.staging() as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "select datname from pg_database where datname like %s", (DB_PREFIX.replace("_", r"\_") + "%",)
                )
            ]
        for name in names:
            self.drop(name)
        return names

    def restored_facts(self, database: str) -> dict:
        """What the run restored, to show that a and b hold the same data and indexes."""
        dsn = pg.with_database(self.staging_dsn, database)
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "select pg_database_size(current_database()),"
                " (select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c"
                "   join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind = 'r'),"
                " (select count(*) from pg_indexes where schemaname = 'public'),"
                " (select count(*) from pg_constraint c join pg_namespace n on n.oid = c.connamespace"
                "   where n.nspname = 'public')"
            ).fetchone()
        return {"database_bytes": row[0], "public_bytes": int(row[1]), "public_indexes": row[2], "constraints": row[3]}

    # -------------------------------------------------------------------------------------- setup

    def backup(self, target) -> dict:
        """The backup every b run and the drill restore: taken once, unmeasured, encryption off."""
        clear_prefix(target, PREFIX)
        request = logical_backup.BackupRequest(SOURCE, self.source_dsn, target, prefix=PREFIX, window="every_run")
        started = time.monotonic()
        result = logical_backup.run(request)
        self.manifest = result["manifest"]
        (self.work / "manifest.json").write_text(json.dumps(self.manifest))
        objects = self.manifest["objects"]
        return {
            "backup_id": result["backup_id"],
            "wall_s": round(time.monotonic() - started, 3),
            "stored_bytes": sum(o["size"] for o in objects),
            "raw_bytes": sum(o["raw_size"] for o in objects),
            "objects": {o["name"]: {"size": o["size"], "raw_size": o["raw_size"]} for o in objects},
        }

    def baseline_dump(self) -> dict:
        """The plain full dump a restores: pg_dump -Fc (default gzip) of the whole database, unmeasured."""
        conninfo = conninfo_for(self.source_dsn, self.state["production"]["dbname"])
        argv = [self.bin["pg_dump"], "-Fc", "-f", str(self.dump_file), f"--dbname={conninfo}"]
        result = measure(argv, env=env_for(self.source_dsn), log_file=self.log_file)
        if result["exit_code"] != 0:
            raise SystemExit(f"bench: the baseline pg_dump failed; see {self.log_file}")
        return {"wall_s": result["wall_s"], "bytes": self.dump_file.stat().st_size}

    # -------------------------------------------------------------------------------------- jobs

    def _name(self, kind: str) -> str:
        self.counter += 1
        return f"{DB_PREFIX}{kind}_{self.counter}"

    def _finish(self, result: dict, database: str) -> dict:
        try:
            if result["exit_code"] == 0:
                result["restored"] = self.restored_facts(database)
        finally:
            self.drop(database)
            self.settle()
        return result

    def a(self) -> dict:
        database = self._name("plain")
        script = '"$1" --maintenance-db="$2" --template=template0 "$3" && exec "$4" --jobs="$5" --dbname="$6" "$7"'
        argv = [
            "/bin/sh",
            "-c",
            script,
            "baseline",
            self.bin["createdb"],
            conninfo_for(self.staging_dsn, self.maintenance_db),
            database,
            self.bin["pg_restore"],
            str(self.args.jobs),
            conninfo_for(self.staging_dsn, database),
            str(self.dump_file),
        ]
        result = measure(argv, env=env_for(self.staging_dsn), log_file=self.log_file)
        result["database"] = database
        return self._finish(result, database)

    def b(self, tls: bool) -> dict:
        database = self._name("pgdr")
        result_file = self.work / "child-result.json"
        result_file.unlink(missing_ok=True)
        cfg = {
            "dsn": self.staging_dsn,
            "manifest_file": str(self.work / "manifest.json"),
            "s3": s3_params(self.state, tls),
            "database": database,
            "jobs": self.args.jobs,
            "workdir": str(self.work),
            "result_file": str(result_file),
        }
        result = measure(
            [self.python, str(CHILD)],
            stdin_data=json.dumps(cfg).encode(),
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
            log_file=self.log_file,
        )
        if result["exit_code"] == 0:
            result["child"] = json.loads(result_file.read_text())
        result["database"] = database
        result["tls"] = tls
        return self._finish(result, database)

    def _playbook_env(self, report: Path) -> dict:
        return dict(
            os.environ,
            SANDBOX_DIR=str(self.root),
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_FORCE_COLOR="0",
            PGDR_RUN_REPORT=str(report),
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        )

    def _extra_vars(self) -> Path:
        """Backups from the bench prefix; the drill's records, reports and local copy in the bench folder."""
        path = self.work / "extra-vars.json"
        ops = self.work / "ops"
        path.write_text(
            json.dumps(
                {
                    "pgdr_backup_prefix": PREFIX,
                    "pgdr_incidents_path": str(ops / "incidents.md"),
                    "pgdr_events_path": str(ops / "restore-events.jsonl"),
                    "pgdr_reports_dir": str(self.work / "reports"),
                    "pgdr_restore_workdir": str(self.work / "restore-work"),
                    "logical_restore_progress_file": str(self.work / "drill.progress"),
                }
            )
        )
        return path

    def _playbook(self, name: str, *extra: str) -> tuple[dict, dict | None]:
        report = self.work / f"run-report-{name}.json"
        report.unlink(missing_ok=True)
        argv = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            f"playbooks/{name}.yml",
            "-e",
            f"@{self._extra_vars()}",
            *extra,
        ]
        with contextlib.chdir(REPO):
            result = measure(argv, env=self._playbook_env(report), log_file=self.log_file)
        run_report = json.loads(report.read_text()) if report.exists() else None
        return result, run_report

    def c(self) -> dict:
        """The drill, once: its wall time, and its restore step's own time (run report and recorded event)."""
        env_file = Path(self.state["env_files"]["staging"])
        original = env_file.read_bytes()
        mode = env_file.stat().st_mode & 0o777
        database = f"restore_{self.manifest['backup_id'].lower()}"
        self.drop(database)
        self.settle()
        try:
            result, run_report = self._playbook("drill")
        finally:
            env_file.write_bytes(original)
            env_file.chmod(mode)
            self.drop(database)
        result["database"] = database
        result["run_report"] = run_report
        result["restore_step"] = restore_step(run_report)
        events = self.work / "ops" / "restore-events.jsonl"
        event = json.loads(events.read_text().splitlines()[-1]) if events.exists() else None
        result["event"] = (
            {k: event.get(k) for k in ("kind", "outcome", "durations_s", "rto_s", "checks_passed", "checks_failed")}
            if event
            else None
        )
        return result

    def d(self) -> dict:
        result, run_report = self._playbook("restore", "--check", "-e", "reason=bench")
        result["run_report"] = run_report
        return result


# ---------------------------------------------------------------------------------------------- report


def restore_step(run_report: dict | None) -> dict | None:
    """The logical_restore role's restore task in the run report: its longest task (names change)."""
    steps = [s for s in (run_report or {}).get("steps", []) if s["task"].startswith("logical_restore : ")]
    return max(steps, key=lambda s: s["duration_s"], default=None)


def drill_times(c: dict) -> dict:
    """The drill's wall time, its restore step's time (the task in the run report; the engine's own steps
    from the recorded event) and what the drill adds beyond the restore."""
    step = (c.get("restore_step") or {}).get("duration_s")
    steps = sum(((c.get("event") or {}).get("durations_s") or {}).values()) or None
    restore = step if step is not None else steps
    return {
        "wall_s": c["wall_s"],
        "restore_task_s": step,
        "restore_steps_s": round(steps, 3) if steps else None,
        "overhead_s": round(c["wall_s"] - restore, 3) if restore is not None else None,
        "overhead_vs_steps_s": round(c["wall_s"] - steps, 3) if steps else None,
    }


def evaluate(summary: dict, samples: dict) -> list[dict]:
    rows = []
    if "a" in summary and "b" in summary:
        value = summary["b"]["wall_s"]["median"] / summary["a"]["wall_s"]["median"]
        rows.append({"target": TARGETS[0][0], "value": round(value, 3), "limit": 1.15, "unit": "x"})
    if samples.get("c"):
        c = samples["c"][0]
        value = drill_times(c)["overhead_s"]
        ok = c["exit_code"] == 0 and value is not None
        rows.append({"target": TARGETS[1][0], "value": value, "limit": 60.0, "unit": "s", "pass": ok and value <= 60.0})
    if samples.get("d"):
        d = samples["d"][0]
        rows.append(
            {
                "target": TARGETS[2][0],
                "value": d["wall_s"],
                "limit": 30.0,
                "unit": "s",
                "pass": d["exit_code"] == 0 and d["wall_s"] < 30.0,
            }
        )
    for row in rows:
        row.setdefault("pass", row["value"] <= row["limit"])
    return rows


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def markdown(report: dict) -> str:
    facts = report["machine"]
    sizes = report["sizes"]
    lines = [
        f"### Restore benchmark {report['started_at']}",
        "",
        f"Database {sizes['database_bytes'] / MIB:.0f} MB (pg_database_size); backup "
        f"{sizes['backup_raw_bytes'] / MIB:.0f} MB raw, {sizes['backup_stored_bytes'] / MIB:.0f} MB stored (zstd); "
        f"baseline dump {sizes['baseline_dump_bytes'] / MIB:.0f} MB (pg_dump -Fc, gzip); "
        f"{report['repeat']} run(s) of a and b, interleaved; pg_restore --jobs={report['jobs']}; "
        f"S3 over {'HTTPS' if report['tls_main'] else 'HTTP'} (SeaweedFS on the same machine).",
        f"Machine: {facts['nproc']} CPUs, {facts['mem_total_mb']:.0f} MB RAM, load average before "
        f"{' '.join(f'{x:.2f}' for x in facts['load_before'])}, after "
        f"{' '.join(f'{x:.2f}' for x in facts['load_after'])}.",
        "",
        "| Measurement | Wall s, median (min-max) | Raw MB/s | Peak tree RSS MB, median (min-max) | CPU s (user+sys) |",
        "|---|---:|---:|---:|---:|",
    ]
    raw = sizes["backup_raw_bytes"]
    for name, s in report["summary"].items():
        rate = f"{raw / MIB / s['wall_s']['median']:.0f}" if name in ("a", "b", "b_tls") else "-"
        lines.append(
            f"| {LABELS[name]} | {fmt_range(s['wall_s'], 2)} | {rate} | {fmt_range(s['peak_tree_rss_mb'])} "
            f"| {fmt_range(s['cpu_s'])} |"
        )
    lines += ["", "| Target | Value | Limit | Result |", "|---|---:|---:|---|"]
    for t in report["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}" + ("" if t["unit"] == "x" else " s")
        limit = (
            f"≤ {t['limit']:g}" if t["unit"] == "x" else f"{'<' if 'check' in t['target'] else '≤'} {t['limit']:g} s"
        )
        lines.append(f"| {t['target']} | {value} | {limit} | {'PASS' if t['pass'] else 'FAIL'} |")
    for name in ("b", "b_tls"):
        runs = report["samples"].get(name) or []
        if runs:
            order = ("download_verify", "create_database", "roles", "schema", "data", "post_data", "migrations")
            keys = sorted(runs[0]["child"]["timings"], key=lambda k: order.index(k) if k in order else len(order))
            timings = {k: statistics.median(x["child"]["timings"].get(k, 0) for x in runs) for k in keys}
            parts = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
            inner = statistics.median(x["child"]["inner_s"] for x in runs)
            lines += ["", f"{name}: run() took {inner:.2f} s inside the child (medians, s, in order: {parts})."]
    restored = {k: [x["restored"] for x in report["samples"].get(k, []) if x.get("restored")] for k in ("a", "b")}
    if restored["a"] and restored["b"]:
        ra, rb = restored["a"][0], restored["b"][0]
        lines += [
            "",
            f"Restored (first run): a {ra['database_bytes'] / MIB:.0f} MB database, public tables and indexes "
            f"{ra['public_bytes'] / MIB:.0f} MB, {ra['public_indexes']} indexes, {ra['constraints']} constraints; "
            f"b {rb['database_bytes'] / MIB:.0f} MB, {rb['public_bytes'] / MIB:.0f} MB, {rb['public_indexes']} "
            f"indexes, {rb['constraints']} constraints.",
        ]
    c = (report["samples"].get("c") or [None])[0]
    if c:
        t = drill_times(c)
        task = f"{t['restore_task_s']:.2f} s" if t["restore_task_s"] is not None else "not found"
        steps = f"{t['restore_steps_s']:.2f} s" if t["restore_steps_s"] is not None else "not recorded"
        lines += [
            "",
            f"c: drill exit {c['exit_code']}, {t['wall_s']:.2f} s in all; its restore task {task} (run report), "
            f"the engine's steps {steps} (recorded event); the drill adds {fmt_s(t['overhead_s'])} beyond the "
            f"restore task ({fmt_s(t['overhead_vs_steps_s'])} beyond the engine's steps).",
        ]
        steps_sorted = sorted((c.get("run_report") or {}).get("steps", []), key=lambda s: -s["duration_s"])[:6]
        if steps_sorted:
            lines.append(
                "Slowest drill tasks: " + "; ".join(f"{s['task']} {s['duration_s']:.2f} s" for s in steps_sorted) + "."
            )
    d = (report["samples"].get("d") or [None])[0]
    if d:
        steps_sorted = sorted((d.get("run_report") or {}).get("steps", []), key=lambda s: -s["duration_s"])[:3]
        lines += [
            "",
            f"d: restore.yml --check exit {d['exit_code']}, {d['wall_s']:.2f} s; slowest tasks: "
            + ("; ".join(f"{s['task']} {s['duration_s']:.2f} s" for s in steps_sorted) or "none")
            + ".",
        ]
    lines += [
        "",
        "The ratio uses medians; a and b each start from a checkpointed staging cluster; every restored "
        "database is dropped after its run.",
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument(
        "--sandbox", type=Path, default=DEFAULT_SANDBOX, help=f"sandbox folder (default {DEFAULT_SANDBOX})"
    )
    parser.add_argument("--size-gb", type=float, default=2.0, help="grow production to at least this many GiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs of a and b")
    parser.add_argument("--jobs", type=int, default=2, help="pg_restore jobs for a and b (default 2)")
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="S3 over HTTPS (--tls) or HTTP (--no-tls) for b; default: HTTP, plus one run of b over HTTPS",
    )
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/restore-<timestamp>.json)")
    parser.add_argument("--only", default="abcd", help="run only these measurements, e.g. 'ab' (default abcd)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.size_gb <= 0 or args.jobs < 1 or not args.only or not set(args.only) <= set("abcd"):
        parser.error("--repeat >= 1, --size-gb > 0, --jobs >= 1 and --only made of a, b, c, d")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started_at = dt.datetime.now(dt.UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or REPO / "bench" / "results" / f"restore-{stamp}.json"
    wall_start = time.monotonic()
    root = args.sandbox.absolute()
    log(f"sandbox {root}, goal {args.size_gb:g} GiB")
    state = prepare_sandbox(root, args.size_gb)
    bench = RestoreBench(args, state)
    machine = machine_facts()
    machine.update(
        pg_restore=pg.tool_version(bench.bin["pg_restore"])[1],
        server_version=bench.facts["server_version"],
        sandbox=str(root),
        disk_free_before_gb=round(shutil.disk_usage(root).free / 1024**3, 1),
    )
    tls_main = bool(args.tls)
    tls_extra = args.tls is None and "b" in args.only
    target = target_for(s3_params(state, tls_main))
    samples: dict[str, list[dict]] = {k: [] for k in ("a", "b", "b_tls", "c", "d") if k[0] in args.only}
    if not tls_extra:
        samples.pop("b_tls", None)
    setup = {}
    failed = None
    try:
        left = bench.drop_leftovers()
        if left:
            log(f"dropped leftovers of an earlier run: {', '.join(left)}")
        log(f"setup: one backup with logical_backup.run under {PREFIX}/ (unmeasured)")
        setup["backup"] = bench.backup(target)
        log(f"  {setup['backup']['backup_id']}: {setup['backup']['wall_s']:.1f} s")
        if "a" in args.only:
            log("setup: one pg_dump -Fc of the whole database to local disk (unmeasured)")
            setup["baseline_dump"] = bench.baseline_dump()
            log(f"  {setup['baseline_dump']['bytes'] / MIB:.0f} MB in {setup['baseline_dump']['wall_s']:.1f} s")
        bench.settle()
        for i in range(1, args.repeat + 1):
            for name in (n for n in "ab" if n in args.only):
                log(f"run {i}/{args.repeat}: {LABELS[name]}")
                result = bench.a() if name == "a" else bench.b(tls_main)
                result["round"] = i
                samples[name].append(result)
                if result["exit_code"] != 0:
                    raise SystemExit(f"bench: {LABELS[name]} failed (exit {result['exit_code']}); see {bench.log_file}")
                log(f"  {result['wall_s']:.2f} s, peak tree RSS {result['peak_tree_rss_mb']:.0f} MB")
            if tls_extra and i == args.repeat:
                log(f"run {i}/{args.repeat}: {LABELS['b_tls']}")
                result = bench.b(True)
                result["round"] = i
                samples["b_tls"].append(result)
                if result["exit_code"] != 0:
                    raise SystemExit(f"bench: {LABELS['b_tls']} failed; see {bench.log_file}")
                log(f"  {result['wall_s']:.2f} s, peak tree RSS {result['peak_tree_rss_mb']:.0f} MB")
        for name in (n for n in "cd" if n in args.only):
            log(f"once: {LABELS[name]}")
            result = bench.c() if name == "c" else bench.d()
            samples[name].append(result)
            log(f"  exit {result['exit_code']}, {result['wall_s']:.2f} s")
            if result["exit_code"] != 0:
                failed = f"{LABELS[name]} exited {result['exit_code']}; see {bench.log_file}"
                log(failed)
    finally:
        clear_prefix(target, PREFIX)
        bench.dump_file.unlink(missing_ok=True)
        bench.drop_leftovers()
    machine["load_after"] = loadavg()
    machine["disk_free_after_gb"] = round(shutil.disk_usage(root).free / 1024**3, 1)
    summary = {k: summarize(v) for k, v in samples.items() if v}
    report = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - wall_start, 1),
        "repeat": args.repeat,
        "jobs": args.jobs,
        "order": args.only,
        "tls_main": tls_main,
        "machine": machine,
        "sizes": {
            "database_bytes": db_size(root),
            "backup_raw_bytes": setup["backup"]["raw_bytes"],
            "backup_stored_bytes": setup["backup"]["stored_bytes"],
            "baseline_dump_bytes": (setup.get("baseline_dump") or {}).get("bytes", 0),
        },
        "setup": setup,
        "summary": summary,
        "targets": evaluate(summary, samples),
        "samples": samples,
        "drill": drill_times(samples["c"][0]) if samples.get("c") else None,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(markdown(report))
    print(f"\nResults: {out}; took {report['duration_s']:.0f} s.")
    if failed:
        return 1
    shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
