"""One measured restore of the restore benchmark, run as a child process of bench/restore.py.

The parent measures this process's wall time and its whole process tree's peak RSS (pg_restore and psql
included), so the restore runs in a fresh interpreter, as the Ansible module does. The settings (secrets
included) come as JSON on stdin, never on the command line; the result goes as JSON to the file named in them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def restore(cfg: dict) -> dict:
    # The engine is imported as the modules (and the tests) import it: the tree is the collection pgdr.supabase.
    sys.path.insert(0, str(REPO / "collections"))
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target

    target = s3_target(cfg["s3"])  # the same settings the modules take
    manifest = json.loads(Path(cfg["manifest_file"]).read_text())
    request = logical_restore.RestoreRequest(
        cfg["dsn"],
        manifest,
        target,
        database=cfg["database"],
        jobs=cfg["jobs"],
        workdir=cfg["workdir"],
        # A new database on a hosted-like target is made from its platform template (see bench/restore.py).
        template=cfg.get("template"),
        skip_extensions=cfg.get("skip_extensions", ()),
    )
    started = time.monotonic()
    result = logical_restore.run(request)
    inner = time.monotonic() - started
    return {
        "inner_s": round(inner, 3),
        "changed": result["changed"],
        "database": result["database"],
        "duration_s": result.get("duration_s"),
        "timings": result.get("timings"),
        "objects": result.get("objects"),
    }


def main() -> int:
    cfg = json.load(sys.stdin)
    result = restore(cfg)
    Path(cfg["result_file"]).write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
