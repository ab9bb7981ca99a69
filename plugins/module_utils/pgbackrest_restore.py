"""Point-in-time recovery through pgBackRest: a target time restored into a new cluster on a port of its own
(planned, restored, replayed, promoted and marked), a failed attempt cleaned, and the plan and result described.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact
from ansible_collections.pgdr.supabase.plugins.module_utils.pgbackrest import (
    DEFAULT_BIN_DIR,
    PG_USER,
    PgBackRest,
    Repo,
    Settings,
    bin_dir_for,
    cluster_running,
    ensure_dir,
    parse_time,
    pg_ctl,
    postgres_ids,
    psql,
    render_config,
    stop_cluster,
    write_private_file,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.pgbackrest_repo import (
    check_info,
    choose_backup,
    parse_info,
    read_stanza,
    window_text,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.timefmt import iso_exact as iso

# Written into a restored cluster's data folder once it is up and promoted: what was restored, from where, to when.
MARKER = "pgdr-pitr.json"
MARKER_VERSION = 2
# Written next to the data folder when a restore starts, removed when it completes: a folder that holds this and no
# marker is what a failed or killed attempt left, and the next attempt cleans it and restores again.
ATTEMPT = "pgdr-pitr-attempt.json"
# Written last into a restored cluster's postgresql.auto.conf (read after postgresql.conf, so these win).
RESTORED_SETTINGS = """
# --- pgdr: restored cluster (point-in-time recovery); never archives into the source's repository ---
port = {port}
unix_socket_directories = '{socket_dir}'
listen_addresses = '{listen_addresses}'
archive_mode = 'off'
archive_command = ''
"""
# Ports for restored clusters come from below the Linux ephemeral range, like the sandbox's.
PORT_RANGE = (15000, 32000)


def pg_time(value):
    """The form PostgreSQL's recovery_target_time and pgBackRest's --target read: '2026-11-28 21:14:09.123456+00'."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def cluster_name(target):
    """The folder name of a restored cluster: pitr-<the target as a UTC instant>, 20261128T184713Z, with the
    fraction of a second when it has one (20261128T184713.000100Z). Two spellings of one instant share a name;
    two instants never do (the digits of 18:47:13+00:01 and of 18:47:13.0001Z used to be the same)."""
    return f"pitr-{timefmt.compact(parse_time(target), fraction=True)}"


