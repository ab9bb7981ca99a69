"""Promote (swap production's connection strings, keeping the old ones) and roll back.

``promote`` writes a rollback record BEFORE it swaps anything, holding the previous values of exactly the names
it swaps, the time, the target's name, the reason and the promoted values' masked form. The record lives next to
the store (see each store's ``default_record_location``):

- dotenv: the sibling file ``<file>.pgdr-rollback.json``, mode 600 (it holds the previous values in clear,
  like the env file itself);
- ssm: parameters under ``<prefix>/_pgdr_rollback/``: ``_record`` (metadata, JSON) and one SecureString per
  previous value;
- secretsmanager: the separate secret ``<name>-pgdr-rollback`` (JSON, previous values included);
- command: through the hook's own ``set``: ``<NAME>__PGDR_PREVIOUS`` per previous value and
  ``PGDR_ROLLBACK_RECORD`` for the metadata.

Record states: ``pending`` (written, swap not finished), ``promoted``, ``rolled_back``. A promote whose values are
already in place changes nothing and leaves the record alone (it never records promoted values as "previous").
A promote that finds a ``pending`` record of the same target (an interrupted run) keeps that record's previous
values, which are the real originals. A new promote over an earlier one records the values it replaces, so a
rollback undoes the last promote only; earlier records stay in ``history`` in masked form.
"""

from __future__ import annotations

