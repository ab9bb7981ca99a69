"""Signed manifests: a backup's manifest is signed with a key held outside the bucket, and a restore trusts a
manifest only once its signature verified, its object keys stay inside the backup's own folder, and (where the
immutable copy exists) it is byte-identical to the locked copy.

issue 9.6. Whoever can write the bucket could otherwise edit a manifest so that its data entry points at another
backup's object (with that object's size and digests) and a restore would pass every check.

Keys: Ed25519 (``cryptography``). The private key (PEM, PKCS#8) lives with the backup hosts only (a vault); the
public keys, ``ed25519:<base64 of the 32 raw bytes>`` or PEM, are listed in the inventory as trusted
(``pgdr_manifest_public_keys``); several may be listed while keys are rotated. A key's id is ``ed25519:`` and the
first 16 hex digits of the SHA-256 of its raw bytes.

The signature sits in the manifest itself, so the manifest stays one object written once (the commit point):
``signature = {algorithm: ed25519, key_id, format: pgdr-canonical-json-v1, value: <base64>}`` over the canonical
JSON of every other field (keys sorted, no spaces, ASCII). Any reader holding the manifest as parsed JSON (Ansible
hands it from one module to the next) verifies it the same way.

Unsigned manifests (backups taken before signing was set up, or without a signing key) are refused. The one way past
is a named override: ``allow_unsigned`` must equal that backup's id (``-e allow_unsigned_backup=<backup id>``); the
result then says ``unsigned, allowed by allow_unsigned=<id>``. A manifest whose signature does not verify is refused
with no override.
"""

from __future__ import annotations

import base64
import hashlib
import json

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3_ERRORS, error_code, translate

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported when signing is used
    HAS_CRYPTOGRAPHY = False

ALGORITHM = "ed25519"
FORMAT = "pgdr-canonical-json-v1"
UNSIGNED_HINT = (
    "restore a signed backup; if this backup is known to be genuine (taken before signing was set up), name it: "
    "-e allow_unsigned_backup={backup_id}"
)


def _need(step):
    if not HAS_CRYPTOGRAPHY:
        raise DRError("the cryptography Python package is not installed", step=step, hint="run 'make setup'")


def _raw(public_key):
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key):
    return f"{ALGORITHM}:{hashlib.sha256(_raw(public_key)).hexdigest()[:16]}"


def public_key_text(public_key):
    """The compact form the inventory lists: ed25519:<base64 of the raw 32 bytes>."""
    return f"{ALGORITHM}:{base64.b64encode(_raw(public_key)).decode()}"


def load_private_key(text, step="check signing key"):
    """The Ed25519 private key from its PEM text; never echoes it."""
    _need(step)
    try:
        key = serialization.load_pem_private_key(str(text).strip().encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise DRError(
            "the manifest signing key is not a PEM private key without a passphrase",
            step=step,
            hint="set the signing key (pgdr_manifest_signing_key) to the PEM text of an Ed25519 key: openssl genpkey "
            "-algorithm ed25519",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise DRError(
            "the manifest signing key is not an Ed25519 key",
            step=step,
            hint="make one with: openssl genpkey -algorithm ed25519",
        )
    return key


def parse_public_keys(texts, step="check manifest keys"):
    """{key id: public key} of the trusted keys (ed25519:<base64> or PEM); a malformed one is named by position."""
    _need(step)
    keys = {}
    for index, given in enumerate(texts or ()):
        text = str(given).strip()
        try:
            if text.startswith(f"{ALGORITHM}:"):
                key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text.split(":", 1)[1], validate=True))
            else:
                key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError) as exc:
            raise DRError(
                f"trusted manifest key #{index + 1} ({text[:16]}...) is not an Ed25519 public key",
                step=step,
                hint="list keys as ed25519:<base64 of the 32 raw bytes> or PEM in pgdr_manifest_public_keys",
            ) from exc
        if not isinstance(key, Ed25519PublicKey):
            raise DRError(f"trusted manifest key #{index + 1} is not an Ed25519 key", step=step)
        keys[key_id(key)] = key
    return keys


