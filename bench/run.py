"""Backup benchmark: our streamed backup against pg_dump alone and against what users script today.

Measurements, interleaved (a b c d, a b c d, ...) so that they share the machine's noise:
  a  pg_dump -Fc -Z0 -f /dev/null             how fast PostgreSQL hands out a dump
  b  pg_dump -Fc -f FILE                      pg_dump with its default gzip compression, to local disk
  c  pg_dump -Fc -f FILE + boto3 upload_file  the sequential script users run today
  d  logical_backup.run(...)                  our backup: pg_dump -Z0 -> zstd -> SHA-256 -> S3 multipart
Each job runs as a child process; its wall time, CPU time and the peak RSS of its whole process tree
(sampled from /proc every 50 ms) are recorded. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "collections"))
sys.path.insert(0, str(REPO / "scripts"))

from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

import sandboxlib  # noqa: E402
from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup, pg  # noqa: E402
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target  # noqa: E402
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3Target, part_size_for  # noqa: E402

DEFAULT_SANDBOX = Path("/var/tmp/pgdr-bench")
CHILD = Path(__file__).resolve().parent / "child.py"
MIB = 1024 * 1024
GIB = 1024 * MIB
POLL_S = 0.05
SOURCE = "bench"
TARGETS = (
    # (name, numerator, denominator or None for an absolute limit, limit, unit)
    ("d/a wall time", "d", "a", 1.4, "x"),
    ("d/b wall time", "d", "b", 0.45, "x"),
    ("d/c wall time", "d", "c", 0.4, "x"),
    ("d peak tree RSS", "d", None, 300.0, "MB"),
)
LABELS = {
    "a": "a  pg_dump -Fc -Z0 > /dev/null",
    "b": "b  pg_dump -Fc (gzip) to a file",
    "c": "c  pg_dump -Fc to a file, then upload_file",
    "d": "d  pgdr logical backup to S3",
    "d_tls": "d  pgdr logical backup to S3 over TLS",
}


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- /proc


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        found += [int(p) for p in text.split()]
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie (no VmRSS line)


def tree_rss_kb(root: int) -> tuple[int, int]:
    """(sum of VmRSS over root and all its descendants, number of processes)."""
    total, count, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_kb(pid)
        count += 1
        stack += _children(pid)
    return total, count


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def measure(
    argv: list[str], *, env: dict | None = None, stdin_data: bytes | None = None, log_file: Path, to_null: bool = False
) -> dict:
    """Run argv as a child; return wall seconds, CPU seconds (tree), peak tree RSS and exit status."""
    peak = {"kb": 0, "procs": 0, "samples": 0}
    stop = threading.Event()
    load_before = loadavg()
    with open(log_file, "ab") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if to_null else err,
            stderr=err,
            env=env,
        )

        def poll() -> None:
            while not stop.is_set():
                kb, procs = tree_rss_kb(proc.pid)
                peak["kb"] = max(peak["kb"], kb)
                peak["procs"] = max(peak["procs"], procs)
                peak["samples"] += 1
                stop.wait(POLL_S)

        poller = threading.Thread(target=poll, name="rss-poller", daemon=True)
        poller.start()
        if stdin_data is not None:
            proc.stdin.write(stdin_data)
            proc.stdin.close()
        # wait4 reports the child's CPU time including the descendants it waited for (pg_dump under Python).
        _unused, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        poller.join()
    return {
        "wall_s": round(wall, 3),
        "cpu_user_s": round(usage.ru_utime, 3),
        "cpu_sys_s": round(usage.ru_stime, 3),
        "peak_tree_rss_mb": round(peak["kb"] / 1024, 1),
        "peak_single_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "max_processes": peak["procs"],
        "rss_samples": peak["samples"],
        "exit_code": proc.returncode,
        "load_before": load_before,
        "load_after": loadavg(),
    }


# ---------------------------------------------------------------------------------------------- sandbox


def prepare_sandbox(root: Path, size_gb: float) -> dict:
    """Start (or create) the sandbox and grow production until its database is at least size_gb GiB."""
    with contextlib.redirect_stdout(sys.stderr):
        sandboxlib.up(root)
        goal = int(size_gb * GIB)
        for _unused in range(5):
            size = db_size(root)
            if size >= goal:
                break
            missing_mb = (goal - size) / MIB
            log(f"seeding production: {size / MIB:.0f} MB, {missing_mb:.0f} MB to go")
            sandboxlib.seed(root, mb=missing_mb + 8)
        else:
            raise SystemExit(f"bench: could not seed production to {size_gb} GiB")
        with sandboxlib.connect(root, "production", autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    return sandboxlib.status(root)


def db_size(root: Path) -> int:
    return sandboxlib.psql(root, "production", "SELECT pg_database_size(current_database())")[0][0]


def s3_params(state: dict, tls: bool) -> dict:
    s3 = state["s3"]
    return {
        "bucket": s3["buckets"]["primary"],
        "endpoint_url": s3["endpoint_tls"] if tls else s3["endpoint"],
        "region": s3.get("region") or "us-east-1",
        "access_key": s3["access_key"],
        "secret_key": s3["secret_key"],
        "ca_bundle": s3["ca_file"] if tls else None,
    }


def target_for(params: dict) -> S3Target:
    return s3_target(params)  # the same settings the modules take


def clear_prefix(target: S3Target, prefix: str) -> int:
    """Remove every object and unfinished upload under prefix/; returns the number of objects removed."""
    folder = prefix.strip("/") + "/"
    for key, upload_id in target.list_uploads(folder):
        target.abort_upload(key, upload_id)
    keys = [key for key, _unused in target.list_keys(folder)]
    target.delete_keys(keys)
    return len(keys)


# ---------------------------------------------------------------------------------------------- jobs


class Bench:
    def __init__(self, args, state: dict):
        self.args = args
        self.state = state
        self.work = Path(state["dir"]) / "bench-work"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(mode=0o700)
        self.log_file = self.work / "children.log"
        self.dsn = state["production"]["dsn"]
        self.conninfo, self.env = client_env(self.dsn)
        with pg.connect(self.dsn) as conn:
            self.facts = pg.server_facts(conn)
        self.pg_dump = pg.find_binary("pg_dump", None, self.facts["server_version_num"])
        self.python = sys.executable
        self.counter = 0

    def dump_argv(self, *extra: str) -> list[str]:
        return [self.pg_dump, "-Fc", *extra, f"--dbname={self.conninfo}"]

    def warm_up(self) -> int:
        """One unmeasured pg_dump -Z0 that reads the database into the page cache; returns the dump's size."""
        proc = subprocess.Popen(self.dump_argv("-Z0"), stdout=subprocess.PIPE, env=self.env)
        size = 0
        while chunk := proc.stdout.read(MIB):
            size += len(chunk)
        if proc.wait() != 0:
            raise SystemExit("bench: the warm-up pg_dump failed")
        return size

    def a(self) -> dict:
        # To stdout, not -f /dev/null: pg_dump 15 fsyncs its -f output and fsync(/dev/null) fails.
        return measure(self.dump_argv("-Z0"), env=self.env, log_file=self.log_file, to_null=True)

    def b(self) -> dict:
        path = self.work / "b.dump"
        try:
            result = measure(self.dump_argv("-f", str(path)), env=self.env, log_file=self.log_file)
            result["output_size"] = path.stat().st_size
        finally:
            path.unlink(missing_ok=True)
        return result

    def _child(self, cfg: dict) -> dict:
        result_file = self.work / "child-result.json"
        result_file.unlink(missing_ok=True)
        cfg = dict(cfg, result_file=str(result_file))
        result = measure(
            [self.python, str(CHILD)],
            stdin_data=json.dumps(cfg).encode(),
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
            log_file=self.log_file,
        )
        if result["exit_code"] != 0:
            raise SystemExit(f"bench: child job {cfg['job']} failed; see {self.log_file}")
        result["child"] = json.loads(result_file.read_text())
        return result

    def c(self, tls: bool) -> dict:
        self.counter += 1
        prefix = f"bench-upload-{self.counter}"
        params = s3_params(self.state, tls)
        path = self.work / "c.dump"
        password = password_of(self.dsn)
        try:
            result = self._child(
                {
                    "job": "dump_upload",
                    "pg_dump": self.pg_dump,
                    "conninfo": self.conninfo,
                    "password": password,
                    "file": str(path),
                    "s3": params,
                    "key": f"{prefix}/{SOURCE}.dump",
                }
            )
        finally:
            path.unlink(missing_ok=True)
            clear_prefix(target_for(params), prefix)
        result["output_size"] = result["child"]["file_size"]
        result["stored_size"] = result["child"]["stored_size"]
        result["tls"] = tls
        return result

    def d(self, tls: bool) -> dict:
        self.counter += 1
        prefix = f"bench-{self.counter}"
        params = s3_params(self.state, tls)
        target = target_for(params)
        clear_prefix(target, prefix)
        try:
            result = self._child(
                {
                    "job": "engine",
                    "dsn": self.dsn,
                    "source": SOURCE,
                    "prefix": prefix,
                    "s3": params,
                    "options": self.args.engine_options,
                }
            )
        finally:
            clear_prefix(target, prefix)
        result["raw_size"] = result["child"]["raw_size"]
        result["output_size"] = result["stored_size"] = result["child"]["stored_size"]
        result["tls"] = tls
        return result


