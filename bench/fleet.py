"""Fleet benchmark: three projects backed up in one run (Ansible's forks) against one after the other.

The sandbox's inventory (inventories/local) lists three projects, hosts of supabase_projects: production and the
fleet's production-b and production-c (databases of their own on the production server). Each is grown to
--size-gb with realistic public.events rows. Then, in interleaved rounds so that both share the machine's noise:
  together    ansible-playbook backup.yml, forks=3: the three projects at once
  in turn     ansible-playbook backup.yml --limit <host>, for each host one after the other
Both take the dump only (no immutable copy, Storage files or config snapshot), into prefixes of their own that are
removed after each run. Each run is a child process (bench/run.py's measure(): wall time, CPU, peak RSS of the
process tree, pg_dump and Ansible's workers included). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# bench/run.py puts the engine (the collection's module_utils) and scripts/ on the path.
from run import GIB, MIB, REPO, clear_prefix, fmt_range, loadavg, log, machine_facts, measure, s3_params, target_for

import sandboxlib  # after run, which puts scripts/ on the path

DEFAULT_SANDBOX = Path("/var/tmp/pgdr-bench-fleet")
HOSTS = ("production", "production-b", "production-c")
S3_PREFIX = "bench-fleet"
DUMP_ONLY = {
    "pgdr_backup_secondary_copy": False,
    "pgdr_backup_storage_assets": False,
    "pgdr_backup_config_snapshot": False,
}
BIN = REPO / ".venv" / "bin"


def db_size(root: Path, host: str) -> int:
    return sandboxlib.psql(root, host, "SELECT pg_database_size(current_database())")[0][0]


def prepare(root: Path, size_gb: float) -> dict:
    """Start (or create) the sandbox and grow each project's database to at least size_gb GiB."""
    with contextlib.redirect_stdout(sys.stderr):
        sandboxlib.up(root)
        goal = int(size_gb * GIB)
        for host in HOSTS:
            for _attempt in range(5):
                size = db_size(root, host)
                if size >= goal:
                    break
                log(f"seeding {host}: {size / MIB:.0f} MB, {(goal - size) / MIB:.0f} MB to go")
                sandboxlib.seed(root, mb=(goal - size) / MIB + 8, target=host)
            else:
                raise SystemExit(f"bench: could not seed {host} to {size_gb} GiB")
        with sandboxlib.connect(root, "production", as_admin=True, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    return sandboxlib.status(root)


class FleetBench:
    def __init__(self, args, state: dict):
        self.root = Path(args.sandbox)
        self.state = state
        self.work = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=self.root))
        self.log_file = self.work / "children.log"
        self.target = target_for(s3_params(state, tls=True))
        self.forks = args.forks
        self.runs = 0

    def _playbook(self, limit: str | None) -> dict:
        """One backup.yml run into a prefix of its own (removed afterwards); limit=None: every project."""
        self.runs += 1
        prefix = f"{S3_PREFIX}-{os.getpid()}-{self.runs}"
        extra = self.work / f"vars-{self.runs}.json"
        extra.write_text(json.dumps({"pgdr_backup_prefix": prefix, **DUMP_ONLY}))
        argv = [str(BIN / "ansible-playbook"), "-i", "inventories/local/hosts.yml", "playbooks/backup.yml"]
        argv += ["-e", f"@{extra}"] + (["--limit", limit] if limit else [])
        env = {
            **os.environ,
            "SANDBOX_DIR": str(self.root),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_FORKS": str(self.forks),
            "PATH": f"{BIN}:{os.environ['PATH']}",
        }
        previous = Path.cwd()
        os.chdir(REPO)
        try:
            sample = measure(argv, env=env, log_file=self.log_file)
        finally:
            os.chdir(previous)
        if sample["exit_code"] != 0:
            raise SystemExit(
                f"bench: backup.yml --limit {limit or 'all'} failed (exit {sample['exit_code']}): {self.log_file}"
            )
        manifests = [k for k, _size in self.target.list_keys(prefix + "/") if k.endswith("/manifest.json")]
        wanted = 1 if limit else len(HOSTS)
        if len(manifests) != wanted:
            raise SystemExit(f"bench: expected {wanted} committed backups under {prefix}/, found {len(manifests)}")
        clear_prefix(self.target, prefix)
        return sample

    def together(self) -> dict:
        return self._playbook(None)

    def in_turn(self) -> dict:
        parts = [self._playbook(host) for host in HOSTS]
        return {
            "wall_s": round(sum(p["wall_s"] for p in parts), 3),
            "cpu_user_s": round(sum(p["cpu_user_s"] for p in parts), 3),
            "cpu_sys_s": round(sum(p["cpu_sys_s"] for p in parts), 3),
            "peak_tree_rss_mb": max(p["peak_tree_rss_mb"] for p in parts),
            "parts_wall_s": [p["wall_s"] for p in parts],
            "load_before": parts[0]["load_before"],
            "load_after": parts[-1]["load_after"],
        }


