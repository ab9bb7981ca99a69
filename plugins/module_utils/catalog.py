"""The backup set's layout in the bucket, backup ids, manifests, and the listing built from them.

Layout: ``<prefix>/<source>/logical/<backup_id>/{manifest.json, <object files>}``. A backup id is a sortable
UTC timestamp (``20261128T000000Z``), truncated to the schedule window so that a second run inside the
same window finds the backup already taken. The manifest is written last, only if absent: it is the
commit point. A folder without a manifest is an incomplete backup, never offered for restore.
"""

from __future__ import annotations

import datetime as dt
import os
import re

from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

MANIFEST_NAME = "manifest.json"
# 1: data in one pg_dump archive (still restored); 2: data as COPY streams in data objects, and an index object.
MANIFEST_VERSION = 2
BACKUP_ID_RE = re.compile(r"^\d{8}T\d{6}Z$")
WINDOWS = ("daily", "hourly", "every_run")
SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def append_progress(path, text):
    """One timestamped line in a progress file an operator follows with tail -f (nothing when path is empty)."""
    if path:
        folder = os.path.dirname(path)
        if folder and not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{timefmt.iso(timefmt.utcnow())} {text}\n")


def backup_id_for(moment, window):
    """The id of the backup that covers moment under the schedule window."""
    moment = moment.astimezone(dt.UTC)
    if window == "daily":
        moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    elif window == "hourly":
        moment = moment.replace(minute=0, second=0, microsecond=0)
    elif window != "every_run":
        raise DRError(f"unknown backup window {window!r}; expected one of {', '.join(WINDOWS)}", step="plan")
    return timefmt.compact(moment)


def parse_backup_id(backup_id):
    if not BACKUP_ID_RE.fullmatch(backup_id or ""):
        raise DRError(
            f"{backup_id!r} is not a backup id (expected a UTC timestamp like 20261128T000000Z)",
            step="select backup",
            hint="list the backups with playbooks/list_backups.yml",
        )
    try:
        return timefmt.parse_compact(backup_id)
    except ValueError as exc:
        raise DRError(
            f"{backup_id!r} is not a valid UTC timestamp",
            step="select backup",
            hint="list the backups with playbooks/list_backups.yml",
        ) from exc


def check_source_name(source):
    if not SOURCE_RE.fullmatch(source or ""):
        raise DRError(
            f"source name {source!r} is not usable in object keys",
            step="plan",
            hint="use letters, digits, '.', '_' and '-' only",
        )


def source_prefix(prefix, source):
    return f"{prefix.strip('/')}/{source}/logical/" if prefix.strip("/") else f"{source}/logical/"


def backup_prefix(prefix, source, backup_id):
    return f"{source_prefix(prefix, source)}{backup_id}/"


def manifest_key(prefix, source, backup_id):
    return backup_prefix(prefix, source, backup_id) + MANIFEST_NAME


def lock_key(prefix, source):
    return source_prefix(prefix, source) + "_lock.json"


def validate_manifest(manifest, where):
    """Refuse a manifest this version cannot read."""
    if not isinstance(manifest, dict) or "manifest_version" not in manifest:
        raise DRError("not a backup manifest", step="read manifest", subject=where)
    if manifest["manifest_version"] > MANIFEST_VERSION:
        raise DRError(
            f"manifest version {manifest['manifest_version']} is newer than this tool reads ({MANIFEST_VERSION})",
            step="read manifest",
            subject=where,
            hint="upgrade the runbooks to the version that wrote the backup",
        )
    return manifest


def summarize(manifest):
    """The listing row of a complete backup."""
    return {
        "backup_id": manifest["backup_id"],
        "complete": True,
        "source": manifest["source"]["name"],
        "database": manifest["source"].get("database"),
        "server_version": manifest["source"].get("server_version"),
        "started_at": manifest["started_at"],
        "finished_at": manifest["finished_at"],
        "duration_s": manifest["duration_s"],
        "size": sum(o["size"] for o in manifest["objects"]),
        "objects": len(manifest["objects"]),
        "migrations": len(manifest.get("migrations", {}).get("versions", [])),
    }


def check_presence(target, manifest, step="verify backup objects"):
    """Whether every object of a backup is there with the manifest's size: a HEAD each, no data read.

    Returns ``{"verified": bool, "problems": [...], "checked_at": ...}``; each problem is the message of the
    check that failed (``object data of the backup is missing``, ``object data has 12 bytes, the manifest says
    ...``)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils.selection import check_objects_exist

    problems = []
    for obj in manifest["objects"]:
        try:
            check_objects_exist(target, {"objects": [obj]}, step=step)
        except DRError as exc:
            problems.append(f"{exc.message} ({exc.subject})")
    return {"verified": not problems, "problems": problems, "checked_at": timefmt.iso(timefmt.utcnow())}


def require_presence(target, manifest, step="commit manifest"):
    """Refuse to commit a backup whose own objects are not all there (a HEAD each, no data read).

    The backup calls it right before it writes the manifest: an object removed while the backup ran (retention
    taking the folder for a stale one, a person, a lifecycle rule) would otherwise be committed as a restorable
    backup that is not. Raises a DRError naming every missing or short object; returns the check otherwise."""
    found = check_presence(target, manifest, step=step)
    if not found["verified"]:
        raise DRError(
            f"backup {manifest.get('backup_id')} is not committed: its own objects are not all there: "
            + "; ".join(found["problems"]),
            step=step,
            subject=target.where(backup_prefix_of(manifest)),
            hint="something removed them while the backup ran (retention, a lifecycle rule or a person): find out "
            "what, then run the backup again; nothing was committed",
        )
    return found


def backup_prefix_of(manifest):
    """The folder of a backup, from its first object's key."""
    objects = manifest.get("objects") or []
    return objects[0]["key"].rsplit("/", 1)[0] + "/" if objects else ""


def list_backups(target, prefix, source, include_incomplete=True, verify=False):
    """Every backup of a source, newest first: complete ones from their manifests, folders without one as
    incomplete (with their size so far).

    With ``verify`` each complete row also says whether it was checked and found whole (:func:`check_presence`):
    ``verified`` true or false and the ``problems``; without it ``verified`` is None (not checked): a manifest only
    says the backup was committed, not that its objects are still there."""
    rows = []
    base = source_prefix(prefix, source)
    for folder in target.list_common_prefixes(base):
        backup_id = folder[len(base) :].strip("/")
        if not BACKUP_ID_RE.fullmatch(backup_id):
            continue
        manifest = target.get_json(folder + MANIFEST_NAME, step="read manifest")
        if manifest is not None:
            row = summarize(validate_manifest(manifest, target.where(folder + MANIFEST_NAME)))
            row["verified"] = None
            if verify:
                row.update(check_presence(target, manifest))
            rows.append(row)
        elif include_incomplete:
            keys = target.list_keys(folder)
            if not keys:
                continue  # some servers keep an empty folder after its objects are deleted
            rows.append(
                {
                    "backup_id": backup_id,
                    "complete": False,
                    "source": source,
                    "size": sum(size for _unused, size in keys),
                    "objects": len(keys),
                }
            )
    return sorted(rows, key=lambda r: r["backup_id"], reverse=True)


def list_sources(target, prefix):
    """Source names that have a logical/ folder under prefix."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    sources = []
    for folder in target.list_common_prefixes(base):
        name = folder[len(base) :].strip("/")
        if f"{folder}logical/" in target.list_common_prefixes(folder):
            sources.append(name)
    return sources
