"""What the pgdr modules share: argument specs (S3, the backup set, pgBackRest, the check command), the way
the check modules exit, the one error path, and ``long_running()``, which every module that can run for long
calls first: it stops the module cleanly when it is told to (SIGTERM, SIGHUP) or when its controller is gone
(lifeline.py)."""

from __future__ import annotations

import traceback

from ansible_collections.pgdr.supabase.plugins.module_utils import lifeline
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

# A long-running module's error path catches this too: except (Exception, Interrupted) as exc: fail(module, exc).
Interrupted = lifeline.Interrupted

S3_ARGUMENT_SPEC = {
    "bucket": {"type": "str", "required": True},
    "endpoint_url": {"type": "str"},
    "region": {"type": "str", "default": "us-east-1"},
    "access_key": {"type": "str", "no_log": True},
    "secret_key": {"type": "str", "no_log": True},
    "session_token": {"type": "str", "no_log": True},
    "ca_bundle": {"type": "path"},
    "validate_certs": {"type": "bool", "default": True},
    "checksums": {"type": "str", "default": "when_required", "choices": ["when_required", "when_supported"]},
    "sse": {
        "type": "dict",
        "options": {
            "algorithm": {"type": "str", "choices": ["AES256", "aws:kms"]},
            "kms_key_id": {"type": "str"},
        },
    },
}


def s3_spec(**overrides):
    """The S3 options as one nested dict option named ``s3``."""
    options = dict(S3_ARGUMENT_SPEC)
    options.update(overrides)
    return {"type": "dict", "required": True, "options": options}


def optional_s3_spec():
    """The S3 options as one nested dict option that may be omitted (a second bucket: the locked one, or the
    primary one when reading from the locked bucket)."""
    return {"type": "dict", "required": False, "options": dict(S3_ARGUMENT_SPEC)}


def backup_set_spec():
    """Where a source's backups live: the bucket (``s3``), the key prefix and the source's name in the keys."""
    return {
        "source": {"type": "str", "required": True},
        "s3": s3_spec(),
        "prefix": {"type": "str", "default": "backups"},
    }


def manifest_trust_spec():
    """What a module that reads a backup's objects needs to trust its manifest first (signing.py, issue 9.6)."""
    return {
        "manifest_public_keys": {"type": "list", "elements": "str", "default": []},
        "allow_unsigned": {"type": "str"},
    }


def pgbackrest_config_spec():
    """The stanza and the configuration file written by pgdr.supabase.pgbackrest_stanza, for the modules that only
    run pgBackRest."""
    return {
        "stanza": {"type": "str", "required": True},
        "config_file": {"type": "path", "required": True},
    }


def check_command_spec():
    """A team's own check command, run after the built-in checks (pgdr.supabase.smoke, pgdr.supabase.verify_restore)."""
    return {
        "command": {"type": "list", "elements": "str", "default": []},
        "command_cwd": {"type": "path"},
        "command_timeout": {"type": "int", "default": 600},
    }


def exit_checks_skipped(module, would_run, nothing_to, **extra):
    """Check mode before the restore made the database: no check can run; say which ones a real run would make.
    extra goes into the result as it is (for example the pgTAP files and their plans)."""
    module.exit_json(
        changed=False,
        ok=True,
        checks=[],
        failed_checks=[],
        would_run=would_run,
        skipped_reason=f"the database does not exist yet (the restore was only planned); nothing to {nothing_to}",
        msg="check mode: the database does not exist yet; the checks would run after a real restore",
        **extra,
    )


def exit_checks(module, result):
    """End a check module: fail naming the failed checks, else exit; the per-check results are returned either way."""
    failed = result.pop("failed")
    if failed:
        module.fail_json(changed=False, failed_checks=failed, **result)
    module.exit_json(changed=False, failed_checks=failed, **result)


def s3_target(params, **settings):
    """The S3Target of an ``s3`` option; settings (max_attempts, connect_timeout, ...) go to S3Target as they are."""
    from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3Target

    return S3Target(
        params["bucket"],
        endpoint_url=params.get("endpoint_url"),
        region=params.get("region") or "us-east-1",
        access_key=params.get("access_key"),
        secret_key=params.get("secret_key"),
        session_token=params.get("session_token"),
        ca_bundle=params.get("ca_bundle"),
        validate_certs=params.get("validate_certs", True),
        checksums=params.get("checksums") or "when_required",
        **settings,
    )


def secrets_of(module):
    """Every secret value the module was given: the values of all no_log options, nested ones included."""
    return sorted((str(v) for v in getattr(module, "no_log_values", ()) if v), key=len, reverse=True)


def long_running(module):
    """Call first in a module that can run for minutes (issue 9.11): SIGTERM/SIGHUP and the end of the controller
    (ansible-playbook killed with its process group) stop the run through its failure path, so it leaves what any
    failure leaves (no temporary database, no open upload, no work files); the tools it starts stop with it."""
    return lifeline.install()


def warn_cleaned(module, result):
    """Say what this run removed that killed runs had left (work folders, temporary files holding secrets)."""
    for item in result.get("cleaned") or ():
        module.warn(item if item.startswith("removed ") else f"removed {item}, left by a killed run")


def fail(module, exc):
    """The one error path: a DRError becomes a failure with its step, subject and hint; an interruption says what
    stopped the run; anything else becomes a failure with the exception's text and a redacted traceback."""
    secrets = secrets_of(module)
    if isinstance(exc, Interrupted):
        module.fail_json(
            msg=f"[interrupted] the run stopped: {exc}. What it had started was undone as for any failure (temporary "
            "database dropped, uploads aborted, work files removed). Next: run it again",
            error={"step": "interrupted", "subject": None, "hint": "run it again", "message": str(exc)},
        )
    if isinstance(exc, DRError):
        details = exc.to_dict()
        module.fail_json(msg=redact(str(exc), secrets), error={k: redact(v, secrets) for k, v in details.items()})
    module.fail_json(
        msg=redact(f"unexpected error: {exc}", secrets),
        exception=redact(traceback.format_exc(), secrets),
    )
