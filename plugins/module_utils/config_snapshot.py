"""The config snapshot: which environment variables and secrets production has, and which version of each,
without their values.

For every configured env store (see envstore.py) and every name (given, or all the store holds when it can list
them: dotenv, SSM under the prefix, the Secrets Manager secret's JSON keys; a command hook cannot list), the
snapshot records::

    {"store": <label>, "name": "DATABASE_URL", "present": true, "version": "7" | null, "hmac_sha256": "..." | null}

``version`` is the store's own version id where it has one: the SSM parameter's ``Version``, the Secrets Manager
secret's ``VersionId`` (one secret holds every variable, so all its names share it). ``hmac_sha256`` is
HMAC-SHA256(key, name + NUL + value).

Why HMAC and not SHA-256: a plain SHA-256 of a low-entropy secret (a short password, a 6-digit PIN, a value
picked from a small set) is brute-forced offline by anyone who can read the backup bucket. The HMAC key is NOT
stored in the backup (it comes from the vault); the snapshot holds only ``key_id``, an HMAC of a fixed label, so
two snapshots can tell whether their hashes are comparable. Binding the name into the HMAC keeps two variables
with the same value from showing equal hashes. Without a key (``hashing: none``) only presence and store version
ids are recorded; a dotenv or command store then cannot show which values changed, only which names appeared or
went away. Whoever holds both the key and the bucket can still test guesses: keep the key out of the backup
account.

Snapshots live at ``<prefix>/<source>/config/<snapshot_id>.json``, one per window (the snapshot id is a UTC
timestamp like a backup id, or the logical backup's id), written only if absent: a second run in the window
writes nothing and reports what drifted since.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    catalog,
    envstore,
    envstore_aws,
    envstore_common,
    envstore_dotenv,
    timefmt,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import error_code

SNAPSHOT_VERSION = 1
KEY_ID_LABEL = b"pgdr config snapshot key id"
MIN_KEY_LENGTH = 16
HASHINGS = ("hmac", "none")

# ---------------------------------------------------------------------------------------------------------------
# Layout


def config_prefix(prefix, source):
    catalog.check_source_name(source)
    base = prefix.strip("/")
    return f"{base}/{source}/config/" if base else f"{source}/config/"


def snapshot_key(prefix, source, snapshot_id):
    return f"{config_prefix(prefix, source)}{snapshot_id}.json"


def list_snapshots(target, prefix, source):
    """Snapshot ids, oldest first (only the folder's own files: ``secured/`` holds secure-copy records)."""
    ids = []
    base = config_prefix(prefix, source)
    for key, _size in target.list_keys(base, step="list config snapshots"):
        name = key[len(base) :]
        if "/" not in name and name.endswith(".json") and catalog.BACKUP_ID_RE.match(name[:-5]):
            ids.append(name[:-5])
    return sorted(ids)


def load_snapshot(target, prefix, source, snapshot_id):
    key = snapshot_key(prefix, source, snapshot_id)
    snapshot = target.get_json(key, step="read config snapshot")
    if snapshot is not None and (not isinstance(snapshot, dict) or snapshot.get("kind") != "config"):
        raise DRError("not a config snapshot", step="read config snapshot", subject=target.where(key))
    return snapshot


# ---------------------------------------------------------------------------------------------------------------
# Hashing (pure)


class Hasher:
    def __init__(self, hashing="hmac", key=None):
        if hashing not in HASHINGS:
            raise DRError(f"unknown hashing {hashing!r}", step="configure config snapshot", hint="use hmac or none")
        self.hashing = hashing
        self.key = None
        if hashing == "hmac":
            if not key or len(str(key)) < MIN_KEY_LENGTH:
                raise DRError(
                    f"hashing hmac needs a key of at least {MIN_KEY_LENGTH} characters",
                    step="configure config snapshot",
                    hint="set the HMAC key from the vault (it must not be stored with the backups), "
                    "or set hashing to none to record names and store versions only",
                )
            self.key = str(key).encode()

    def key_id(self):
        if self.key is None:
            return None
        return hmac.new(self.key, KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def digest(self, name, value):
        if self.key is None or value is None:
            return None
        return hmac.new(self.key, name.encode() + b"\0" + str(value).encode(), hashlib.sha256).hexdigest()

    def describe(self):
        if self.key is None:
            return {"algorithm": "none"}
        return {"algorithm": "hmac-sha256", "message": "name NUL value", "key_id": self.key_id()}


# ---------------------------------------------------------------------------------------------------------------
# Reading stores: names, values (only to hash them, never kept) and version ids


def _aws_call(store, step, names, action, fn, **kwargs):
    return store.call(step, names, action, fn, **kwargs)


def read_store(store, names=None, with_values=True):
    """``{NAME: (value or None, version or None)}`` for the names, or for every name the store holds.

    Values are only handed to the hasher; they never reach the snapshot, a result or an error message.
    """
    if names:
        envstore_common.check_names(names, store.label())
    if isinstance(store, envstore_dotenv.DotenvStore):
        current = envstore_dotenv.parse_dotenv(store._text("read env store"))
        names = list(names or current)
        return {n: (current.get(n), None) for n in names}
    if isinstance(store, envstore_aws.SsmStore):
        return _read_ssm(store, names, with_values)
    if isinstance(store, envstore_aws.SecretsManagerStore):
        data, version = store.load_versioned(store.secret_id, "read env store", [])
        if data is None:
            return {n: (None, None) for n in names or []}
        names = list(names or data)
        return {n: (None, None) if data.get(n) is None else (str(data[n]), version) for n in names}
    if not names:
        raise DRError(
            "a command store cannot list its variables",
            step="read env store",
            subject=store.label(),
            hint="list the variables to snapshot in the store's names",
        )
    return {n: (v, None) for n, v in store.read(names).items()}


def _read_ssm(store, names, with_values):
    client = store.client()
    found = {}
    if names:
        params = [store.param(n) for n in names]
        for start in range(0, len(params), 10):
            response = _aws_call(
                store,
                "read env store",
                list(names),
                "ssm:GetParameters",
                client.get_parameters,
                Names=params[start : start + 10],
                WithDecryption=with_values,
            )
            for item in response.get("Parameters", []):
                found[item["Name"]] = item
        return {
            n: (found[store.param(n)].get("Value"), str(found[store.param(n)]["Version"]))
            if store.param(n) in found
            else (None, None)
            for n in names
        }
    token = None
    while True:
        kwargs = {"Path": store.prefix + "/", "Recursive": False, "WithDecryption": with_values}
        if token:
            kwargs["NextToken"] = token
        response = _aws_call(
            store, "list env store", [], "ssm:GetParametersByPath", client.get_parameters_by_path, **kwargs
        )
        for item in response.get("Parameters", []):
            name = item["Name"][len(store.prefix) + 1 :]
            found[name] = (item.get("Value"), str(item["Version"]))
        token = response.get("NextToken")
        if not token:
            return dict(sorted(found.items()))


# ---------------------------------------------------------------------------------------------------------------
# Building, comparing and writing snapshots


def take(stores, hasher, source, snapshot_id, taken_at=None):
    """The snapshot of the given stores: ``stores`` is a list of ``{"store": <settings>, "names": [...] | None,
    "label": optional}``. Returns a dict holding no value."""
    described, variables = [], []
    for spec in stores:
        store = envstore.make_store(spec["store"])
        label = spec.get("label") or store.label()
        current = read_store(store, spec.get("names") or None, with_values=hasher.key is not None)
        described.append({"label": label, "type": store.kind, "location": store.label(), "names": len(current)})
        for name, (value, version) in current.items():
            variables.append(
                {
                    "store": label,
                    "name": name,
                    "present": value is not None or version is not None,
                    "version": version,
                    "hmac_sha256": hasher.digest(name, value),
                }
            )
    return {
        "snapshot_version": SNAPSHOT_VERSION,
        "kind": "config",
        "snapshot_id": snapshot_id,
        "source": source,
        "taken_at": taken_at or timefmt.iso(timefmt.utcnow()),
        "hash": hasher.describe(),
        "stores": described,
        "variables": variables,
    }


def compare(old, new):
    """Which names changed between two snapshots (old -> new), without values.

    Per (store, name): ``added`` (absent -> present), ``removed`` (present -> absent), ``changed`` (the HMACs
    differ when both snapshots share a key, else the store version differs), ``unchanged``, or ``unknown``
    (present in both but nothing comparable: different HMAC keys and no store version).
    """

    def index(snapshot):
        return {(v["store"], v["name"]): v for v in (snapshot or {}).get("variables", [])}

    same_key = (old or {}).get("hash", {}).get("key_id") is not None and old["hash"].get("key_id") == (new or {}).get(
        "hash", {}
    ).get("key_id")
    before, after = index(old), index(new)
    out = {k: [] for k in ("added", "removed", "changed", "unchanged", "unknown")}
    for ident in sorted(set(before) | set(after)):
        a, b = before.get(ident), after.get(ident)
        was, now = bool(a and a["present"]), bool(b and b["present"])
        label = f"{ident[0]}: {ident[1]}"
        if not was and not now:
            out["unchanged"].append(label)
        elif not was:
            out["added"].append(label)
        elif not now:
            out["removed"].append(label)
        elif same_key and a.get("hmac_sha256") and b.get("hmac_sha256"):
            out["changed" if a["hmac_sha256"] != b["hmac_sha256"] else "unchanged"].append(label)
        elif a.get("version") is not None and b.get("version") is not None:
            out["changed" if a["version"] != b["version"] else "unchanged"].append(label)
        else:
            out["unknown"].append(label)
    out["any_change"] = bool(out["added"] or out["removed"] or out["changed"])
    return out


def run(
    target,
    stores,
    prefix,
    source,
    hashing="hmac",
    key=None,
    snapshot_id=None,
    window="daily",
    check_mode=False,
):
    """Take the snapshot of the window and write it unless it exists; compare with the previous snapshot.

    Returns ``{"changed", "snapshot_id", "key", "snapshot", "exists", "drift"?, "previous_id", "changes"?}``.
    ``drift``: when the window's snapshot exists already, what changed since it was taken (nothing is written).
    """
    hasher = Hasher(hashing, key)
    snapshot_id = snapshot_id or catalog.backup_id_for(timefmt.utcnow(), window)
    catalog.parse_backup_id(snapshot_id)
    key_name = snapshot_key(prefix, source, snapshot_id)
    target.check_bucket(step="check backup bucket")
    current = take(stores, hasher, source, snapshot_id)
    existing = load_snapshot(target, prefix, source, snapshot_id)
    earlier = [i for i in list_snapshots(target, prefix, source) if i < snapshot_id]
    previous = load_snapshot(target, prefix, source, earlier[-1]) if earlier else None
    result = {
        "changed": existing is None,
        "snapshot_id": snapshot_id,
        "key": key_name,
        "exists": existing is not None,
        "previous_id": earlier[-1] if earlier else None,
    }
    if existing is not None:
        result["snapshot"] = existing
        result["drift"] = compare(existing, current)
    else:
        result["snapshot"] = current
    if previous is not None:
        result["changes"] = compare(previous, result["snapshot"])
    if existing is not None or check_mode:
        return result
    data = (json.dumps(current, indent=1, sort_keys=True) + "\n").encode()
    try:
        target.put_bytes(key_name, data, step="write config snapshot", if_none_match=True)
    except DRError as exc:
        if error_code(exc.__cause__) not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
            raise
        # Another run wrote the window's snapshot first: that one stands.
        result.update(changed=False, exists=True, snapshot=load_snapshot(target, prefix, source, snapshot_id))
        result["drift"] = compare(result["snapshot"], current)
    return result


def _named(changes):
    parts = []
    for what in ("changed", "added", "removed"):
        if changes.get(what):
            parts.append(f"{what} {', '.join(changes[what])}")
    return "; ".join(parts)


def drift_lines(result):
    """The config drift of a run, by variable name only (never a value): what changed since the previous snapshot
    and, when the window's snapshot existed already, what drifted since it was taken."""
    lines = []
    changes = result.get("changes") or {}
    if changes.get("any_change"):
        lines.append(f"config drift since snapshot {result.get('previous_id')}: {_named(changes)}")
    drift = result.get("drift") or {}
    if drift.get("any_change"):
        lines.append(f"config drift since snapshot {result['snapshot_id']} was taken: {_named(drift)}")
    return lines
