"""One measured job of the backup benchmark, run as a child process of bench/run.py.

The parent measures this process's wall time and its whole process tree's peak RSS (pg_dump included),
so each job runs in a fresh interpreter. The job's settings (secrets included) come as JSON on stdin, never
on the command line; the job writes its own facts as JSON to the file named in the settings.

Jobs:
  engine       our backup: logical_backup.run(BackupRequest(...)) to S3 (measurement d)
  dump_upload  what users script today: pg_dump -Fc to a file, then boto3's upload_file (measurement c)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def engine(cfg: dict) -> dict:
    # The engine is imported as the modules (and the tests) import it: the tree is the collection pgdr.supabase.
    sys.path.insert(0, str(REPO / "collections"))
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target

    target = s3_target(cfg["s3"])  # the same settings the modules take
    request = logical_backup.BackupRequest(
        source=cfg["source"],
        dsn=cfg["dsn"],
        target=target,
        prefix=cfg["prefix"],
        window="every_run",
        **cfg.get("options", {}),
    )
    started = time.monotonic()
    result = logical_backup.run(request)
    inner = time.monotonic() - started
    manifest = result["manifest"]
    objects = [
        {k: o[k] for k in ("name", "key", "size", "raw_size", "parts", "duration_s")} for o in manifest["objects"]
    ]
    return {
        "inner_s": round(inner, 3),
        "changed": result["changed"],
        "backup_id": result["backup_id"],
        "manifest_key": result["manifest_key"],
        "duration_s": manifest["duration_s"],
        "timings": manifest.get("timings"),
        "objects": objects,
        "raw_size": sum(o["raw_size"] for o in objects),
        "stored_size": sum(o["size"] for o in objects),
        "database_size": manifest["source"]["database_size"],
    }


def dump_upload(cfg: dict) -> dict:
    import boto3

    env = dict(os.environ)
    if cfg.get("password"):
        env["PGPASSWORD"] = cfg["password"]
    started = time.monotonic()
    subprocess.run(
        [cfg["pg_dump"], "-Fc", "-f", cfg["file"], f"--dbname={cfg['conninfo']}"],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    dumped = time.monotonic()
    s3 = cfg["s3"]
    # A client as a user's script makes it: boto3's defaults, default TransferConfig for upload_file.
    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        verify=s3.get("ca_bundle") or None,
    )
    client.upload_file(cfg["file"], s3["bucket"], cfg["key"])
    uploaded = time.monotonic()
    stored = client.head_object(Bucket=s3["bucket"], Key=cfg["key"])["ContentLength"]
    return {
        "inner_s": round(uploaded - started, 3),
        "dump_s": round(dumped - started, 3),
        "upload_s": round(uploaded - dumped, 3),
        "file_size": os.path.getsize(cfg["file"]),
        "stored_size": stored,
    }


JOBS = {"engine": engine, "dump_upload": dump_upload}


def main() -> int:
    cfg = json.load(sys.stdin)
    result = JOBS[cfg["job"]](cfg)
    Path(cfg["result_file"]).write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