def summary(samples: list[dict]) -> dict:
    def stats(key: str) -> dict:
        values = sorted(s[key] for s in samples)
        return {"median": values[len(values) // 2], "min": values[0], "max": values[-1]}

    return {key: stats(key) for key in ("wall_s", "peak_tree_rss_mb")} | {
        "cpu_s": stats("cpu_s") if samples and "cpu_s" in samples[0] else None
    }


def markdown(report: dict) -> str:
    rows = [
        "| Run | Wall s, median (min-max) | CPU s (tree), median | Peak tree RSS MB |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (
        ("together", f"one run, 3 projects (forks={report['forks']})"),
        ("in_turn", "one after the other (--limit each)"),
    ):
        s = report["summary"][key]
        rows.append(
            f"| {label} | {fmt_range(s['wall_s'])} | {s['cpu_s']['median']:.1f} | "
            f"{s['peak_tree_rss_mb']['median']:.0f} |"
        )
    sizes = ", ".join(f"{h} {v / MIB:.0f} MB" for h, v in report["sizes"].items())
    return "\n".join(
        [
            *rows,
            "",
            f"Ratio in turn / together (medians): **{report['ratio']:.2f}x**; "
            f"per round: {', '.join(f'{r:.2f}' for r in report['ratios'])}.",
            f"Databases: {sizes}. {report['rounds']} rounds; load average before "
            f"{report['machine']['load_before']}, after {report['load_after']}; {report['machine']['nproc']} CPUs.",
        ]
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sandbox", default=str(DEFAULT_SANDBOX), help="the sandbox to use (created when missing)")
    parser.add_argument("--size-gb", type=float, default=0.5, help="size of each project's database (GiB)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both runs")
    parser.add_argument("--forks", type=int, default=3, help="Ansible's forks for the run of all three")
    parser.add_argument("--out", help="JSON results (default bench/results/fleet-<UTC timestamp>.json)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_facts()
    state = prepare(Path(args.sandbox), args.size_gb)
    sizes = {host: db_size(Path(args.sandbox), host) for host in HOSTS}
    bench = FleetBench(args, state)
    samples = {"together": [], "in_turn": []}
    # One unmeasured run first: it reads the three databases into the page cache.
    log("warm-up: every project once")
    bench.together()
    for round_ in range(args.rounds):
        order = ("together", "in_turn") if round_ % 2 == 0 else ("in_turn", "together")
        for key in order:
            start = time.monotonic()
            sample = getattr(bench, key)()
            sample["cpu_s"] = round(sample["cpu_user_s"] + sample["cpu_sys_s"], 3)
            samples[key].append(sample)
            log(f"round {round_ + 1}: {key} {sample['wall_s']:.1f} s ({time.monotonic() - start:.1f} s with checks)")
    ratios = [t["wall_s"] / s["wall_s"] for s, t in zip(samples["together"], samples["in_turn"], strict=True)]
    report = {
        "benchmark": "fleet",
        "forks": args.forks,
        "rounds": args.rounds,
        "size_gb": args.size_gb,
        "sizes": sizes,
        "machine": machine,
        "load_after": loadavg(),
        "samples": samples,
        "summary": {key: summary(values) for key, values in samples.items()},
        "ratios": ratios,
    }
    report["ratio"] = (
        report["summary"]["in_turn"]["wall_s"]["median"] / report["summary"]["together"]["wall_s"]["median"]
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"fleet-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    log(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