def canonical(manifest):
    """The bytes a signature covers: every field but the signature, as sorted, compact, ASCII JSON.

    An object entry's ``version_id`` is left out: it is not written by the backup but added by the reader of the
    immutable copy (the locked version its secure-copy record names), after the record's own SHA-256 checks."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    if isinstance(body.get("objects"), list):
        body["objects"] = [
            {k: v for k, v in o.items() if k != "version_id"} if isinstance(o, dict) else o for o in body["objects"]
        ]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sign(manifest, private_key):
    """The manifest with its signature (unchanged when there is no key)."""
    if private_key is None:
        return manifest
    value = private_key.sign(canonical(manifest))
    signature = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "format": FORMAT,
        "value": base64.b64encode(value).decode(),
    }
    return {**manifest, "signature": signature}


def folder_of(prefix, source, backup_id):
    return catalog.backup_prefix(prefix, source, backup_id)


def check_confined(manifest, folder=None, where=None, step="check manifest"):
    """Every object key lies inside the backup's own folder (given, or the folder of the manifest's own source and
    backup id under any prefix); no key climbs out with '..' or empty segments."""
    source = (manifest.get("source") or {}).get("name")
    tail = f"{source}/logical/{manifest.get('backup_id')}/"
    for obj in manifest.get("objects") or []:
        key = str(obj.get("key", ""))
        parts = key.split("/")
        inside = key.startswith(folder) if folder else key[: key.rfind("/") + 1].endswith(tail)
        if not inside or key.endswith("/") or any(p in ("", ".", "..") for p in parts):
            raise DRError(
                f"object {obj.get('name')} of backup {manifest.get('backup_id')} points outside the backup's own "
                f"folder ({folder or '.../' + tail}): {key}",
                step=step,
                subject=where,
                hint="the manifest was edited; restore another backup, or its immutable copy",
            )


def verify(manifest, public_keys, allow_unsigned=None, folder=None, where=None, step="check manifest"):
    """Check a manifest before any of its objects is read. Returns {"signature": ..., "key_id": ...}; raises a
    DRError naming what is wrong otherwise. public_keys: {key id: key} from parse_public_keys()."""
    backup_id = manifest.get("backup_id")
    signature = manifest.get("signature")
    if not signature:
        if allow_unsigned and str(allow_unsigned).strip() == backup_id:
            check_confined(manifest, folder, where, step)
            return {"signature": f"unsigned, allowed by allow_unsigned={backup_id}", "key_id": None}
        raise DRError(
            f"backup {backup_id} has no signature: it was taken before manifest signing was set up, without a "
            "signing key, or its signature was removed",
            step=step,
            subject=where,
            hint=UNSIGNED_HINT.format(backup_id=backup_id),
        )
    if not public_keys:
        raise DRError(
            f"backup {backup_id} is signed but no trusted manifest key is configured, so it cannot be checked",
            step=step,
            subject=where,
            hint="list the public key(s) of the backup hosts' signing key in pgdr_manifest_public_keys",
        )
    if signature.get("algorithm") != ALGORITHM or signature.get("format") != FORMAT:
        raise DRError(
            f"backup {backup_id} is signed with {signature.get('algorithm')}/{signature.get('format')}, which this "
            "version does not check",
            step=step,
            subject=where,
            hint="upgrade the runbooks to the version that took the backup",
        )
    key = public_keys.get(signature.get("key_id"))
    if key is None:
        raise DRError(
            f"backup {backup_id} is signed by key {signature.get('key_id')}, which is not among the trusted keys "
            f"({', '.join(sorted(public_keys))})",
            step=step,
            subject=where,
            hint="add that key's public half to pgdr_manifest_public_keys if it is yours (a rotated key), else treat "
            "the backup as forged and restore another",
        )
    try:
        key.verify(base64.b64decode(signature.get("value", ""), validate=True), canonical(manifest))
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise DRError(
            f"the signature of backup {backup_id}'s manifest does not verify: the manifest was changed after it was "
            "signed",
            step=step,
            subject=where,
            hint="do not restore it; restore another backup, or this one from its immutable copy (-e "
            "from_secondary=true)",
        ) from exc
    check_confined(manifest, folder, where, step)
    return {"signature": "valid", "key_id": signature["key_id"]}


def _locked_manifest_bytes(secondary, key, step):
    """(bytes, version id, versions) of the manifest's oldest version in the Object-Lock bucket (later versions may
    be written over a locked one; the locked original stays underneath), or (None, None, 0) when there is none."""
    try:
        pages = secondary.client.get_paginator("list_object_versions").paginate(Bucket=secondary.bucket, Prefix=key)
        versions = [v for page in pages for v in page.get("Versions", []) if v["Key"] == key]
    except S3_ERRORS as exc:
        if error_code(exc) in ("NoSuchBucket", "404", "NotFound"):
            return None, None, 0
        raise translate(exc, step, secondary.where(key)) from exc
    if not versions:
        return None, None, 0
    # Listed newest first; of versions written in the same second the one listed last is the older.
    oldest = sorted(reversed(versions), key=lambda v: v["LastModified"])[0]
    try:
        body = secondary.client.get_object(Bucket=secondary.bucket, Key=key, VersionId=oldest["VersionId"])["Body"]
        return body.read(), oldest["VersionId"], len(versions)
    except S3_ERRORS as exc:
        raise translate(exc, step, secondary.where(key)) from exc


def _read(target, key, step):
    try:
        return target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
    except S3_ERRORS as exc:
        raise translate(exc, step, target.where(key)) from exc


def _parse(data, where, step):
    try:
        return catalog.validate_manifest(json.loads(data), where)
    except ValueError as exc:
        raise DRError(f"the manifest is not valid JSON: {exc}", step=step, subject=where) from exc


def trusted_manifest(
    primary, prefix, source, backup_id, public_keys, allow_unsigned=None, secondary=None, step="check manifest"
):
    """The manifest a restore may use, checked before any object is read: (manifest, trust).

    The primary manifest's signature and keys are checked. With ``secondary`` (the Object-Lock bucket) the primary
    is compared byte for byte with the locked copy: identical, the primary is used; different, the locked copy is
    used when it verifies (and the result says so), else the restore is refused. ``trust`` says which copy was
    trusted and why."""
    key = catalog.manifest_key(prefix, source, backup_id)
    folder = folder_of(prefix, source, backup_id)
    data = _read(primary, key, step)
    manifest = _parse(data, primary.where(key), step)
    trust = {"trusted": "primary", "manifest_key": key, "locked_copy": None, "warnings": []}
    locked = None
    if secondary is not None:
        locked, version, versions = _locked_manifest_bytes(secondary, key, step)
        if locked is None:
            trust["locked_copy"] = "none (not secured yet, or no immutable copy)"
        else:
            trust["locked_copy"] = f"{secondary.where(key)} version {version}"
            if versions > 1:
                trust["warnings"].append(
                    f"the locked bucket holds {versions} versions of the manifest; the oldest (the locked original) "
                    "was compared"
                )
    if locked is not None and locked != data:
        locked_manifest = _parse(locked, secondary.where(key), step)
        try:
            verdict = verify(locked_manifest, public_keys, allow_unsigned, folder, secondary.where(key), step)
        except DRError as exc:
            exc.message = (
                f"the primary manifest differs from its locked copy, and the locked copy fails its check too: "
                f"{exc.message}"
            )
            raise
        trust.update(verdict, trusted="locked")
        trust["warnings"].append(
            "the primary manifest differs from its locked copy (edited or damaged in the primary bucket): the locked "
            "copy was trusted; objects are still read from the bucket restored from and checked against it"
        )
        return locked_manifest, trust
    trust.update(verify(manifest, public_keys, allow_unsigned, folder, primary.where(key), step))
    if locked is not None:
        trust["trusted"] = "primary (byte-identical to the locked copy)"
    return manifest, trust


def trusted_backup(
    target,
    prefix,
    source,
    backup_id,
    public_keys,
    allow_unsigned=None,
    from_secondary=False,
    primary=None,
    secondary=None,
    step="check manifest",
):
    """The manifest of one backup, read from the bucket and trusted before any object is read, the same way for
    every module that is given only a backup id: (manifest, trust, named_by).

    From the primary bucket (target): trusted_manifest (signature, keys inside the folder, compared with the locked
    copy in ``secondary`` when given). With ``from_secondary`` (target is the Object-Lock bucket): the exact locked
    version its secure-copy record names (``primary``, when given, for backups secured before the locked bucket kept
    its own record), its signature checked; named_by says which record named it (None from the primary)."""
    if not from_secondary:
        manifest, trust = trusted_manifest(
            target, prefix, source, backup_id, public_keys, allow_unsigned, secondary, step
        )
        return manifest, trust, None
    from ansible_collections.pgdr.supabase.plugins.module_utils import immutable

    manifest, _record, info = immutable.load_secured(target, prefix, source, backup_id, primary=primary)
    key = catalog.manifest_key(prefix, source, backup_id)
    trust = {"manifest_key": key, "locked_copy": target.where(key), "warnings": list(info["warnings"])}
    trust.update(
        verify(manifest, public_keys, allow_unsigned, folder_of(prefix, source, backup_id), target.where(key), step),
        trusted=f"locked (as named by {info['trusted']})",
    )
    return manifest, trust, info["trusted"]
