"""errors: the one exception type and secret redaction."""

from __future__ import annotations

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import pg
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact


class TestRedact:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "postgresql://postgres:s3cr3t-Pw@127.0.0.1:5432/postgres",
                "postgresql://postgres:********@127.0.0.1:5432/postgres",
            ),
            (
                "could not dump postgres://app:hunter22@db:6543/app: boom",
                "could not dump postgres://app:********@db:6543/app: boom",
            ),
            ("https://AKIA123:wJalrXUtnFEMI@s3.example.com/b", "https://AKIA123:********@s3.example.com/b"),
        ],
    )
    def test_url_passwords(self, text, expected):
        assert redact(text) == expected

    def test_url_without_password_is_unchanged(self):
        for text in ("postgresql://postgres@127.0.0.1:5432/postgres", "https://s3.example.com:9000/bucket/key"):
            assert redact(text) == text

    @pytest.mark.parametrize(
        ("text", "secret"),
        [
            ("host=db port=5432 password=s3cr3t dbname=app", "s3cr3t"),
            ("host=db PASSWORD = s3cr3t dbname=app", "s3cr3t"),
            ("host=db password='two words' dbname=app", "two words"),
        ],
    )
    def test_key_value_passwords(self, text, secret):
        out = redact(text)
        assert secret not in out
        assert "********" in out
        assert out.startswith("host=db")
        assert out.endswith("dbname=app")

    def test_explicit_secrets(self):
        out = redact("access denied for key AKIAEXAMPLE with secret wJalrXUtn/FEMI", ["wJalrXUtn/FEMI", "AKIAEXAMPLE"])
        assert out == "access denied for key ******** with secret ********"

    def test_short_or_empty_secrets_are_not_masked(self):
        # Masking "a" or "" would shred every message.
        assert redact("a cat sat", ["a", "", None, "cat"]) == "a cat sat"
        assert redact("a cats sat", ["cats"]) == "a ******** sat"

    def test_non_string_input_and_none(self):
        assert redact(None) is None
        assert redact(1234) == "1234"

    def test_plain_text_is_unchanged(self):
        text = "password authentication failed for user postgres"
        assert redact(text) == text


class TestDRError:
    def test_text_has_step_message_subject_and_hint(self):
        err = DRError("the bucket does not exist", step="check bucket", subject="s3://dr/", hint="create it")
        assert str(err) == "[check bucket] the bucket does not exist (s3://dr/). Next: create it"

    def test_text_without_the_optional_parts(self):
        assert str(DRError("boom")) == "boom"
        assert str(DRError("boom", hint="retry")) == "boom. Next: retry"

    def test_args_carry_the_full_text(self):
        err = DRError("boom", step="dump data", subject="db:5432/app")
        assert err.args == ("[dump data] boom (db:5432/app)",)

    def test_text_is_redacted(self):
        err = DRError(
            "pg_dump failed for postgresql://postgres:s3cr3t@db:5432/app",
            step="dump schema",
            subject="host=db password=s3cr3t",
        )
        assert "s3cr3t" not in str(err)
        assert "s3cr3t" not in repr(err.to_dict())

    def test_message_can_be_extended_after_raising(self):
        # logical_backup appends the cleanup outcome to a DRError already raised.
        err = DRError("dump failed", step="dump data")
        err.message += " (aborting the upload also failed: timeout)"
        assert str(err) == "[dump data] dump failed (aborting the upload also failed: timeout)"

    def test_to_dict(self):
        details = DRError("boom", step="s", subject="x", hint="h").to_dict()
        assert details == {"step": "s", "subject": "x", "hint": "h", "message": "[s] boom (x). Next: h"}

    def test_is_an_exception(self):
        with pytest.raises(DRError, match=r"^\[s\] boom$"):
            raise DRError("boom", step="s")


# pg.py's message helpers live here because they decide what a failure message shows: where, and never a password.
class TestDescribeDsn:
    @pytest.mark.parametrize(
        ("dsn", "expected"),
        [
            ("postgresql://postgres:s3cr3t@db.example.com:6543/app", "db.example.com:6543/app"),
            ("postgres://postgres:s3cr3t@db.example.com/app?sslmode=require", "db.example.com:5432/app"),
            ("postgresql://postgres:s3cr3t@127.0.0.1:1", "127.0.0.1:1/postgres"),
            ("postgresql:///app", "localhost:5432/app"),
            ("host=db.example.com port=6543 dbname=app user=postgres password=s3cr3t", "db.example.com:6543/app"),
            ("password=s3cr3t host=10.0.0.5", "10.0.0.5:5432/postgres"),
            ("dbname = app", "localhost:5432/app"),
        ],
    )
    def test_host_port_and_database(self, dsn, expected):
        assert pg.describe_dsn(dsn) == expected

    @pytest.mark.parametrize(
        "dsn",
        [
            "postgresql://postgres:s3cr3t@db:5432/app",
            "host=db password=s3cr3t user=postgres",
            "user=postgres password='s3cr3t' host=db",
        ],
    )
    def test_no_user_or_password(self, dsn):
        text = pg.describe_dsn(dsn)
        assert "s3cr3t" not in text
        assert "postgres@" not in text


class TestCheckDumpCompatible:
    def test_older_major_is_refused_with_a_hint(self):
        with pytest.raises(DRError) as caught:
            pg.check_dump_compatible(140012, "14.12", 150018, "15.18", tool="pg_dumpall")
        err = caught.value
        assert "pg_dumpall 14.12 is older than the server (15.18)" in str(err)
        assert err.step == "check client tools"
        assert "PostgreSQL 15 client tools" in err.hint

    @pytest.mark.parametrize(("tool_num", "tool_text"), [(150018, "15.18"), (150002, "15.2"), (170004, "17.4")])
    def test_same_or_newer_major_passes(self, tool_num, tool_text):
        assert pg.check_dump_compatible(tool_num, tool_text, 150018, "15.18") is None

    def test_minor_versions_do_not_matter(self):
        # 15.2 dumps a 15.18 server: only the major is compared.
        pg.check_dump_compatible(150002, "15.2", 150018, "15.18")
        with pytest.raises(DRError):
            pg.check_dump_compatible(149999, "14.99", 150000, "15.0")
