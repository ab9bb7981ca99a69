"""files.write_atomic: one piece or nothing, the mode and owner asked for, no temporary file left behind."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import files


def mode_of(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_text_is_written_as_utf8_with_the_mode_asked_for(tmp_path):
    path = tmp_path / "page.html"
    files.write_atomic(str(path), "café\n", 0o644)
    assert path.read_bytes() == "café\n".encode() and mode_of(path) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_bytes_are_written_as_they_are_and_the_default_mode_is_644(tmp_path):
    path = tmp_path / "data.bin"
    files.write_atomic(str(path), b"\x00\xff", fsync=True, fsync_dir=True)
    assert path.read_bytes() == b"\x00\xff" and mode_of(path) == 0o644


def test_an_existing_file_takes_the_new_mode_unless_kept(tmp_path):
    path = tmp_path / "app.env"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    files.write_atomic(str(path), "kept\n", 0o600, keep_existing=True)
    assert path.read_text() == "kept\n" and mode_of(path) == 0o640
    files.write_atomic(str(path), "new\n", 0o600)
    assert path.read_text() == "new\n" and mode_of(path) == 0o600


def test_keep_existing_gives_a_new_file_the_mode_asked_for(tmp_path):
    path = tmp_path / "new.env"
    files.write_atomic(str(path), "A=1\n", 0o600, keep_existing=True)
    assert mode_of(path) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file away")
def test_owner_is_given_when_root(tmp_path):
    path = tmp_path / "pgbackrest.conf"
    files.write_atomic(str(path), "[global]\n", 0o600, owner=(1234, 4321))
    assert (path.stat().st_uid, path.stat().st_gid) == (1234, 4321)


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "m.prom"
    path.write_text("old\n")

    def broken_replace(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(str(path), "new\n", fsync=True)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.prom"]


def test_the_temporary_file_is_named_after_the_file_and_this_process(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.basename(src), mode_of(type(tmp_path)(src))))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    files.write_atomic(str(tmp_path / "a.json"), "{}\n", 0o600)
    name, mode = seen[0]
    assert name.startswith(f".a.json{files.TEMP_MARK}{os.getpid()}-") and name.endswith(".tmp") and mode == 0o600


def test_stale_temporary_files_of_this_process_and_other_files_are_kept(tmp_path):
    path = tmp_path / "app.env"
    mine = tmp_path / f".app.env{files.TEMP_MARK}{os.getpid()}-abcd1234.tmp"
    other = tmp_path / f".other.env{files.TEMP_MARK}999999999-abcd1234.tmp"
    mine.write_text("x")
    other.write_text("x")
    assert files.remove_stale_temp_files(str(path)) == []
    assert mine.exists() and other.exists()