def password_of(dsn: str) -> str | None:
    return conninfo_to_dict(dsn).get("password")


def client_env(dsn: str) -> tuple[str, dict]:
    """(conninfo without the password, environment with PGPASSWORD) for pg_dump: no secret in argv."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = dict(os.environ, PGAPPNAME="pgdr bench")
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo(**params), env


# ---------------------------------------------------------------------------------------------- report


def summarize(samples: list[dict]) -> dict:
    def stats(key):
        values = [s[key] for s in samples if s.get(key) is not None]
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    out = {
        k: stats(k)
        for k in ("wall_s", "peak_tree_rss_mb", "peak_single_rss_mb", "cpu_user_s", "cpu_sys_s", "output_size")
    }
    out["cpu_s"] = stats_of([s["cpu_user_s"] + s["cpu_sys_s"] for s in samples])
    out["runs"] = len(samples)
    return out


def stats_of(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def evaluate(summary: dict) -> list[dict]:
    rows = []
    for name, num, den, limit, unit in TARGETS:
        if num not in summary or (den and den not in summary):
            continue
        if den:
            value = summary[num]["wall_s"]["median"] / summary[den]["wall_s"]["median"]
        else:
            value = summary[num]["peak_tree_rss_mb"]["max"]
        rows.append({"target": name, "value": round(value, 3), "limit": limit, "unit": unit, "pass": value <= limit})
    return rows


def fmt_range(s: dict | None, digits: int = 1) -> str:
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def markdown(report: dict) -> str:
    facts = report["machine"]
    raw = report["sizes"]["raw_dump_bytes"]
    lines = [
        f"### Backup benchmark {report['started_at']}",
        "",
        f"Database {report['sizes']['database_bytes'] / MIB:.0f} MB (pg_database_size), raw dump (-Z0) "
        f"{raw / MIB:.0f} MB; {report['repeat']} run(s) each, interleaved; S3 over "
        f"{'HTTPS' if report['tls_main'] else 'HTTP'} (SeaweedFS on the same machine).",
        f"Machine: {facts['nproc']} CPUs, {facts['mem_total_mb']:.0f} MB RAM, load average before "
        f"{' '.join(f'{x:.2f}' for x in facts['load_before'])}, after "
        f"{' '.join(f'{x:.2f}' for x in facts['load_after'])}.",
        "",
        "| Measurement | Wall s, median (min-max) | Raw MB/s | Peak tree RSS MB, median (min-max) "
        "| CPU s (user+sys) | Output MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in report["summary"].items():
        rate = raw / MIB / s["wall_s"]["median"]
        out = f"{s['output_size']['median'] / MIB:.0f}" if s["output_size"] else "-"
        lines.append(
            f"| {LABELS[name]} | {fmt_range(s['wall_s'], 2)} | {rate:.0f} | {fmt_range(s['peak_tree_rss_mb'])} "
            f"| {fmt_range(s['cpu_s'])} | {out} |"
        )
    lines += ["", "| Target | Value | Limit | Result |", "|---|---:|---:|---|"]
    for t in report["targets"]:
        value = f"{t['value']:.2f}" if t["unit"] == "x" else f"{t['value']:.0f} MB"
        limit = f"≤ {t['limit']:g}" if t["unit"] == "x" else f"≤ {t['limit']:g} MB"
        lines.append(f"| {t['target']} | {value} | {limit} | {'PASS' if t['pass'] else 'FAIL'} |")
    c_samples = report["samples"].get("c") or []
    if c_samples:
        dump = statistics.median(x["child"]["dump_s"] for x in c_samples)
        upload = statistics.median(x["child"]["upload_s"] for x in c_samples)
        lines += ["", f"c splits into pg_dump {dump:.2f} s + upload_file {upload:.2f} s (medians, inside the child)."]
    for name in ("d", "d_tls"):
        runs = report["samples"].get(name) or []
        if runs:
            timings = {
                k: statistics.median(x["child"]["timings"][k] for x in runs) for k in runs[0]["child"]["timings"]
            }
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(timings.items(), key=lambda kv: -kv[1]) if v >= 0.01)
            inner = statistics.median(x["child"]["inner_s"] for x in runs)
            lines += ["", f"{name}: run() took {inner:.2f} s inside the child (medians, s: {parts})."]
    d = report["summary"].get("d")
    if d:
        engine = report["engine"]
        stored = d["output_size"]["median"] / MIB
        engine_raw = report["sizes"]["engine_raw_bytes"] / MIB
        lines += [
            "",
            f"Ratios use medians; the RSS target uses d's largest peak. d stored {stored:.0f} MB (zstd level "
            f"{engine['compression_level']}) for {engine_raw:.0f} MB of raw dump; part size "
            f"{engine['part_size'] / MIB:.0f} MiB, concurrency {engine['concurrency']}; engine options "
            f"{json.dumps(engine['options']) if engine['options'] else 'all default'}.",
        ]
    return "\n".join(lines)


def machine_facts() -> dict:
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) / 1024
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mb": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_before": loadavg(),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument(
        "--sandbox", type=Path, default=DEFAULT_SANDBOX, help=f"sandbox folder (default {DEFAULT_SANDBOX})"
    )
    parser.add_argument("--size-gb", type=float, default=2.0, help="grow production to at least this many GiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="S3 over HTTPS (--tls) or HTTP (--no-tls) for c and d; default: HTTP, plus one run of d over HTTPS",
    )
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/backup-<timestamp>.json)")
    parser.add_argument("--only", default="abcd", help="run only these measurements, e.g. 'ad' (default abcd)")
    parser.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a BackupRequest setting for d, e.g. count_rows=false or compression_threads=2 (JSON value)",
    )
    args = parser.parse_args(argv)
    args.engine_options = {}
    for item in args.engine_option:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--engine-option {item!r}: expected NAME=VALUE")
        try:
            args.engine_options[name] = json.loads(value)
        except ValueError:
            args.engine_options[name] = value
    if args.repeat < 1 or args.size_gb <= 0 or not set(args.only) <= set("abcd") or not args.only:
        parser.error("--repeat >= 1, --size-gb > 0 and --only made of a, b, c, d")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started_at = dt.datetime.now(dt.UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or REPO / "bench" / "results" / f"backup-{stamp}.json"
    wall_start = time.monotonic()
    root = args.sandbox.absolute()
    log(f"sandbox {root}, goal {args.size_gb:g} GiB")
    state = prepare_sandbox(root, args.size_gb)
    bench = Bench(args, state)
    machine = machine_facts()
    machine.update(
        pg_dump=pg.tool_version(bench.pg_dump)[1],
        server_version=bench.facts["server_version"],
        sandbox=str(root),
        disk_free_before_gb=round(shutil.disk_usage(root).free / GIB, 1),
    )
    tls_main = bool(args.tls)
    tls_extra = args.tls is None and "d" in args.only
    log("warm-up: one unmeasured pg_dump -Z0 (fills the page cache)")
    raw_size = bench.warm_up()
    samples: dict[str, list[dict]] = {k: [] for k in ("a", "b", "c", "d", "d_tls") if k[0] in args.only}
    if not tls_extra:
        samples.pop("d_tls", None)
    for i in range(1, args.repeat + 1):
        for name in args.only:
            log(f"run {i}/{args.repeat}: {LABELS[name]}")
            result = bench.a() if name == "a" else bench.b() if name == "b" else None
            if name == "c":
                result = bench.c(tls_main)
            elif name == "d":
                result = bench.d(tls_main)
            if result["exit_code"] != 0:
                raise SystemExit(f"bench: {LABELS[name]} failed (exit {result['exit_code']}); see {bench.log_file}")
            result["round"] = i
            samples[name].append(result)
            log(f"  {result['wall_s']:.2f} s, peak tree RSS {result['peak_tree_rss_mb']:.0f} MB")
        if tls_extra and i == args.repeat:
            log(f"run {i}/{args.repeat}: {LABELS['d_tls']}")
            result = bench.d(True)
            result["round"] = i
            samples["d_tls"].append(result)
            log(f"  {result['wall_s']:.2f} s, peak tree RSS {result['peak_tree_rss_mb']:.0f} MB")
    machine["load_after"] = loadavg()
    machine["disk_free_after_gb"] = round(shutil.disk_usage(root).free / GIB, 1)
    summary = {k: summarize(v) for k, v in samples.items() if v}
    # The engine's defaults, as the measured child got them (BackupRequest only checks the source name).
    defaults = logical_backup.BackupRequest(SOURCE, bench.dsn, None, window="every_run", **args.engine_options)
    engine_raw = next((s["raw_size"] for s in samples.get("d", []) + samples.get("d_tls", [])), None)
    report = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - wall_start, 1),
        "repeat": args.repeat,
        "order": args.only,
        "tls_main": tls_main,
        "machine": machine,
        "sizes": {
            "database_bytes": db_size(root),
            "raw_dump_bytes": raw_size,
            "engine_raw_bytes": engine_raw,
        },
        "engine": {
            "part_size": defaults.part_size or part_size_for(db_size(root)),
            "concurrency": defaults.concurrency,
            "compression_level": defaults.compression_level,
            "compression_threads": defaults.compression_threads,
            "count_rows": defaults.count_rows,
            "options": args.engine_options,
        },
        "summary": summary,
        "targets": evaluate(summary),
        "samples": samples,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(markdown(report))
    print(f"\nResults: {out}; took {report['duration_s']:.0f} s.")
    shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
