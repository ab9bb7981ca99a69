"""Clusters restored by point-in-time recovery (roles/pitr_restore) under <pg_root>/pitr: find and stop them.

They run with archive_mode off, so a fast shutdown never waits for S3; still, stop them before the S3 server and
before removing the sandbox's folders (`down` and `destroy` do not know about them).
"""

from __future__ import annotations

from pathlib import Path

from .common import PG_BIN, run, say

PITR_DIR = "pitr"


def restored_data_dirs(state: dict, under: str | Path | None = None) -> list[Path]:
    """Data folders of restored clusters (folders holding PG_VERSION) below `under`, default <pg_root>/pitr."""
    root = Path(under or Path(state["pg_root"]) / PITR_DIR)
    if not root.exists():
        return []
    return sorted(p.parent for p in root.glob("**/data/PG_VERSION"))


def stop_restored(state: dict, under: str | Path | None = None, timeout: int = 30) -> list[Path]:
    """Stop every running restored cluster (fast, then immediate); returns the data folders that were running."""
    stopped = []
    for data in restored_data_dirs(state, under):
        ctl = [PG_BIN / "pg_ctl", "-D", data]
        if run([*ctl, "status"], as_postgres=True, check=False).returncode != 0:
            continue
        args = ["stop", "-w", "-t", str(timeout)]
        if run([*ctl, *args, "-m", "fast"], as_postgres=True, timeout=timeout + 10, check=False).returncode != 0:
            run([*ctl, *args, "-m", "immediate"], as_postgres=True, timeout=timeout + 10)
        say(f"postgres restored cluster {data}: stopped")
        stopped.append(data)
    return stopped
