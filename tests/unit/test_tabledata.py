"""Table data without a database: how tables become data objects, and the order-independent content digest."""

from __future__ import annotations

import zlib

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import tabledata as td

MB = 1024 * 1024


def table(name, size, pages=0):
    return td.Table("public", name, ['"id"'], size, pages)


def test_small_tables_share_objects_of_about_the_part_size():
    tables = [table(f"t{i}", 10 * MB) for i in range(20)]
    parts = td.plan_parts(tables, part_bytes=64 * MB, chunk_bytes=256 * MB)
    assert [len(p) for p in parts] == [6, 6, 6, 2]
    assert all(pages is None for p in parts for _unused, pages in p)


def test_a_big_table_gets_objects_of_its_own_by_ranges_of_pages_the_last_open():
    big = table("events", 1000 * MB, pages=128000)
    parts = td.plan_parts([big, table("small", MB)], part_bytes=64 * MB, chunk_bytes=256 * MB)
    ranges = [p[0][1] for p in parts[:-1]]
    assert ranges == [(0, 32000), (32000, 64000), (64000, 96000), (96000, None)]
    assert parts[-1] == [(parts[-1][0][0], None)]
    # Without TID range scans (PostgreSQL 13 and older), a big table is one section.
    assert len(td.plan_parts([big], split=False)) == 1


def test_copy_queries_name_the_columns_and_the_page_range():
    t = td.Table("public", "Audit Log", ['"id"', '"at"'], 0, 0)
    assert td.copy_out_query(t).as_string(None) == 'COPY "public"."Audit Log" ("id", "at") TO STDOUT'
    assert td.copy_out_query(t, (10, 20)).as_string(None) == (
        'COPY (SELECT "id", "at" FROM ONLY "public"."Audit Log" WHERE ctid >= \'(10,0)\'::tid AND '
        "ctid < '(20,0)'::tid) TO STDOUT"
    )
    assert "ctid <" not in td.copy_out_query(t, (10, None)).as_string(None)


def digest_of(rows):
    d = td.Digest()
    for row in rows:
        d.rows += 1
        d.bytes += len(row)
        d.crc = (d.crc + zlib.crc32(row)) & td.MASK64
        d.adler = (d.adler + zlib.adler32(row)) & td.MASK64
    return d


def test_the_digest_does_not_depend_on_row_order_or_on_how_rows_are_split():
    rows = [f"{i}\tname {i}\n".encode() for i in range(100)]
    whole = digest_of(rows)
    assert digest_of(reversed(rows)).text() == whole.text()
    assert digest_of(rows[:40]).merge(digest_of(rows[40:])).text() == whole.text()
    assert td.Digest.parse(whole.text()).text() == whole.text()


def test_the_digest_changes_with_one_value_a_lost_row_or_a_duplicated_row():
    rows = [f"{i}\tname {i}\n".encode() for i in range(100)]
    base = digest_of(rows).text()
    changed = list(rows)
    changed[50] = b"50\tname 5O\n"
    assert digest_of(changed).text() != base
    assert digest_of(rows[:-1]).text() != base
    assert digest_of([*rows, rows[0]]).text() != base


def test_workers_return_results_in_order_and_stop_at_the_first_error():
    assert td.Workers(3).run(list(range(10)), lambda x: x * x) == [x * x for x in range(10)]

    def boom(x):
        if x == 4:
            raise ValueError("four")
        return x

    with pytest.raises(ValueError, match="four"):
        td.Workers(2).run(list(range(10)), boom)


def test_thousands_of_small_tables_spread_over_objects_of_at_most_part_tables():
    tables = [table(f"t{i}", 16 * 1024) for i in range(2000)]
    parts = td.plan_parts(tables, part_bytes=64 * MB, chunk_bytes=256 * MB, part_tables=250)
    assert [len(p) for p in parts] == [250] * 8
    assert sorted(t.name for p in parts for t, _unused in p) == sorted(t.name for t in tables)
    assert len(td.plan_parts(tables)) == -(-2000 // td.PART_TABLES)


def test_workers_stopped_from_outside_give_up_before_their_next_task():
    workers = td.Workers(1)
    seen = []

    def work(x):
        seen.append(x)
        if x == 2:
            workers.stopped.set()  # as the backup does when another of its steps failed
        return x

    with pytest.raises(td.DRError, match="stopped"):
        workers.run(list(range(10)), work)
    assert seen == [0, 1, 2]


def test_the_mmap_threshold_can_be_pinned_on_this_platform():
    # glibc (Debian): the restore's and the backup's memory bound depends on it (bench/README.md, restore memory).
    assert td.bound_memory() is True
