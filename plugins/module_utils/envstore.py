"""Environment stores: one interface over the places an application reads its variables from.

This module is the entry point: :func:`make_store` builds a store from its settings, :func:`ensure` is the operation
of pgdr.supabase.env, :func:`store_spec` the ``store`` option. The interface, masking, plans, diffs and the store
lock are in :mod:`envstore_common`; the kinds in :mod:`envstore_dotenv`, :mod:`envstore_aws`, :mod:`envstore_command`.

A store holds named variables (``SUPABASE_DB_URL``, ``DATABASE_URL``, ...). Four kinds:

``dotenv``
    A file of ``NAME=value`` lines. Comments, blank lines, order, unrelated lines and line endings are kept byte
    for byte; only the lines of the names written change (all of them when a name appears twice), new names are
    appended. Values are written unquoted when they only hold URL-safe characters, else in single quotes, else
    (a value with a single quote or a newline) in double quotes with ``\\``, ``"`` and ``\\n`` escaped. Writes go
    to a temporary file in the same folder, are flushed to disk and renamed over the file (atomic); the file's
    mode and owner are kept, a new file gets mode 600. A missing file reads as empty; a missing folder is an error.
    Settings: ``path``.
``ssm``
    AWS SSM Parameter Store: variable ``NAME`` is parameter ``<prefix>/NAME``, written as ``SecureString`` (with
    ``kms_key_id`` when given; ``secure: false`` writes ``String``). Settings: ``prefix``, ``kms_key_id``,
    ``secure`` and the AWS connection settings.
``secretsmanager``
    AWS Secrets Manager: ONE secret (``secret_id``) holding a JSON object ``{"NAME": "value", ...}``. Writing merges
    into the object, keeping other keys and their order; a missing secret reads as empty and is created on the
    first write (with ``kms_key_id`` when given). Settings: ``secret_id``, ``kms_key_id`` and the AWS settings.
``command``
    A hook for any other store: ``get`` and ``set`` (and optional ``delete``) are argument vectors, run without a
    shell. The variable's name is appended as the last argument (or replaces ``{name}`` in an argument). ``get``
    prints the value on stdout (one trailing newline is dropped) and exits 0, or exits ``absent_rc`` (default 3)
    when the variable is not set; ``set`` reads the value on stdin, never from its command line. Settings:
    ``get``, ``set``, ``delete``, ``absent_rc``, ``env`` (extra environment), ``timeout``.

AWS connection settings: ``region``, ``endpoint_url``, ``access_key``, ``secret_key``, ``session_token``,
``ca_bundle``, ``validate_certs``, ``connect_timeout``, ``max_attempts``.

Values never leave this module in clear except through :meth:`Store.read`: plans hold names and actions, diffs
hold masked values (:func:`mask`), errors name the store and the variable, not the value.
"""

from __future__ import annotations

from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_aws import SecretsManagerStore, SsmStore
from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_command import CommandStore
from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_common import (
    STORE_TYPES,
    check_names,
    is_change,
    masked_diff,
    plan,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_dotenv import DotenvStore
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError


def make_store(spec):
    """A store from its settings dict: ``{"type": "dotenv", "path": ...}``, ``{"type": "ssm", "prefix": ...}``..."""
    if not isinstance(spec, dict) or spec.get("type") not in STORE_TYPES:
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise DRError(
            f"unknown env store type {kind!r}",
            step="configure env store",
            hint=f"set store.type to one of {', '.join(STORE_TYPES)}",
        )
    kind = spec["type"]
    if kind == "dotenv":
        return DotenvStore(spec.get("path"))
    if kind == "ssm":
        return SsmStore(spec)
    if kind == "secretsmanager":
        return SecretsManagerStore(spec)
    return CommandStore(spec)


# ---------------------------------------------------------------------------------------------------------------
# The operation of pgdr.supabase.env


def ensure(store, values, check_mode=False, diff=False):
    """Set the variables to the values: read, plan, write what differs unless check_mode.

    Returns ``{"changed", "plan", "diff"?}``; the plan lists names and actions only.
    """
    check_names(values, store.label())
    values = {k: str(v) for k, v in values.items()}
    current = store.read(list(values))
    steps = plan(current, values)
    changed = is_change(steps)
    result = {"changed": changed, "plan": steps}
    if diff:
        result["diff"] = masked_diff(current, values, f"{store.label()} (current)", f"{store.label()} (desired)")
    if not changed:
        return result
    if check_mode:
        store.preflight()
        return result
    store.write({s["name"]: values[s["name"]] for s in steps if s["action"] != "unchanged"})
    if store.cleaned:
        result["cleaned"] = list(store.cleaned)
    return result


# Argument spec of the ``store`` option, shared by pgdr.supabase.env and pgdr.supabase.promote.
STORE_OPTIONS = {
    "type": {"type": "str", "required": True, "choices": list(STORE_TYPES)},
    "path": {"type": "path"},
    "prefix": {"type": "str"},
    "secret_id": {"type": "str"},
    "kms_key_id": {"type": "str"},
    "secure": {"type": "bool", "default": True},
    "region": {"type": "str"},
    "endpoint_url": {"type": "str"},
    "access_key": {"type": "str", "no_log": True},
    "secret_key": {"type": "str", "no_log": True},
    "session_token": {"type": "str", "no_log": True},
    "ca_bundle": {"type": "path"},
    "validate_certs": {"type": "bool", "default": True},
    "connect_timeout": {"type": "int", "default": 5},
    "max_attempts": {"type": "int", "default": 3},
    "get": {"type": "list", "elements": "str"},
    "set": {"type": "list", "elements": "str"},
    "delete": {"type": "list", "elements": "str"},
    "absent_rc": {"type": "int", "default": 3},
    "env": {"type": "dict", "no_log": True},
    "timeout": {"type": "int", "default": 60},
}


def store_spec():
    return {"type": "dict", "required": True, "options": dict(STORE_OPTIONS)}