from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_common import (
    check_names,
    is_change,
    mask,
    masked,
    masked_diff,
    plan,
    restore_plan,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

RECORD_VERSION = 1
HISTORY_KEPT = 10


def check_confirmation(target_name, confirm, action, how="confirm={target}"):
    """The typed confirmation: it must equal the production target's name exactly. ``how`` says where to type it,
    with ``{target}`` standing for the name."""
    if not target_name:
        raise DRError(
            f"{action} needs the name of the production target",
            step=f"confirm {action}",
            hint="set the target name in the inventory (pgdr_production_target_name)",
        )
    if confirm != target_name:
        said = "no confirmation was given" if not confirm else f"the confirmation {confirm!r} does not match"
        raise DRError(
            f"{action} of {target_name} refused: {said}",
            step=f"confirm {action}",
            subject=f"target {target_name}",
            hint=f"type the target's name exactly: {how.format(target=target_name)}",
        )


def public_record(record):
    """The record without previous values in clear (what modules return and reports show)."""
    if not record:
        return None
    keys = (
        "version",
        "target",
        "state",
        "names",
        "promoted_at",
        "rolled_back_at",
        "reason",
        "initiator",
        "promoted_masked",
        "previous_masked",
    )
    out = {k: record.get(k) for k in keys}
    out["history"] = record.get("history", [])
    return out


def _check_record_target(record, target_name, location):
    if record and record.get("target") != target_name and record.get("state") in ("pending", "promoted"):
        raise DRError(
            f"the rollback record belongs to target {record.get('target')!r}, not {target_name!r}",
            step="read rollback record",
            subject=location,
            hint="check the target name in the inventory; if the record is stale, roll it back under its own name "
            "first or move it away",
        )


def _locked(store, check_mode, purpose, func, *args, **kwargs):
    """Run func holding the store's lock (issue 9.7): two promotes, or a promote and a rollback, never interleave.
    Check mode takes no lock (it writes nothing)."""
    if check_mode:
        return func(*args, **kwargs)
    with store.lock(purpose):
        result = func(*args, **kwargs)
    if store.cleaned:
        result["cleaned"] = list(store.cleaned)
    return result


def promote(store, values, target_name, record_location=None, check_mode=False, **kwargs):
    """Swap the store's values for ``values``, keeping the previous ones in the rollback record."""
    return _locked(
        store,
        check_mode,
        f"promote {target_name}",
        _promote,
        store,
        values,
        target_name,
        record_location,
        check_mode,
        **kwargs,
    )


def rollback(store, target_name, record_location=None, check_mode=False, **kwargs):
    """Put back the values the last promote replaced, and mark the record rolled back."""
    return _locked(
        store,
        check_mode,
        f"rollback {target_name}",
        _rollback,
        store,
        target_name,
        record_location,
        check_mode,
        **kwargs,
    )


def _promote(
    store,
    values,
    target_name,
    record_location=None,
    check_mode=False,
    diff=False,
    reason=None,
    initiator=None,
):
    check_names(values, store.label())
    values = {k: str(v) for k, v in values.items()}
    if not values:
        raise DRError("nothing to promote", step="plan promote", hint="give at least one NAME: value")
    location = record_location or store.default_record_location()
    current = store.read(list(values))
    steps = plan(current, values)
    record = store.load_record(location)
    _check_record_target(record, target_name, location)
    result = {"plan": steps, "record_location": location, "target": target_name}
    if diff:
        result["diff"] = masked_diff(current, values, f"{target_name} (current)", f"{target_name} (promoted)")

    if not is_change(steps):
        if record and record.get("state") == "pending" and not check_mode:
            record["state"] = "promoted"
            store.save_record(location, record)
            result.update(changed=True, msg=f"finished the interrupted promote of {target_name}")
        else:
            result.update(changed=False, msg=f"{target_name} already has these values; nothing to do")
        result["record"] = public_record(record)
        return result

    previous = {name: current.get(name) for name in values}
    resumed = record and record.get("state") == "pending" and set(values) <= set(record.get("previous", {}))
    if resumed:
        previous = {name: record["previous"].get(name) for name in values}
    history = list((record or {}).get("history", []))
    if record and not resumed:
        old = public_record(record)
        old.pop("history", None)
        history = [*history, old][-HISTORY_KEPT:]
    new = {
        "version": RECORD_VERSION,
        "target": target_name,
        "state": "pending",
        "names": list(values),
        "previous": previous,
        "previous_masked": masked(previous),
        "promoted_masked": masked(values),
        "promoted_at": timefmt.iso_seconds(timefmt.utcnow()),
        "rolled_back_at": None,
        "reason": reason,
        "initiator": initiator,
        "history": history,
    }
    changes = {s["name"]: values[s["name"]] for s in steps if s["action"] != "unchanged"}
    result.update(changed=True, record=public_record(new))
    if check_mode:
        store.preflight()
        result["record"]["state"] = "promoted"
        result["msg"] = f"would promote {', '.join(changes)} on {target_name} (previous values kept at {location})"
        return result
    store.save_record(location, new)
    store.write(changes)
    new["state"] = "promoted"
    store.save_record(location, new)
    result["record"] = public_record(new)
    result["msg"] = f"promoted {', '.join(changes)} on {target_name}; previous values kept at {location}"
    return result


def _rollback(store, target_name, record_location=None, check_mode=False, diff=False, reason=None):
    location = record_location or store.default_record_location()
    record = store.load_record(location)
    if not record:
        raise DRError(
            f"no rollback record for {target_name}: nothing was promoted here, or the record was removed",
            step="read rollback record",
            subject=location,
            hint="check the env store and record location in the inventory; without a record, restore the "
            "previous values by hand",
        )
    if record.get("target") != target_name:
        raise DRError(
            f"the rollback record belongs to target {record.get('target')!r}, not {target_name!r}",
            step="read rollback record",
            subject=location,
            hint=f"run the rollback with the target name {record.get('target')!r} if that is the one you mean",
        )
    result = {"record_location": location, "target": target_name}
    previous = record.get("previous") or {}
    names = list(record.get("names") or previous)
    if record.get("state") == "rolled_back":
        result.update(
            changed=False,
            plan=[{"name": n, "action": "unchanged"} for n in names],
            record=public_record(record),
            msg=f"the promote of {record.get('promoted_at')} was already rolled back at {record.get('rolled_back_at')}",
        )
        return result
    current = store.read(names)
    steps = restore_plan(current, {n: previous.get(n) for n in names})
    warnings = [
        f"{n} changed since the promote of {record.get('promoted_at')}; the rollback overwrites it"
        for n in names
        if mask(current.get(n)) != (record.get("promoted_masked") or {}).get(n)
    ]
    result.update(changed=True, plan=steps, warnings=warnings)
    if diff:
        result["diff"] = masked_diff(
            current, {n: previous.get(n) for n in names}, f"{target_name} (current)", f"{target_name} (rolled back)"
        )
    done = dict(
        record, state="rolled_back", rolled_back_at=timefmt.iso_seconds(timefmt.utcnow()), rollback_reason=reason
    )
    if check_mode:
        store.preflight()
        result["record"] = public_record(record)
        result["msg"] = f"would put back {', '.join(names)} on {target_name} as before {record.get('promoted_at')}"
        return result
    sets = {s["name"]: previous[s["name"]] for s in steps if s["action"] in ("add", "change")}
    removes = [s["name"] for s in steps if s["action"] == "remove"]
    if sets:
        store.write(sets)
    if removes:
        store.delete(removes)
    store.save_record(location, done)
    result["record"] = public_record(done)
    result["msg"] = f"rolled back {', '.join(names)} on {target_name} to the values before {record.get('promoted_at')}"
    return result
