"""The schema archive's table of contents: parsing pg_restore -l and the entries a restore into a project leaves out."""

from __future__ import annotations

from ansible_collections.pgdr.supabase.plugins.module_utils import dumpspec, toc

LISTING = "\n".join(
    [
        # Entries without an owner end with a space, as pg_restore -l prints them.
        ";",
        "; Archive created at 2026-12-01 20:34:10 UTC",
        ";",
        "4; 3079 16628 EXTENSION - pg_cron ",
        "3721; 0 0 COMMENT - EXTENSION pg_cron ",
        "3722; 0 0 ACL - SCHEMA cron supabase_admin",
        "5; 3079 16912 EXTENSION - pg_trgm ",
        "3726; 0 0 ACL cron FUNCTION alter_job(job_id bigint, schedule text) supabase_admin",
        "3709; 6104 16554 PUBLICATION - supabase_realtime postgres",
        "3711; 6106 16907 PUBLICATION TABLE public supabase_realtime invitations postgres",
        "2283; 826 16548 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES postgres",
        "2285; 826 16551 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES supabase_admin",
        "3452; 3466 16568 EVENT TRIGGER - pgrst_ddl_watch supabase_admin",
        "3453; 0 0 COMMENT - EVENT TRIGGER pgrst_ddl_watch supabase_admin",
        "3460; 3466 16569 EVENT TRIGGER - app_audit app_owner",
        "232; 1259 16780 TABLE public Audit Log postgres",
        "3300; 2606 16800 FK CONSTRAINT public accounts accounts_id_fkey postgres",
        "3400; 2620 16900 TRIGGER public invitations send invitation email postgres",
        "3500; 0 0 ACL public TABLE accounts postgres",
    ]
)


def test_parse_reads_kind_namespace_tag_and_owner():
    entries = toc.parse(LISTING)
    assert len(entries) == 16
    assert (entries[0].desc, entries[0].namespace, entries[0].tag, entries[0].owner) == (
        "EXTENSION",
        "-",
        "pg_cron",
        "",
    )
    table = next(e for e in entries if e.desc == "TABLE")
    assert (table.namespace, table.tag, table.owner) == ("public", "Audit Log", "postgres")
    assert next(e for e in entries if e.desc == "DEFAULT ACL").tag == "DEFAULT PRIVILEGES FOR TABLES"
    assert next(e for e in entries if e.desc == "FK CONSTRAINT").tag == "accounts accounts_id_fkey"
    assert next(e for e in entries if e.desc == "PUBLICATION TABLE").tag == "supabase_realtime invitations"


def test_select_leaves_out_what_the_target_has_and_what_only_the_platform_may_set():
    kept, skipped = toc.select(
        toc.parse(LISTING),
        dumpspec.SUPABASE_SCHEMA_EXCLUDE,
        platform_roles=["supabase_admin"],
        target_extensions=["pg_cron"],
        target_publications=["supabase_realtime"],
    )
    left_out = {(e.desc, e.tag): reason for e, reason in skipped}
    assert left_out[("EXTENSION", "pg_cron")] == "the target has this extension"
    assert ("COMMENT", "EXTENSION pg_cron") in left_out
    assert left_out[("ACL", "SCHEMA cron")] == "the platform's schema"
    assert ("ACL", "FUNCTION alter_job(job_id bigint, schedule text)") in left_out
    assert left_out[("PUBLICATION", "supabase_realtime")] == "the target has this publication"
    assert left_out[("EVENT TRIGGER", "pgrst_ddl_watch")] == "the platform's (supabase_admin)"
    assert left_out[("COMMENT", "EVENT TRIGGER pgrst_ddl_watch")] == "the platform's event trigger"
    assert ("DEFAULT ACL", "DEFAULT PRIVILEGES FOR TABLES") in left_out
    kept_keys = {(e.desc, e.tag, e.owner) for e in kept}
    # The app's own: its extension the target lacks, its event trigger, its default privileges, its publication
    # membership, its tables, constraints, triggers and privileges.
    assert ("EXTENSION", "pg_trgm", "") in kept_keys
    assert ("EVENT TRIGGER", "app_audit", "app_owner") in kept_keys
    assert ("DEFAULT ACL", "DEFAULT PRIVILEGES FOR TABLES", "postgres") in kept_keys
    assert ("PUBLICATION TABLE", "supabase_realtime invitations", "postgres") in kept_keys
    assert len(kept) == 8


def test_write_list_keeps_the_archive_s_lines(tmp_path):
    entries = toc.parse(LISTING)[:3]
    path = toc.write_list(entries, tmp_path / "list")
    assert path.read_text().splitlines() == [e.line for e in entries]
