"""The ``command`` store: a hook for any other store through ``get``/``set``/``delete`` argument vectors run
without a shell, the value on stdin or stdout, never on a command line.
"""

from __future__ import annotations

import json
import os
import subprocess

from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_common import Store
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError


class CommandStore(Store):
    kind = "command"

    def __init__(self, settings):
        self.get_argv = settings.get("get") or []
        self.set_argv = settings.get("set") or []
        self.delete_argv = settings.get("delete") or []
        if not self.get_argv or not self.set_argv:
            raise DRError(
                "a command store needs 'get' and 'set' argument lists",
                step="configure env store",
                hint="set store.get and store.set, e.g. get: [/usr/local/bin/envctl, get]",
            )
        self.absent_rc = settings.get("absent_rc", 3)
        self.env = {str(k): str(v) for k, v in (settings.get("env") or {}).items()}
        self.timeout = settings.get("timeout") or 60

    def label(self):
        return f"command store {self.get_argv[0]}"

    @staticmethod
    def argv(base, name):
        if any("{name}" in arg for arg in base):
            return [str(arg).replace("{name}", name) for arg in base]
        return [*map(str, base), name]

    def run(self, base, name, step, stdin=None, secrets=()):
        argv = self.argv(base, name)
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                env={**os.environ, **self.env},
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise self.error(
                f"hook {argv[0]} not found", step, [name], hint="install the hook or fix the store's argv"
            ) from exc
        except PermissionError as exc:
            raise self.error(
                f"hook {argv[0]} is not executable", step, [name], hint="chmod +x the hook or fix the store's argv"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise self.error(
                f"hook {' '.join(argv[:-1])} did not finish within {self.timeout} s",
                step,
                [name],
                hint="check what the hook waits for, or raise store.timeout",
            ) from exc
        return proc

    def hook_error(self, proc, base, name, step, secrets=()):
        tail = (proc.stderr or "").strip()[-500:]
        return self.error(
            f"hook {' '.join(map(str, base))} exited {proc.returncode}" + (f": {tail}" if tail else ""),
            step,
            [name],
            hint="run the hook by hand with the same arguments and fix what it reports",
            values=secrets,
        )

    def get(self, name, step="read env store"):
        proc = self.run(self.get_argv, name, step)
        if proc.returncode == self.absent_rc:
            return None
        if proc.returncode != 0:
            raise self.hook_error(proc, self.get_argv, name, step, [proc.stdout])
        out = proc.stdout
        return out[:-1] if out.endswith("\n") else out

    def set(self, name, value, step="write env store"):
        proc = self.run(self.set_argv, name, step, stdin=str(value))
        if proc.returncode != 0:
            raise self.hook_error(proc, self.set_argv, name, step, [value])

    def remove(self, name, step="write env store"):
        if not self.delete_argv:
            raise self.error(
                "the variable must be removed but the store has no 'delete' hook",
                step,
                [name],
                hint="add store.delete (argv) or remove the variable by hand",
            )
        proc = self.run(self.delete_argv, name, step)
        if proc.returncode not in (0, self.absent_rc):
            raise self.hook_error(proc, self.delete_argv, name, step)

    def read(self, names):
        return {n: self.get(n) for n in names}

    def write(self, values):
        for name, value in values.items():
            self.set(name, value)

    def delete(self, names):
        for name in names:
            self.remove(name)

    # Record: <NAME>__PGDR_PREVIOUS holds each previous value (through the hook's own set), PGDR_ROLLBACK_RECORD
    # the metadata (JSON); an absent previous value is stored as the record's absent_before list, not as a variable.
    # The location is the metadata variable's name.
    def default_record_location(self):
        return "PGDR_ROLLBACK_RECORD"

    def load_record(self, location):
        text = self.get(location, "read rollback record")
        if text is None:
            return None
        record = json.loads(text)
        absent = set(record.get("absent_before", []))
        record["previous"] = {
            n: (None if n in absent else self.get(f"{n}__PGDR_PREVIOUS", "read rollback record"))
            for n in record.get("names", [])
        }
        return record

    def save_record(self, location, record):
        record = dict(record)
        previous = record.pop("previous")
        for name, value in previous.items():
            if value is not None:
                self.set(f"{name}__PGDR_PREVIOUS", value, "write rollback record")
        record["absent_before"] = [n for n, v in previous.items() if v is None]
        self.set(location, json.dumps(record, sort_keys=True), "write rollback record")