def port_free(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host="127.0.0.1"):
    for _ in range(200):
        port = random.randint(*PORT_RANGE)  # noqa: S311 - spreading ports, not a secret
        if port_free(port, host):
            return port
    raise DRError("no free port found for the restored cluster", step="choose a port", hint="set the port option")


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as fh:
            return "\n".join(fh.read().splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def dir_empty(path):
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


def read_marker(data_dir):
    try:
        with open(os.path.join(data_dir, MARKER)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# Restore to a time into a new cluster


@dataclass
class RestoreRequest:
    stanza: str
    repo: Repo
    target_time: datetime
    data_dir: str
    port: int = 0
    config_file: str | None = None
    work_dir: str | None = None
    socket_dir: str | None = None
    log_file: str | None = None
    listen_addresses: str = "127.0.0.1"
    bin_dir: str | None = None
    timeout: int = 600
    process_max: int = 2
    verify: bool = True
    binary: str = "pgbackrest"
    # The source's superuser DSN: with switch_wal, a target after the last archived commit first forces a WAL
    # switch there (and waits until that segment is archived), so everything committed up to now can be reached.
    source_dsn: str | None = None
    switch_wal: bool = False
    # The restored cluster's superuser, reached over its Unix socket as the postgres OS user (peer or trust, as
    # the source's pg_hba.conf has it); it sets the runbook user's own password.
    admin_user: str = PG_USER
    runbook_user: str | None = None
    runbook_password: str | None = None
    dbname: str = "postgres"

    def __post_init__(self):
        self.data_dir = os.path.abspath(self.data_dir)
        base = os.path.dirname(self.data_dir)
        self.config_file = self.config_file or os.path.join(base, "pgbackrest.conf")
        self.work_dir = self.work_dir or os.path.join(base, "pgbackrest")
        self.socket_dir = self.socket_dir or os.path.join(base, "run")
        self.log_file = self.log_file or os.path.join(base, "log", "postgresql.log")
        self.attempt_file = os.path.join(base, ATTEMPT)
        if self.source_dsn is not None and not str(self.source_dsn).strip():
            self.source_dsn = None

    @property
    def host(self):
        return self.listen_addresses.split(",", maxsplit=1)[0].strip()

    def settings(self):
        w = self.work_dir
        return Settings(
            self.repo,
            lock_path=os.path.join(w, "lock"),
            log_path=os.path.join(w, "log"),
            spool_path=os.path.join(w, "spool"),
            process_max=self.process_max,
        )

    def reader(self):
        """pgBackRest reading the repository through the environment: no file is written (check mode)."""
        opts = dict(self.repo.options())
        opts["log-level-file"] = "off"
        opts["log-level-console"] = "warn"
        return PgBackRest(self.stanza, options=opts, secrets=self.repo.secrets(), binary=self.binary)

    def marker_matches(self, marker):
        return bool(marker) and (
            marker.get("stanza") == self.stanza
            and marker.get("repo") == self.repo.where()
            and parse_time(marker.get("target_time")) == self.target_time
        )

    def secrets(self):
        return [*self.repo.secrets(), self.runbook_password]


def read_attempt(req):
    try:
        with open(req.attempt_file) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def force_wal_switch(dsn, timeout=120):
    """pg_switch_wal() on the source, then wait until the segment it closed is archived. Everything committed
    before the returned moment (Unix seconds) is then in the repository."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    step = "force a WAL switch on the source"
    with pg.connect(dsn, step=step, application_name="pgdr pitr restore", autocommit=True) as conn:
        switched_at = float(conn.execute("select extract(epoch from clock_timestamp())").fetchone()[0])
        try:
            segment = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()[0]
        except pg.psycopg.Error as exc:
            raise DRError(
                f"pg_switch_wal() failed on the source: {str(exc).strip().splitlines()[0]}",
                step=step,
                subject=pg.describe_dsn(dsn),
                hint="give a superuser DSN of the source (pitr_restore_source_dsn), or turn the switch off and pick "
                "a time within the restorable window",
            ) from None
        deadline = time.monotonic() + timeout
        while True:
            archived, failed = conn.execute(
                "select last_archived_wal, last_failed_wal from pg_stat_archiver"
            ).fetchone()
            if (archived or "") >= segment:
                break
            if time.monotonic() > deadline:
                raise DRError(
                    f"WAL segment {segment} was not archived within {timeout} s after the switch"
                    + (f" (the last failed segment is {failed})" if failed else ""),
                    step=step,
                    subject=pg.describe_dsn(dsn),
                    hint="check archiving on the source (playbooks/pitr_info.yml, the PostgreSQL log), then run the "
                    "same command again",
                )
            time.sleep(0.3)
    return {"switched_at": iso(switched_at), "switched_at_ts": switched_at, "segment": segment}


def _read_reachable(req, reader, bin_dir):
    summary = read_stanza(reader, req.repo.where())
    moment, summary["last_commit_lsn"], summary["last_commit_segment"] = reader.last_archived_commit(
        summary["archive"], bin_dir
    )
    summary["last_commit_at"] = moment
    summary["last_commit_ts"] = moment.timestamp() if moment else None
    return summary


def restore_plan(req, check_mode=False):
    """What a restore run does: 'none' (restored, up and promoted already), 'start' (restored, stopped) or 'restore'
    (with the base backup, the WAL range, the reachable window and the time replay stops at). Raises for a data
    folder that holds something else. A folder a failed or killed attempt left (its attempt file, no marker) is
    cleaned by the restore (``clean_failed``). With switch_wal and the source's DSN, a target after the last
    archived commit forces a WAL switch on the source first (only planned in check mode)."""
    marker = read_marker(req.data_dir)
    plan = {"data_dir": req.data_dir, "target_time": iso(req.target_time), "stanza": req.stanza}
    if req.marker_matches(marker):
        running = cluster_running(bin_dir_for(req.data_dir, req.bin_dir), req.data_dir)
        plan.update(
            action="none" if running else "start",
            port=marker["port"],
            backup=marker.get("backup"),
            wal_range=marker.get("wal_range"),
            window=marker.get("window"),
            point_in_time=marker.get("point_in_time") or {},
            marker=marker,
        )
        if running and req.runbook_user and req.runbook_password:
            plan["runbook_login"] = "works" if runbook_login_works(req, marker["port"]) else "refused"
            if plan["runbook_login"] == "refused":
                plan["action"] = "password"
        return plan
    attempt = read_attempt(req)
    if not dir_empty(req.data_dir) and not (attempt and not marker):
        other = ""
        if marker:
            other = f" (it holds a restore of {marker.get('target_time')} from stanza {marker.get('stanza')})"
        raise DRError(
            f"the data folder exists and is not empty{other}; a restore never writes over anything",
            step="check the new data folder",
            subject=req.data_dir,
            hint="choose a new cluster name or data folder, or remove that one after checking it is not needed",
        )
    reader = req.reader()
    summary = parse_info(reader.info())
    check_info(summary, req.repo.where())
    bin_dir = req.bin_dir or DEFAULT_BIN_DIR.format(major=summary.get("pg_version") or "15")
    summary = _read_reachable(req, reader, bin_dir)
    target_ts = req.target_time.timestamp()
    switch = None
    last = summary["last_commit_ts"]
    reachable = window_text(summary)
    if (last is None or target_ts > last) and req.switch_wal and req.source_dsn and target_ts <= time.time():
        if check_mode:
            switch = {"planned": True}
            summary = dict(summary, last_commit_ts=target_ts)  # what the switch is for; the real run re-reads
        else:
            switch = force_wal_switch(req.source_dsn, min(req.timeout, 300))
            summary = _read_reachable(req, reader, bin_dir)
            last = summary["last_commit_ts"]
            reachable = window_text(summary)
    # Replay by time stops only before a transaction that ended after the target: at the last archived commit
    # itself, or after it, there is none, so replay stops by LSN right after that commit instead. That is the state
    # at the target when the target is that commit's time, or when a WAL switch after the target proves that no
    # transaction ended between that commit and the target.
    stop_lsn, note = None, None
    if not (switch and switch.get("planned")) and summary["last_commit_at"] is not None:
        if req.target_time == summary["last_commit_at"]:
            stop_lsn = summary["last_commit_lsn"]
        elif switch and last < target_ts <= switch["switched_at_ts"]:
            stop_lsn = summary["last_commit_lsn"]
            note = (
                f"no transaction ended between the last archived commit {iso(summary['last_commit_at'])} and the "
                f"target {iso(req.target_time)} (WAL switched on the source at {switch['switched_at']} and archived):"
                " replay stops right after that commit, which is the state at the target"
            )
    after_hint = (
        "pick a time within the window; or let the run force a WAL switch on the source first "
        "(pitr_restore_switch_wal: true with pitr_restore_source_dsn, a superuser DSN of the source), or wait for "
        "the source's archive_timeout; then run the same command again"
    )
    effective = summary["last_commit_at"] if stop_lsn else req.target_time
    backup, window = choose_backup(summary, effective, after_hint=after_hint)
    if switch and switch.get("planned"):
        window = f"{reachable}; the WAL switch makes everything committed until then reachable"
        note = "would force a WAL switch on the source first (the target is after the last archived commit)"
    plan.update(
        action="restore",
        port=req.port or None,
        backup=backup,
        wal_range={"from": backup["wal_start"], "to": summary["archive"]["max"]},
        window=window,
        restore_to=iso(effective),
        stop_lsn=stop_lsn,
        last_archived_commit_at=iso(summary["last_commit_ts"]) if not (switch and switch.get("planned")) else None,
        wal_switch={k: v for k, v in switch.items() if k != "switched_at_ts"} if switch else None,
        note=note,
        newest_wal_at=summary["newest_wal_at"],
        system_id=summary["system_id"],
        verify=req.verify,
        clean_failed=bool(attempt) and not marker,
        failed_attempt=attempt if attempt and not marker else None,
        bin_dir=bin_dir,
    )
    return plan


def wait_promoted(req, bin_dir, port, deadline):
    """Poll until the cluster is out of recovery; fail early when the server stopped (a failed recovery)."""
    while True:
        rc, out, _ = psql(bin_dir, req.socket_dir, port, "select pg_is_in_recovery()", user=req.admin_user)
        if rc == 0 and out == "f":
            return
        if not cluster_running(bin_dir, req.data_dir):
            log = tail(req.log_file)
            raise DRError(
                f"the restored cluster stopped during recovery:\n{log}",
                step="replay WAL",
                subject=req.data_dir,
                hint=recovery_hint(log, "read the log lines above"),
            )
        if time.monotonic() > deadline:
            raise DRError(
                f"recovery did not finish within {req.timeout} s (pg_is_in_recovery() is still true)",
                step="replay WAL",
                subject=req.data_dir,
                hint=f"follow {req.log_file}; raise the timeout for a long WAL range",
            )
        time.sleep(0.3)


def start_cluster(req, bin_dir, port):
    proc = pg_ctl(
        bin_dir,
        req.data_dir,
        "start",
        "-w",
        "-t",
        str(req.timeout),
        "-l",
        req.log_file,
        timeout=req.timeout + 30,
    )
    if proc.returncode != 0 and not cluster_running(bin_dir, req.data_dir):
        raise DRError(
            f"the restored cluster did not start on port {port}:\n{tail(req.log_file)}",
            step="start the restored cluster",
            subject=req.data_dir,
            hint=recovery_hint(
                tail(req.log_file), "read the log; a port in use or a failed recovery are the usual causes"
            ),
        )


def recovery_hint(log, default):
    """What to do next, from the restored cluster's log."""
    if "recovery ended before configured recovery target was reached" in log:
        return (
            "the archived WAL ends before the target time (nothing committed after it has been archived yet, as on "
            "a quiet database): pick an earlier time, or wait for the next archived WAL and run the same command again"
        )
    return default


def scram_verifier(password, salt=None, iterations=4096):
    """A SCRAM-SHA-256 verifier of password, as PostgreSQL stores it: ALTER ROLE ... PASSWORD with it sends no
    plaintext to the server (nor to its log)."""
    import base64
    import hashlib
    import hmac

    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data):
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def runbook_login_works(req, port):
    """Whether the runbook user logs in over TCP with its own password."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    try:
        with pg.psycopg.connect(
            host=req.host,
            port=port,
            user=req.runbook_user,
            password=req.runbook_password,
            dbname=req.dbname,
            connect_timeout=5,
            application_name="pgdr pitr restore",
        ):
            return True
    except pg.psycopg.OperationalError:
        return False


def set_runbook_password(req, bin_dir, port):
    """Give the runbook user of the restored cluster its own password (the source's no longer opens it)."""
    from psycopg import sql

    statement = (
        sql.SQL("alter role {} password {}")
        .format(sql.Identifier(req.runbook_user), sql.Literal(scram_verifier(req.runbook_password)))
        .as_string(None)
    )
    rc, _, err = psql(bin_dir, req.socket_dir, port, None, user=req.admin_user, stdin=statement)
    if rc != 0:
        raise DRError(
            f"cannot set the runbook user's password on the restored cluster: {redact(err, req.secrets())[:300]}",
            step="set the restored cluster's password",
            subject=f"{req.data_dir}, role {req.runbook_user}",
            hint="pitr_restore_admin_user must be a superuser of the source that the postgres OS user reaches over "
            "the Unix socket (peer or trust in its pg_hba.conf), and pitr_restore_user a role of the source",
        )
    if not runbook_login_works(req, port):
        raise DRError(
            f"the restored cluster refuses {req.runbook_user} over TCP with its new password",
            step="set the restored cluster's password",
            subject=f"{req.host}:{port}",
            hint="check the restored cluster's pg_hba.conf (a copy of the source's): it must allow password logins "
            "from this host",
        )


def forget_repository(req):
    """After promotion the cluster needs the repository no more: remove the configuration file (the S3 keys and
    the cipher passphrase) and the restore_command that names it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(req.config_file)
    auto = os.path.join(req.data_dir, "postgresql.auto.conf")
    with contextlib.suppress(FileNotFoundError):
        with open(auto) as fh:
            lines = fh.read().splitlines()
        kept = [
            f"# {line}  (removed by pgdr after recovery)" if line.strip().startswith("restore_command") else line
            for line in lines
        ]
        if kept != lines:
            uid, gid = postgres_ids()
            with open(auto, "w") as fh:
                fh.write("\n".join(kept) + "\n")
            if os.geteuid() == 0:
                os.chown(auto, uid, gid)


def clean_failed(req, bin_dir):
    """Stop and empty what a failed attempt left in the data folder (never a completed restore: it has a marker),
    and remove the repository's configuration file."""
    if read_marker(req.data_dir):
        return
    stop_cluster(req.data_dir, bin_dir)
    if os.path.isdir(req.data_dir):
        for name in os.listdir(req.data_dir):
            path = os.path.join(req.data_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(req.config_file)


def point_in_time(req, plan, last_xact, timeline):
    """What the record says about the moment restored: the target, where replay stopped, the last replayed commit,
    the timeline, the base backup, and the RPO relative to the target (target minus the last replayed commit)."""
    rpo = None
    if last_xact:
        rpo = round(max(0.0, req.target_time.timestamp() - parse_time(last_xact).timestamp()), 3)
    return {
        "target_time": iso(req.target_time),
        "restored_to": plan.get("restore_to") or iso(req.target_time),
        "stopped_by": f"lsn {plan['stop_lsn']}" if plan.get("stop_lsn") else "time",
        "last_replayed_commit_at": last_xact or None,
        "timeline": timeline,
        "base_backup": (plan.get("backup") or {}).get("label"),
        "base_backup_type": (plan.get("backup") or {}).get("type"),
        "window": plan.get("window"),
        "last_archived_commit_at": plan.get("last_archived_commit_at"),
        "wal_switch": plan.get("wal_switch"),
        "note": plan.get("note"),
        "rpo_s": rpo,
    }


def restore(req, plan):
    """Carry out a plan from restore_plan(); returns the result (timings, the cluster's port and socket)."""
    started = time.monotonic()
    result = {"plan": plan, "changed": plan["action"] != "none", "data_dir": req.data_dir}
    port = plan.get("port") or req.port
    if plan["action"] in ("none", "password"):
        bin_dir = bin_dir_for(req.data_dir, req.bin_dir)
        if plan["action"] == "password":
            set_runbook_password(req, bin_dir, port)
        result.update(port=port, marker=plan["marker"], point_in_time=plan["point_in_time"])
        return result
    if plan["action"] == "start":
        bin_dir = bin_dir_for(req.data_dir, req.bin_dir)
        if not port_free(port):
            raise DRError(
                f"port {port} of the restored cluster is taken by another program",
                step="start the restored cluster",
                subject=req.data_dir,
                hint="stop that program, or restore into a new folder",
            )
        start_cluster(req, bin_dir, port)
        wait_promoted(req, bin_dir, port, time.monotonic() + req.timeout)
        if req.runbook_user and req.runbook_password and not runbook_login_works(req, port):
            set_runbook_password(req, bin_dir, port)
        result.update(port=port, marker=plan["marker"], point_in_time=plan["point_in_time"])
        result["timings"] = {"start_s": round(time.monotonic() - started, 2)}
        return result

    bin_dir = plan.get("bin_dir") or bin_dir_for(req.data_dir, req.bin_dir)
    port = port or pick_port()
    if not port_free(port):
        raise DRError(
            f"port {port} is in use", step="choose a port", subject=req.data_dir, hint="choose another port or 0"
        )
    timings = {}
    if plan.get("clean_failed"):
        clean_failed(req, bin_dir)
        result["cleaned_failed_attempt"] = plan.get("failed_attempt")
    ensure_dir(os.path.dirname(req.data_dir))
    write_private_file(
        req.attempt_file,
        json.dumps(
            {
                "target_time": iso(req.target_time),
                "stanza": req.stanza,
                "started_at": iso(time.time()),
            }
        )
        + "\n",
    )
    try:
        marker = _restore_files_and_replay(req, plan, bin_dir, port, timings, started)
    except BaseException as exc:
        clean_failed(req, bin_dir)
        if isinstance(exc, DRError):
            exc.hint = (exc.hint or "read the message above") + (
                "; the failed attempt's data folder was stopped and emptied (its log stays): run the same command "
                "again once the cause is fixed"
            )
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(req.attempt_file)
    result.update(port=port, marker=marker, timings=timings, point_in_time=marker["point_in_time"])
    result["last_replayed_transaction_at"] = marker["point_in_time"]["last_replayed_commit_at"]
    result["timeline"] = marker["point_in_time"]["timeline"]
    return result


def _restore_files_and_replay(req, plan, bin_dir, port, timings, started):
    if req.verify:
        t0 = time.monotonic()
        report = req.reader().verify()
        timings["verify_s"] = round(time.monotonic() - t0, 2)
        if not report["ok"]:
            raise DRError(
                "pgbackrest verify found damage in the repository: " + "; ".join(report["problems"])[:1500],
                step="verify the repository",
                subject=req.repo.where(),
                hint="restore from another backup or repository; do not trust this one until the cause is found",
            )
    settings = req.settings()
    for folder in [*settings.folders(), req.socket_dir, os.path.dirname(req.log_file)]:
        ensure_dir(folder)
    ensure_dir(req.data_dir)
    # The repository's keys are in this file only while the files are restored and WAL is replayed.
    write_private_file(
        req.config_file, render_config(settings, req.stanza, req.data_dir, port, pg_socket_path=req.socket_dir)
    )
    try:
        tool = PgBackRest(req.stanza, config_file=req.config_file, secrets=req.repo.secrets(), binary=req.binary)
        t0 = time.monotonic()
        tool.run(
            "restore",
            f"--set={plan['backup']['label']}",
            *(
                ["--type=lsn", f"--target={plan['stop_lsn']}"]
                if plan.get("stop_lsn")
                else ["--type=time", f"--target={pg_time(req.target_time)}"]
            ),
            "--target-action=promote",
            "--archive-mode=off",
            step="restore the base backup",
            timeout=req.timeout,
        )
        timings["restore_s"] = round(time.monotonic() - t0, 2)
        with open(os.path.join(req.data_dir, "postgresql.auto.conf"), "a") as fh:
            fh.write(
                RESTORED_SETTINGS.format(port=port, socket_dir=req.socket_dir, listen_addresses=req.listen_addresses)
            )
        t0 = time.monotonic()
        start_cluster(req, bin_dir, port)
        wait_promoted(req, bin_dir, port, time.monotonic() + req.timeout)
        timings["replay_s"] = round(time.monotonic() - t0, 2)
    finally:
        forget_repository(req)
    rc, out, _ = psql(
        bin_dir,
        req.socket_dir,
        port,
        "select coalesce(to_char(pg_last_xact_replay_timestamp() at time zone 'UTC',"
        " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''),"
        " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
        user=req.admin_user,
    )
    last_xact, timeline = [*out.split("|"), "", ""][:2] if rc == 0 else ("", "")
    if plan.get("stop_lsn"):
        # Stopping by LSN right after that commit, PostgreSQL does not count it in pg_last_xact_replay_timestamp()
        # (it checks the LSN first), though it replayed it: the commit's own time is what was restored.
        last_xact = plan["restore_to"]
    if req.runbook_user and req.runbook_password:
        set_runbook_password(req, bin_dir, port)
    timings["total_s"] = round(time.monotonic() - started, 2)
    marker = {
        "version": MARKER_VERSION,
        "stanza": req.stanza,
        "repo": req.repo.where(),
        "target_time": iso(req.target_time),
        "backup": plan["backup"],
        "wal_range": plan["wal_range"],
        "window": plan["window"],
        "port": port,
        "socket_dir": req.socket_dir,
        "restored_at": iso(time.time()),
        "last_replayed_transaction_at": last_xact or None,
        "point_in_time": point_in_time(req, plan, last_xact, int(timeline) if timeline.strip().isdigit() else None),
        "timings": timings,
    }
    write_private_file(os.path.join(req.data_dir, MARKER), json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return marker


def describe_plan(plan):
    """One line for check mode and reports."""
    if plan["action"] == "none":
        return f"{plan['data_dir']} holds the restore of {plan['target_time']}, up and promoted; nothing to do"
    if plan["action"] == "password":
        return f"{plan['data_dir']} holds the restore of {plan['target_time']}; would set the runbook user's password"
    if plan["action"] == "start":
        return f"{plan['data_dir']} holds the restore of {plan['target_time']}; would start it on port {plan['port']}"
    b = plan["backup"]
    port = plan["port"] or "a free port"
    to = plan["target_time"]
    if plan.get("restore_to") and plan["restore_to"] != plan["target_time"]:
        to = f"{plan['restore_to']} (the state at {plan['target_time']})"
    text = (
        f"would restore {b['type']} backup {b['label']} (ended {b['stop']}) and replay WAL {plan['wal_range']['from']}"
        f" .. {plan['wal_range']['to']} up to {to} into {plan['data_dir']} on {port}"
        f" (restorable window {plan['window']})"
    )
    if plan.get("clean_failed"):
        text += "; would first clean the folder a failed attempt left"
    if plan.get("note"):
        text += f"; {plan['note']}"
    return text


def describe_result(result):
    plan = result["plan"]
    if plan["action"] == "none":
        return describe_plan(plan)
    if plan["action"] == "password":
        return f"set the runbook user's password on the restore of {plan['target_time']} in {plan['data_dir']}"
    t = result.get("timings") or {}
    if plan["action"] == "start":
        return f"started the restore of {plan['target_time']} in {plan['data_dir']} on port {result['port']}"
    point = result.get("point_in_time") or {}
    text = (
        f"restored {plan['backup']['label']} + WAL to {plan['target_time']} into {plan['data_dir']}, promoted, on port "
        f"{result['port']} (restore {t.get('restore_s')} s, replay {t.get('replay_s')} s, total {t.get('total_s')} s);"
        f" last replayed commit {point.get('last_replayed_commit_at') or 'none'}, timeline {point.get('timeline')}"
    )
    if plan.get("note"):
        text += f"; {plan['note']}"
    return text
