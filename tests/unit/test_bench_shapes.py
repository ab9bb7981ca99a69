"""The shapes benchmark's seeding plans (bench/shapes.py), without a database: every shape gets the tables,
schemas and sizes its options ask for, in statements that are complete (quotes and parentheses closed, each
ending with a semicolon)."""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import shapes

GIB = 1024**3


def options(**kw):
    base = {"size_gb": 2.0, "tables": 200, "catalog_tables": 5000, "catalog_schemas": 50}
    return argparse.Namespace(**(base | kw))


def split_statements(text):
    """Statements of a script, split on semicolons outside quotes; fails on an unclosed quote or parenthesis."""
    out, current, depth, quote = [], [], 0, None
    for ch in text:
        current.append(ch)
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            assert depth >= 0, f"unbalanced ) in {''.join(current)[-80:]!r}"
        elif ch == ";":
            assert depth == 0, f"; inside parentheses in {''.join(current)[-80:]!r}"
            out.append("".join(current).strip())
            current = []
    assert quote is None, "an unclosed quote"
    assert depth == 0, "an unclosed parenthesis"
    assert not "".join(current).strip(), f"text after the last semicolon: {''.join(current)!r}"
    return out


def created_tables(statements):
    return [m for s in statements for m in re.findall(r"CREATE TABLE (\S+) \(", s)]


def test_many_makes_the_asked_number_of_tables_of_about_their_share_of_the_size():
    plan = shapes.seed_plan("many", options(size_gb=2.0, tables=200))
    assert plan["parallel"] and len(plan["statements"]) == 200
    statements = [s for text in plan["statements"] for s in split_statements(text)]
    tables = created_tables(statements)
    assert len(tables) == len(set(tables)) == 200
    assert all(t.startswith('"public"."items_') for t in tables)
    rows = {int(n) for n in re.findall(r"generate_series\(1, (\d+)\) g", " ".join(statements))}
    assert len(rows) == 1
    per_table = rows.pop() * shapes.MANY_ROW_BYTES
    assert 9.5 * 2**20 < per_table < 11 * 2**20  # 2 GiB / 200: the issue's ~10 MB
    smaller = shapes.seed_plan("many", options(size_gb=0.5, tables=200))
    assert re.search(r"generate_series\(1, (\d+)\)", smaller["statements"][0])[1] == str(2 * GIB // 4 // 200 // 250)


def test_catalog_spreads_the_tables_over_the_schemas():
    plan = shapes.seed_plan("catalog", options(catalog_tables=5000, catalog_schemas=50))
    assert len(plan["statements"]) == 50  # one script per schema, so schemas seed in parallel
    statements = [s for text in plan["statements"] for s in split_statements(text)]
    tables = created_tables(statements)
    assert len(tables) == len(set(tables)) == 5000
    schemas = [m for s in statements for m in re.findall(r"^CREATE SCHEMA (\S+);$", s)]
    assert len(schemas) == len(set(schemas)) == 50
    assert {t.split(".")[0] for t in tables} == set(schemas)
    uneven = shapes.seed_plan("catalog", options(catalog_tables=103, catalog_schemas=10))
    counts = [len(created_tables(split_statements(text))) for text in uneven["statements"]]
    assert sum(counts) == 103 and max(counts) - min(counts) == 1


def test_wide_fills_one_table_with_toasted_rows_in_batches_after_it_exists():
    plan = shapes.seed_plan("wide", options(size_gb=0.5))
    assert created_tables(split_statements(plan["setup"][0])) == ["public.documents"]
    assert plan["finish"] == [shapes.WIDE_FINISH]
    inserts = [s for text in plan["statements"] for s in split_statements(text)]
    assert all(s.startswith("INSERT INTO public.documents ") for s in inserts)
    ranges = [tuple(map(int, m)) for s in inserts for m in re.findall(r"generate_series\((\d+), (\d+)\) g;", s)]
    ids = [i for first, last in ranges for i in (first, last)]
    assert ids == sorted(ids) and ranges[0][0] == 1  # consecutive, disjoint id ranges: no key collides
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    assert ranges[-1][1] * shapes.WIDE_ROW_BYTES == pytest.approx(0.5 * GIB, rel=0.01)


def test_big_is_the_sandbox_seed_and_an_unknown_shape_is_refused():
    assert shapes.seed_plan("big", options())["statements"] == []
    with pytest.raises(ValueError, match="unknown shape"):
        shapes.seed_plan("tall", options())


def test_options_keep_the_issue_sizes_as_defaults_and_refuse_nonsense():
    args = shapes.parse_args([])
    assert (args.size_gb, args.tables, args.catalog_tables, args.catalog_schemas) == (2.0, 200, 5000, 50)
    assert args.shape_list == list(shapes.SHAPES)
    for bad in (
        ["--shapes", "big,tall"],
        ["--catalog-schemas", "0"],
        ["--catalog-tables", "5", "--catalog-schemas", "9"],
    ):
        with pytest.raises(SystemExit):
            shapes.parse_args(bad)
