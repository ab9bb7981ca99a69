"""The guards' pure parts (issue 9): manifest signing, the controller a module watches, work-folder sweeping,
production identities. The sandbox tests prove them against the real parts; these pin the rules."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.pgdr.supabase.plugins.module_utils import identity, lifeline, signing, workfolder
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

MANIFEST = {
    "manifest_version": 1,
    "backup_id": "20261128T000000Z",
    "source": {"name": "production", "system_identifier": "7000000000000000001", "database": "postgres"},
    "duration_s": 1.25,
    "objects": [
        {"name": "roles", "key": "backups/production/logical/20261128T000000Z/roles.sql.zst", "size": 10},
        {"name": "data", "key": "backups/production/logical/20261128T000000Z/data.pgdump.zst", "size": 20},
    ],
}
FOLDER = "backups/production/logical/20261128T000000Z/"


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def keys(key):
    return signing.parse_public_keys([signing.public_key_text(key.public_key())])


def pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_a_signed_manifest_verifies_after_a_json_round_trip(key, keys):
    signed = signing.sign(MANIFEST, signing.load_private_key(pem(key)))
    again = json.loads(json.dumps(signed, indent=2))  # as stored, and as Ansible hands it on
    assert signing.verify(again, keys, folder=FOLDER) == {"signature": "valid", "key_id": signed["signature"]["key_id"]}


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["objects"][1].update(size=21),
        lambda m: m["source"].update(system_identifier="1"),
        lambda m: m.update(duration_s=1.5),
        lambda m: m["signature"].update(value=m["signature"]["value"][:-4] + "AAA="),
    ],
)
def test_any_edit_breaks_the_signature(key, keys, edit):
    signed = copy.deepcopy(signing.sign(MANIFEST, key))
    edit(signed)
    with pytest.raises(DRError, match="does not verify"):
        signing.verify(signed, keys)


def test_unsigned_needs_the_backup_named(keys):
    with pytest.raises(DRError, match="has no signature") as info:
        signing.verify(MANIFEST, keys)
    assert "-e allow_unsigned_backup=20261128T000000Z" in str(info.value)
    with pytest.raises(DRError, match="has no signature"):
        signing.verify(MANIFEST, keys, allow_unsigned="20261127T000000Z")
    assert signing.verify(MANIFEST, keys, allow_unsigned="20261128T000000Z")["signature"].startswith("unsigned")


@pytest.mark.parametrize(
    "bad_key",
    [
        "backups/production/logical/20261127T000000Z/data.pgdump.zst",
        "backups/production/logical/20261128T000000Z/../20261127T000000Z/data.pgdump.zst",
        "backups/other/logical/20261128T000000Z/data.pgdump.zst",
        "backups/production/logical/20261128T000000Z/",
    ],
)
def test_keys_are_confined_to_the_folder(key, keys, bad_key):
    forged = copy.deepcopy(MANIFEST)
    forged["objects"][1]["key"] = bad_key
    for folder in (FOLDER, None):
        with pytest.raises(DRError, match="points outside the backup's own folder"):
            signing.verify(signing.sign(forged, key), keys, folder=folder)


def test_key_problems_are_named_without_the_key(key):
    with pytest.raises(DRError, match="not a PEM private key") as info:
        signing.load_private_key("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")
    assert "nope" not in str(info.value)
    with pytest.raises(DRError, match="trusted manifest key #2"):
        signing.parse_public_keys([signing.public_key_text(key.public_key()), "ed25519:short"])
    with pytest.raises(DRError, match="no trusted manifest key is configured"):
        signing.verify(signing.sign(MANIFEST, key), {})


def entry(pid, argv):
    return (pid, "1", argv)


@pytest.mark.parametrize(
    ("chain", "watched"),
    [
        # ansible-playbook, local connection: sh wrappers, the worker, ansible-playbook, then the user's shell.
        (
            [
                entry(5, ["/bin/sh", "-c", "python AnsiballZ_x.py && sleep 0"]),
                entry(4, ["/bin/sh", "-c", "..."]),
                entry(3, ["/usr/bin/python3", "/usr/bin/ansible-playbook", "site.yml"]),
                entry(2, ["/usr/bin/python3", "/usr/bin/ansible-playbook", "site.yml"]),
                entry(1, ["-bash"]),
            ],
            [3, 2],
        ),
        # become: su and sudo are skipped like shells.
        (
            [entry(7, ["/bin/sh", "-c", "x"]), entry(6, ["su", "postgres"]), entry(3, ["ansible-playbook"])],
            [3],
        ),
        # over ssh: no ansible process above the module: the session it runs in.
        ([entry(9, ["/bin/sh", "-c", "x"]), entry(8, ["sshd: deploy@notty"]), entry(1, ["/sbin/init"])], [8]),
    ],
)
def test_the_controller_a_module_watches(chain, watched):
    assert [pid for pid, _unused, _unused in lifeline.controllers(chain)] == watched


def test_this_process_sees_its_own_ancestors():
    chain = lifeline.ancestors()
    assert chain and chain[0][0] == os.getppid()
    assert lifeline.process_start(os.getpid()) is not None


def test_tools_are_started_to_die_with_their_parent():
    argv = lifeline.tool_argv(["/usr/bin/true", "--x"])
    assert argv[-2:] == ["/usr/bin/true", "--x"]
    if lifeline._SETPRIV:
        assert argv[:4] == [lifeline._SETPRIV, "--pdeathsig", "TERM", "--"]


def test_work_folders_of_dead_runs_are_swept_and_live_ones_kept(tmp_path):
    gone = int(subprocess.check_output(["sh", "-c", "echo $$"]).decode())
    for name, owner in (
        ("pgdr-restore-a-1", {"host": socket.gethostname(), "pid": gone, "start": "1"}),
        (
            "pgdr-restore-b-2",
            {"host": socket.gethostname(), "pid": os.getpid(), "start": lifeline.process_start(os.getpid())},
        ),
        ("pgdr-restore-c-3", {"host": "another-host", "pid": gone}),
        ("pgdr-restore-d-4", {"host": socket.gethostname(), "pid": os.getpid(), "start": "pid reused"}),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / workfolder.OWNER_FILE).write_text(json.dumps(owner))
    (tmp_path / "pgdr-restore-legacy").mkdir()
    os.utime(tmp_path / "pgdr-restore-legacy", (0, 0))
    (tmp_path / "pgdr-restore-fresh-legacy").mkdir()
    (tmp_path / "unrelated").mkdir()
    folder = workfolder.WorkFolder(str(tmp_path), "restore", "20261128T000000Z")
    removed = sorted(os.path.basename(p) for p, _unused in folder.removed)
    assert removed == ["pgdr-restore-a-1", "pgdr-restore-d-4", "pgdr-restore-legacy"]
    assert oct(os.stat(folder.path).st_mode & 0o777) == "0o700"
    with folder.open_private(folder.join("data.pgdump")) as fh:
        fh.write(b"plain")
    assert oct(os.stat(folder.join("data.pgdump")).st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        folder.open_private(folder.join("data.pgdump"))
    folder.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pgdr-restore-b-2",
        "pgdr-restore-c-3",
        "pgdr-restore-fresh-legacy",
        "unrelated",
    ]


def test_production_identities_come_from_the_inventory_and_the_manifest():
    production = [
        {"system_identifier": 71, "database": "app", "host": "db"},
        {"host": "old", "port": 5432},
    ]
    known = identity.production_identities(production, MANIFEST)
    assert [(k["system_identifier"], k["database"]) for k in known] == [
        ("71", "app"),
        ("7000000000000000001", "postgres"),
    ]
    assert identity.production_identities([], {"source": {"name": "x"}}) == []
