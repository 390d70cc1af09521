"""pgvector against real PostgreSQL servers (18 + pgvector 0.8.2, and 15 + pgvector 0.8.0): every test runs
on both, each in a fresh database (the ``pg_db`` fixture of tests/servers/postgres.py)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

import vecfmt
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli, write_raw_dump
from vecfmt import transfer
from vecfmt.errors import DumpError, InvalidDataError, StoreError
from vecfmt.ops.diff import diff_dumps
from vecfmt.schema import SPARSE_TYPE, vectors_array
from vecfmt.stores.base import IfExists, open_importer
from vecfmt.stores.pgvector import PROGRESS_TABLE

PASSWORD = "s3cret-pw"  # the fixtures' role password: must never show up anywhere


def pg(dsn: str, table: str | None = "items", **options: object) -> str:
    """A pgvector:// URI for ``dsn`` (LOCATION = everything after postgresql://)."""
    params = {"table": table, **options} if table is not None else dict(options)
    return f"pgvector://{dsn.split('://', 1)[1]}?{urlencode({k: str(v) for k, v in params.items()})}"


def run_sql(dsn: str, *statements: str | sql.Composable) -> list[tuple]:
    rows: list[tuple] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            cur = conn.execute(statement)
            rows = cur.fetchall() if cur.description else []
    return rows


def sorted_by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    """Same ids, vectors equal bit for bit as float32, sparse vectors equal, metadata equal as JSON."""
    got, want = sorted_by_id(got), sorted_by_id(want)
    assert got.column_names == want.column_names
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    for name in got.column_names:
        a, b = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(a.type):
            assert a.type.list_size == b.type.list_size, name
            np.testing.assert_array_equal(a.values.to_numpy(zero_copy_only=False).view(np.uint32),
                                          b.values.to_numpy(zero_copy_only=False).view(np.uint32), err_msg=name)
            assert a.is_valid().equals(b.is_valid()), name
        elif name == "metadata":
            assert [json.loads(x) if x is not None else None for x in a.to_pylist()] == \
                   [json.loads(x) if x is not None else None for x in b.to_pylist()]
        elif name != "id":
            assert a.to_pylist() == b.to_pylist(), name


def round_trip(tmp_path, dsn: str, table: pa.Table, *, import_options: dict | None = None,
               export_options: dict | None = None, **dump_kwargs) -> tuple[vecfmt.Manifest, pa.Table]:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    vecfmt.write_dump(a, table, **dump_kwargs)
    result = transfer.import_dump(a, pg(dsn, **(import_options or {})), batch_size=128)
    assert result.rows == table.num_rows
    manifest = transfer.export(pg(dsn, **(export_options or {})), b, batch_size=100)
    return manifest, vecfmt.open_dump(b).table("")


# --- round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "options"), [
    (1, {}),
    (384, {}),
    (768, {}),
    (1536, {}),
    (2001, {}),  # beyond a vector index: stored, no index
    (4000, {"type": "halfvec"}),  # halfvec: indexable up to 4000
])  # fmt: skip
def test_dump_to_pgvector_and_back_is_bit_identical(tmp_path, pg_db, dim, options):
    n = 40
    table = make_table(n, dim, prefix="ид-😀-", document=True)
    if options.get("type") == "halfvec":  # halfvec holds float16: start from values it holds exactly
        values = table.column("values").combine_chunks().values.to_numpy().astype(np.float16).astype(np.float32)
        table = table.set_column(1, "values", vectors_array(values.reshape(n, dim)))
    manifest, back = round_trip(tmp_path, pg_db, table, import_options=options, metric="dot",
                                model=vecfmt.EmbeddingModel("m", "p", dim))  # fmt: skip
    assert_same_rows(back, table)
    assert manifest.vectors == [vecfmt.VectorSpec("default", "values", dim, "dot")]
    assert manifest.source.kind == "pgvector" and manifest.source.name == "public.items"
    shape = manifest.extra["pgvector"]
    assert shape["vectors"]["values"] == {"column": "embedding", "type": options.get("type", "vector")}
    indexes = run_sql(pg_db, "SELECT indexdef FROM pg_indexes WHERE tablename = 'items' AND indexdef LIKE '%hnsw%'")
    assert (len(indexes) == 1) == (dim <= 2000 or options.get("type") == "halfvec")
    if indexes:
        assert "_ip_ops" in indexes[0][0]  # metric dot -> inner product operator class


def test_named_vectors_sparse_vectors_and_documents(tmp_path, pg_db):
    table = make_table(300, 16, document=True, sparse=True, named={"title": 4, "image": 3})
    manifest, back = round_trip(tmp_path, pg_db, table, import_options={"sparse_dim": 1000})
    assert_same_rows(back, table)
    assert [v.name for v in manifest.vectors] == ["default", "title", "image"]
    assert manifest.extra["pgvector"]["sparse"] == {"column": "sparse_embedding", "dimension": 1000}
    columns = dict(run_sql(pg_db, "SELECT column_name, udt_name FROM information_schema.columns "
                                  "WHERE table_name = 'items'"))  # fmt: skip
    assert columns == {"id": "text", "embedding": "vector", "title": "vector", "image": "vector",
                       "sparse_embedding": "sparsevec", "metadata": "jsonb", "document": "text"}  # fmt: skip


def test_sparse_indices_are_zero_based_like_pinecone(tmp_path, pg_db):
    """pgvector's text form is 1-based ({1:1.5} is the first element); the dump is 0-based."""
    run_sql(pg_db, "CREATE EXTENSION vector",
            "CREATE TABLE items (id int PRIMARY KEY, sparse sparsevec(5))",
            "INSERT INTO items VALUES (1, '{1:1.5,3:-2}/5'), (2, '{5:0.25}/5'), (3, NULL)")
    transfer.export(pg(pg_db), str(tmp_path / "d"))
    rows = {r["id"]: r["sparse_values"] for r in vecfmt.open_dump(str(tmp_path / "d")).table("").to_pylist()}
    assert rows == {"1": {"indices": [0, 2], "values": [1.5, -2.0]}, "2": {"indices": [4], "values": [0.25]},
                    "3": None}  # fmt: skip
    transfer.import_dump(str(tmp_path / "d"), pg(pg_db, "again"))
    assert run_sql(pg_db, "SELECT id, sparse::text FROM again ORDER BY id") == [
        (1, "{1:1.5,3:-2}/5"), (2, "{5:0.25}/5"), (3, None)]


def test_halfvec_exports_to_float32_exactly(tmp_path, pg_db):
    halves = np.array([[0.1, -65504.0, 1e-4], [3.14159, 0.0, 65504.0]], dtype=np.float16)
    literal = ["[" + ",".join(repr(float(x)) for x in row) + "]" for row in halves]
    run_sql(pg_db, "CREATE EXTENSION vector", "CREATE TABLE h (id bigint PRIMARY KEY, v halfvec(3))",
            sql.SQL("INSERT INTO h VALUES (7, {}), (8, {})").format(sql.Literal(literal[0]), sql.Literal(literal[1])))
    manifest = transfer.export(pg(pg_db, "h"), str(tmp_path / "d"))
    got = vecfmt.open_dump(str(tmp_path / "d")).table("").sort_by("id")
    np.testing.assert_array_equal(np.stack(got.column("values").to_numpy(zero_copy_only=False)),
                                  halves.astype(np.float32))  # fmt: skip
    assert manifest.extra["pgvector"]["vectors"]["values"]["type"] == "halfvec"
    assert manifest.extra["pgvector"]["id"] == {"column": "id", "type": "int8"}
    # and back: the table is recreated as halfvec with bigint ids, values unchanged
    transfer.import_dump(str(tmp_path / "d"), pg(pg_db, "h2"))
    assert run_sql(pg_db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                          "WHERE attrelid = 'h2'::regclass AND attnum > 0 ORDER BY attnum") == [
        ("bigint",), ("halfvec(3)",)]  # fmt: skip
    assert run_sql(pg_db, "SELECT count(*) FROM h JOIN h2 USING (id) WHERE h.v = h2.v") == [(2,)]


def test_halfvec_refuses_values_it_cannot_hold(tmp_path, pg_db):
    table = make_table(5, 3)
    table = table.set_column(1, "values", vectors_array(np.array([[1e5, 0, 0]] * 5, np.float32)))
    vecfmt.write_dump(str(tmp_path / "d"), table)
    with pytest.raises(InvalidDataError, match=r"id 'id-0'.*beyond \+-65504.*halfvec"):
        transfer.import_dump(str(tmp_path / "d"), pg(pg_db, type="halfvec"))


def test_foreign_table_is_detected_and_recreated_with_its_types(tmp_path, pg_db):
    """uuid ids, a jsonb column, other columns folded into the metadata with their SQL types, the metric
    from the index's operator class; an import of that dump recreates all of it."""
    run_sql(
        pg_db,
        "CREATE EXTENSION vector",
        "CREATE TABLE docs (key uuid PRIMARY KEY, emb vector(3), metadata jsonb, title text, "
        "pages integer, published timestamptz, score numeric)",
        "CREATE INDEX ON docs USING hnsw (emb vector_ip_ops) WITH (m = 8)",
        "INSERT INTO docs VALUES "
        "('6f1c2a7e-8a39-4f43-9f1b-0c1a9b0e2d11', '[1,2,3]', '{\"lang\": \"de\"}', 'Über', 12, "
        "  '2024-05-01 10:00:00+00', 1.5), "
        "('00000000-0000-0000-0000-000000000002', '[4,5,6]', NULL, NULL, NULL, NULL, NULL)",
    )
    manifest = transfer.export(pg(pg_db, "docs"), str(tmp_path / "d"))
    assert manifest.vectors == [vecfmt.VectorSpec("default", "values", 3, "dot")]
    shape = manifest.extra["pgvector"]
    assert shape["id"] == {"column": "key", "type": "uuid"}
    assert shape["metadata_column"] == "metadata"
    assert shape["folded_columns"] == [
        {"name": "title", "type": "text"}, {"name": "pages", "type": "integer"},
        {"name": "published", "type": "timestamp with time zone"}, {"name": "score", "type": "numeric"}]
    assert shape["indexes"] == [{"column": "emb", "method": "hnsw", "opclass": "vector_ip_ops",
                                 "options": {"m": "8"}}]  # fmt: skip
    rows = {r["id"]: json.loads(r["metadata"]) for r in vecfmt.open_dump(str(tmp_path / "d")).table("").to_pylist()}
    assert rows["6f1c2a7e-8a39-4f43-9f1b-0c1a9b0e2d11"] == {
        "lang": "de", "title": "Über", "pages": 12, "published": "2024-05-01T10:00:00+00:00", "score": 1.5}
    assert rows["00000000-0000-0000-0000-000000000002"] == {
        "title": None, "pages": None, "published": None, "score": None}

    transfer.import_dump(str(tmp_path / "d"), pg(pg_db, "docs2"))
    described = "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = {}::regclass " \
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"  # fmt: skip
    assert run_sql(pg_db, described.format("'docs2'")) == run_sql(pg_db, described.format("'docs'"))
    same = "SELECT count(*) FROM docs a JOIN docs2 b USING (key) WHERE a.emb = b.emb " \
           "AND a.metadata IS NOT DISTINCT FROM b.metadata AND a.title IS NOT DISTINCT FROM b.title " \
           "AND a.pages IS NOT DISTINCT FROM b.pages AND a.published IS NOT DISTINCT FROM b.published " \
           "AND a.score IS NOT DISTINCT FROM b.score"  # fmt: skip
    assert run_sql(pg_db, same) == [(2,)]
    assert run_sql(pg_db, "SELECT indexdef LIKE '%hnsw (emb vector_ip_ops) WITH (m=''8'')%' FROM pg_indexes "
                          "WHERE tablename = 'docs2' AND indexdef LIKE '%hnsw%'") == [(True,)]  # fmt: skip


@pytest.mark.parametrize(("opclass", "metric"), [
    ("vector_cosine_ops", "cosine"), ("vector_ip_ops", "dot"), ("vector_l2_ops", "euclidean"),
    ("vector_l1_ops", "manhattan"), ("halfvec_l2_ops", "euclidean"), ("halfvec_l1_ops", "manhattan"),
])  # fmt: skip
def test_metric_comes_from_the_index_operator_class(tmp_path, pg_db, opclass, metric):
    kind = opclass.split("_")[0]
    run_sql(pg_db, "CREATE EXTENSION vector", f"CREATE TABLE t (id text PRIMARY KEY, v {kind}(2))",
            f"CREATE INDEX ON t USING hnsw (v {opclass})", "INSERT INTO t VALUES ('a', '[1,2]')")
    manifest = transfer.export(pg(pg_db, "t"), str(tmp_path / "d"))
    assert manifest.vectors[0].metric == metric
    no_index = transfer.export(pg(pg_db, "t", metric="euclidean"), str(tmp_path / "e"))
    assert no_index.vectors[0].metric == "euclidean"  # metric= overrides


def test_no_index_means_cosine_and_options_name_columns(tmp_path, pg_db):
    run_sql(pg_db, "CREATE EXTENSION vector",
            "CREATE TABLE t (n bigint, a vector(2), b vector(2), body text, info json, extra int)",
            "INSERT INTO t VALUES (1, '[1,1]', '[2,2]', 'hello', '{\"k\": [1, 2]}', 5)")
    manifest = transfer.export(pg(pg_db, "t", id="n", vector="b", document="body", metadata="info", fold=""),
                               str(tmp_path / "d"))  # fmt: skip
    assert manifest.vectors == [vecfmt.VectorSpec("default", "values", 2, "cosine")]
    row = vecfmt.open_dump(str(tmp_path / "d")).table("").to_pylist()[0]
    assert row == {"id": "1", "values": [2.0, 2.0], "metadata": '{"k": [1, 2]}', "document": "hello"}


def test_query_source_and_a_vector_without_typmod(tmp_path, pg_db):
    run_sql(pg_db, "CREATE EXTENSION vector", "CREATE TABLE t (id int, v vector, keep bool)",
            "INSERT INTO t SELECT i, ('[' || i || ',0,1]')::vector, i % 2 = 0 FROM generate_series(1, 10) i")
    uri = pg(pg_db, None, query="SELECT id, v, id * 10 AS tens FROM t WHERE keep")
    manifest = transfer.export(uri, str(tmp_path / "d"))
    assert manifest.vectors[0].dimension == 3
    assert manifest.source.name == "query"
    rows = vecfmt.open_dump(str(tmp_path / "d")).table("").sort_by("id").to_pylist()
    assert [r["id"] for r in rows] == ["10", "2", "4", "6", "8"]
    assert json.loads(rows[1]["metadata"]) == {"tens": 20}
    run_sql(pg_db, "INSERT INTO t VALUES (99, '[1,2]', true)")  # another dimension: refused clearly
    with pytest.raises(InvalidDataError, match="id '99' has 2 dimensions, expected 3"):
        transfer.export(uri, str(tmp_path / "e"))


def test_a_null_primary_vector_is_a_clear_error(tmp_path, pg_db):
    run_sql(pg_db, "CREATE EXTENSION vector", "CREATE TABLE t (id text, v vector(2))",
            "INSERT INTO t VALUES ('a', '[1,2]'), ('b', NULL)")
    with pytest.raises(InvalidDataError, match=r"'v' is NULL for id 'b'.*WHERE v IS NOT NULL"):
        transfer.export(pg(pg_db, "t"), str(tmp_path / "d"))


def test_namespaces_live_in_a_column(tmp_path, pg_db, identical):
    first, second = make_table(50, 4, prefix="ünï-"), make_table(30, 4, prefix="日本-", seed=2)
    with vecfmt.DumpWriter(str(tmp_path / "a")) as w:
        w.write(first, namespace="")
        w.write(second, namespace="it's/a tenant")
    transfer.import_dump(str(tmp_path / "a"), pg(pg_db))
    assert run_sql(pg_db, "SELECT namespace, count(*) FROM items GROUP BY 1 ORDER BY 1") == [
        ("", 50), ("it's/a tenant", 30)]
    assert run_sql(pg_db, "SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_index i JOIN pg_attribute a "
                          "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                          "WHERE i.indrelid = 'items'::regclass AND i.indisprimary") == [(["id", "namespace"],)]
    transfer.export(pg(pg_db), str(tmp_path / "b"))
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    assert dump.namespaces == ["", "it's/a tenant"]
    assert_same_rows(dump.table(""), first)
    assert_same_rows(dump.table("it's/a tenant"), second)


# --- if_exists, upsert, resume -------------------------------------------------------------------------


def test_if_exists_fail_append_replace_upsert(tmp_path, pg_db):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    vecfmt.write_dump(a, make_table(100, 4))
    changed = make_table(100, 4, seed=9).slice(50)  # ids id-50..id-99 with new vectors, and ...
    more = make_table(20, 4, prefix="new-")  # ... 20 new ids
    vecfmt.write_dump(b, pa.concat_tables([changed, more]))
    transfer.import_dump(a, pg(pg_db))
    with pytest.raises(StoreError, match=r"table public\.items already exists \(choose if_exists"):
        transfer.import_dump(a, pg(pg_db))
    with pytest.raises(StoreError, match="duplicate key"):
        transfer.import_dump(b, pg(pg_db), if_exists="append")
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(100,)]  # the failed batch left nothing
    transfer.import_dump(b, pg(pg_db), if_exists="upsert")
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(120,)]
    transfer.export(pg(pg_db), str(tmp_path / "c"))
    expected = pa.concat_tables([make_table(100, 4).slice(0, 50), changed, more])
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "c")).table(""), expected)
    transfer.import_dump(b, pg(pg_db), if_exists="replace")
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(70,)]
    vecfmt.write_dump(str(tmp_path / "e"), make_table(10, 8))
    transfer.import_dump(str(tmp_path / "e"), pg(pg_db), if_exists="replace")  # another dimension: recreated
    assert run_sql(pg_db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                          "WHERE attrelid = 'items'::regclass AND attname = 'embedding'") == [("vector(8)",)]
    assert run_sql(pg_db, f"SELECT to_regclass('{PROGRESS_TABLE}') IS NULL") == [(True,)]  # cleaned up


def test_append_checks_dimensions_and_upsert_needs_a_unique_key(tmp_path, pg_db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(10, 4))
    run_sql(pg_db, "CREATE EXTENSION vector", "CREATE TABLE items (id text, embedding vector(5), metadata jsonb)")
    with pytest.raises(InvalidDataError, match=r"vector 'default' has 4 dimensions but column 'embedding' of "
                                               r"public\.items is vector\(5\)"):  # fmt: skip
        transfer.import_dump(str(tmp_path / "a"), pg(pg_db), if_exists="append")
    run_sql(pg_db, "DROP TABLE items", "CREATE TABLE items (id text, embedding vector(4), metadata jsonb)")
    with pytest.raises(StoreError, match=r"upsert needs a primary key or unique index on \(id\)"):
        transfer.import_dump(str(tmp_path / "a"), pg(pg_db), if_exists="upsert")
    transfer.import_dump(str(tmp_path / "a"), pg(pg_db), if_exists="append")
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(10,)]


def _progress(dsn: str) -> int:
    try:
        rows = run_sql(dsn, f"SELECT rows_done FROM {PROGRESS_TABLE}")
    except psycopg.errors.UndefinedTable:
        return 0
    return rows[0][0] if rows else 0


def test_import_killed_with_sigkill_resumes_exactly(tmp_path, pg_db):
    table = make_table(30_000, 96)
    dump = str(tmp_path / "a")
    vecfmt.write_dump(dump, table, options=vecfmt.ParquetOptions(max_file_rows=5_000))
    uri = pg(pg_db)
    script = f"from vecfmt import transfer; transfer.import_dump({dump!r}, {uri!r}, batch_size=300)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _progress(pg_db) >= 6_000:  # mid-way: some batches committed, more in flight
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the import finished before it could be killed"
    committed = _progress(pg_db)
    assert 6_000 <= committed < 30_000
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(committed,)]  # data and progress: one transaction
    with pytest.raises(StoreError, match=f"already exists .*interrupted import of this dump committed "
                                         f"{committed:,} rows: resume it"):  # fmt: skip
        transfer.import_dump(dump, uri)  # not resuming: refused, nothing written
    result = transfer.import_dump(dump, uri, resume=True, batch_size=1000)
    assert (result.rows_skipped, result.rows) == (committed, 30_000 - committed)
    assert run_sql(pg_db, "SELECT count(*), count(DISTINCT id) FROM items") == [(30_000, 30_000)]
    transfer.export(pg(pg_db), str(tmp_path / "b"))
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)
    assert run_sql(pg_db, "SELECT count(*) FROM pg_indexes WHERE tablename = 'items'") == [(2,)]  # pkey, hnsw
    with pytest.raises(StoreError, match="nothing to resume"):
        transfer.import_dump(dump, uri, resume=True)


def test_resume_of_a_fresh_target_is_a_plain_import(tmp_path, pg_db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(10, 4))
    result = transfer.import_dump(str(tmp_path / "a"), pg(pg_db), resume=True)
    assert (result.rows_skipped, result.rows) == (0, 10)


# --- validation and errors -------------------------------------------------------------------------------


def test_hostile_names_are_quoted_identifiers(tmp_path, pg_db):
    hostile = 'items"; DROP TABLE x; --'
    run_sql(pg_db, "CREATE TABLE x (keep int)")
    table = make_table(20, 3, named={'v"; DROP TABLE x; --': 2})
    manifest, back = round_trip(tmp_path, pg_db, table, import_options={"table": hostile},
                                export_options={"table": hostile})  # fmt: skip
    assert_same_rows(back, table)
    assert manifest.source.name == f"public.{hostile}"
    assert run_sql(pg_db, "SELECT count(*) FROM x") == [(0,)]  # still there
    assert run_sql(pg_db, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(hostile))) == [(20,)]


def test_bad_vectors_are_refused_before_anything_is_written(tmp_path, pg_db):
    bad = make_table(5, 4)
    matrix = bad.column("values").combine_chunks().values.to_numpy().reshape(5, 4).copy()
    matrix[3, 1] = np.nan
    write_raw_dump(str(tmp_path / "nan"), {"": bad.set_column(1, "values", vectors_array(matrix))})
    with pytest.raises(InvalidDataError, match="NaN or inf") as caught:
        transfer.import_dump(str(tmp_path / "nan"), pg(pg_db))
    assert "\n" not in str(caught.value)
    write_raw_dump(str(tmp_path / "dupes"), {"": pa.concat_tables([make_table(3, 4), make_table(2, 4)])})
    with pytest.raises(InvalidDataError, match="duplicate ids in namespace '': 'id-0', 'id-1'"):
        transfer.import_dump(str(tmp_path / "dupes"), pg(pg_db))
    vecfmt.write_dump(str(tmp_path / "huge"), make_table(2, 16_001))
    with pytest.raises(InvalidDataError, match="16001 dimensions; pgvector stores at most 16000"):
        transfer.import_dump(str(tmp_path / "huge"), pg(pg_db))
    vecfmt.write_dump(str(tmp_path / "wide"), make_table(2, 2001))
    with pytest.raises(InvalidDataError, match=r"hnsw indexes on vector support up to 2000 dimensions.*halfvec"):
        transfer.import_dump(str(tmp_path / "wide"), pg(pg_db, index="hnsw"))
    with pytest.raises(InvalidDataError, match="ivfflat does not index vector by manhattan"):
        transfer.import_dump(str(tmp_path / "nan"), pg(pg_db, index="ivfflat", metric="manhattan"))
    vecfmt.write_dump(str(tmp_path / "sparse"), make_table(3, 4, sparse=True))
    with pytest.raises(StoreError, match="pass sparse_dim=N"):
        transfer.import_dump(str(tmp_path / "sparse"), pg(pg_db))
    with pytest.raises(InvalidDataError, match=r"sparse_values of id 'id-\d' has an index >= the dimension 10"):
        transfer.import_dump(str(tmp_path / "sparse"), pg(pg_db, sparse_dim=10))
    # a table made for an import that failed before its first commit is gone again, bookkeeping too
    assert run_sql(pg_db, f"SELECT to_regclass('items'), to_regclass('{PROGRESS_TABLE}')") == [(None, None)]


def test_unsorted_sparse_indices_are_refused_clearly(tmp_path, pg_db):
    table = make_table(2, 4).append_column(
        "sparse_values", pa.array([{"indices": [3, 1], "values": [1.0, 2.0]}, None], SPARSE_TYPE))
    with pytest.raises(InvalidDataError, match="sparse_values malformed for id 'id-0'"):
        vecfmt.write_dump(str(tmp_path / "w"), table)  # the writer refuses it
    write_raw_dump(str(tmp_path / "d"), {"": table})  # a hand-made dump: the import refuses it
    with pytest.raises(InvalidDataError, match="sparse_values malformed for id 'id-0'"):
        transfer.import_dump(str(tmp_path / "d"), pg(pg_db, sparse_dim=10))


def _with(dsn: str, **parts: object) -> str:
    url = urlsplit(dsn)
    netloc = f"{parts.get('user', url.username)}:{parts.get('password', url.password)}@" \
             f"{parts.get('host', url.hostname)}:{parts.get('port', url.port)}"  # fmt: skip
    return urlunsplit(url._replace(netloc=netloc))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("problem", ["wrong password", "no server on that port", "unknown host",
                                     "missing table", "missing database"])  # fmt: skip
def test_errors_are_one_line_and_never_show_the_password(tmp_path, pg_db, caplog, problem):
    caplog.set_level(logging.DEBUG)
    dsn = {
        "wrong password": _with(pg_db, password="Wr0ng-" + PASSWORD),
        "no server on that port": _with(pg_db, port=_free_port()),
        "unknown host": _with(pg_db, host="no-such-host.invalid"),
        "missing table": pg_db,
        "missing database": urlunsplit(urlsplit(pg_db)._replace(path="/no_such_db")),
    }[problem]
    vecfmt.write_dump(str(tmp_path / "d"), make_table(3, 2))
    actions = [lambda: transfer.export(pg(dsn, "nope"), str(tmp_path / "e"))]
    if problem != "missing table":  # an import creates a missing table
        actions.append(lambda: transfer.import_dump(str(tmp_path / "d"), pg(dsn)))
    expected = {"wrong password": "password authentication failed", "no server on that port": "refused",
                "unknown host": "no-such-host.invalid", "missing table": "table 'nope' does not exist",
                "missing database": "does not exist"}[problem]  # fmt: skip
    for action in actions:
        with pytest.raises(StoreError) as caught:
            action()
        message = str(caught.value)
        assert "\n" not in message and PASSWORD not in message, message
        error = caught.value  # no chained driver error (whose text may hold the connection string) is shown
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
        assert expected in message, message
    assert PASSWORD not in caplog.text


def test_passwords_stay_out_of_manifests_and_logs(tmp_path, pg_db, caplog):
    caplog.set_level(logging.DEBUG)
    vecfmt.write_dump(str(tmp_path / "a"), make_table(10, 4))
    transfer.import_dump(str(tmp_path / "a"), pg(pg_db))
    transfer.export(pg(pg_db), str(tmp_path / "b"))
    assert PASSWORD not in (tmp_path / "b" / "manifest.json").read_text()
    assert PASSWORD not in caplog.text


def test_password_from_pgpassword_and_options_for_the_rest(tmp_path, pg_db, monkeypatch):
    url = urlsplit(pg_db)
    monkeypatch.setenv("PGPASSWORD", url.password)
    monkeypatch.setenv("PGUSER", url.username)
    vecfmt.write_dump(str(tmp_path / "a"), make_table(10, 4))
    uri = f"pgvector://?host={url.hostname}&port={url.port}&dbname={url.path[1:]}&table=items"
    transfer.import_dump(str(tmp_path / "a"), uri)
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(10,)]
    monkeypatch.setenv("PGPASSWORD", "Wr0ng-" + PASSWORD)
    with pytest.raises(StoreError) as caught:
        transfer.export(uri, str(tmp_path / "b"))
    assert "password authentication failed" in str(caught.value) and PASSWORD not in str(caught.value)


def test_option_mistakes_are_clear(tmp_path, pg_db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(3, 2))
    with pytest.raises(StoreError, match="unknown option 'tabel'"):
        transfer.import_dump(str(tmp_path / "a"), pg(pg_db, None, tabel="items"))
    with pytest.raises(StoreError, match="needs the option table=NAME"):
        transfer.import_dump(str(tmp_path / "a"), pg(pg_db, None))
    with pytest.raises(StoreError, match="exactly one of table=NAME or query="):
        transfer.export(pg(pg_db, "items", query="SELECT 1"), str(tmp_path / "b"))
    with pytest.raises(StoreError, match="not in an option"):
        transfer.export(pg(pg_db, "items", password="x"), str(tmp_path / "b"))
    with pytest.raises(StoreError, match="index must be auto, hnsw, ivfflat or none"):
        transfer.import_dump(str(tmp_path / "a"), pg(pg_db, index="btree"))


def test_creating_the_extension_needs_permission(tmp_path, pg_db):
    run_sql(pg_db, "DROP ROLE IF EXISTS vecfmt_limited", "CREATE ROLE vecfmt_limited LOGIN PASSWORD 'limited-pw'",
            "GRANT CREATE ON SCHEMA public TO vecfmt_limited")
    try:
        limited = _with(pg_db, user="vecfmt_limited", password="limited-pw")
        vecfmt.write_dump(str(tmp_path / "a"), make_table(3, 2))
        with pytest.raises(StoreError, match="not allowed to create the pgvector extension") as caught:
            transfer.import_dump(str(tmp_path / "a"), pg(limited))
        assert "limited-pw" not in str(caught.value)
        run_sql(pg_db, "CREATE EXTENSION vector")  # once an administrator has: fine
        transfer.import_dump(str(tmp_path / "a"), pg(limited))
        assert run_sql(pg_db, "SELECT count(*) FROM items") == [(3,)]
    finally:
        run_sql(pg_db, "DROP TABLE IF EXISTS items", f"DROP TABLE IF EXISTS {PROGRESS_TABLE}",
                "DROP OWNED BY vecfmt_limited", "DROP ROLE vecfmt_limited")


def test_cli_errors_are_one_clear_line(tmp_path, pg_db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(3, 2))
    run = vecfmt_cli("import", str(tmp_path / "a"), pg(_with(pg_db, password="Wr0ng-" + PASSWORD)))
    assert_one_clear_error(run, "password authentication failed")
    assert PASSWORD not in run.stderr + run.stdout
    run = vecfmt_cli("export", pg(pg_db, "missing"), str(tmp_path / "b"))
    assert_one_clear_error(run, "table 'missing' does not exist")


# --- other stores and search -----------------------------------------------------------------------------


def test_pgvector_to_lancedb_to_pgvector(tmp_path, pg_db):
    table = make_table(500, 32, document=True)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="euclidean")
    transfer.import_dump(str(tmp_path / "a"), pg(pg_db))
    lance = f"lancedb://{tmp_path}/lance?table=items"
    assert transfer.copy(pg(pg_db), lance).rows == 500
    assert transfer.copy(lance, pg(pg_db, "back")).rows == 500
    manifest = transfer.export(pg(pg_db, "back"), str(tmp_path / "b"))
    assert manifest.vectors[0].metric == "euclidean"
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


def test_search_uses_the_index_and_finds_the_vector_itself(tmp_path, pg_db):
    table = make_table(300, 16)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="euclidean")
    importer = open_importer(pg(pg_db))
    try:
        importer.prepare(vecfmt.open_dump(str(tmp_path / "a")).manifest, if_exists=IfExists.FAIL)
        rows_done = 0
        for batch in vecfmt.open_dump(str(tmp_path / "a")).batches(""):
            rows_done += batch.num_rows
            importer.write("", batch, rows_done=rows_done)
        importer.finish()
        query = table.column("values").combine_chunks().values.to_numpy().reshape(300, 16)[42]
        hits = importer.search(query, 3)
        assert hits[0][0] == "id-42" and hits[0][1] == pytest.approx(0.0, abs=1e-5)
        assert len(hits) == 3 and hits[1][1] >= hits[0][1]
    finally:
        importer.close()


# --- replace, locks, identity, the shared progress table, jsonb numbers ----------------------------------

STAGED = "items__vecfmt_replace"


def _corrupt_last_file(root: str) -> None:
    """Flip bytes in the middle of the dump's last part file: its SHA-256 no longer matches."""
    with open(f"{root}/manifest.json") as f:
        path = f"{root}/{json.load(f)['files'][-1]['path']}"
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\xde\xad\xbe\xef" * 4)


@pytest.mark.parametrize("broken", ["sha256", "nul_in_json"])
def test_a_failed_replace_leaves_the_old_table_untouched(tmp_path, pg_db, broken):
    old = make_table(1000, 4, seed=1)
    vecfmt.write_dump(str(tmp_path / "old"), old)
    transfer.import_dump(str(tmp_path / "old"), pg(pg_db))
    new = make_table(200, 4, seed=2, prefix="new-")
    if broken == "nul_in_json":  # valid JSON that jsonb refuses, well after the first batches
        metadata = new.column("metadata").to_pylist()
        metadata[150] = json.dumps({"bad": "a\u0000b"})
        new = new.set_column(new.schema.get_field_index("metadata"), "metadata", pa.array(metadata, pa.string()))
    bad = str(tmp_path / "bad")
    vecfmt.write_dump(bad, new, options=vecfmt.ParquetOptions(max_file_rows=50))
    if broken == "sha256":
        _corrupt_last_file(bad)
    with pytest.raises((InvalidDataError, DumpError)):
        transfer.import_dump(bad, pg(pg_db), if_exists="replace", batch_size=20)
    transfer.export(pg(pg_db), str(tmp_path / "back"))
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "back")).table(""), old)
    assert run_sql(pg_db, f"SELECT to_regclass('{STAGED}') IS NULL, to_regclass('{PROGRESS_TABLE}') IS NULL") == [
        (True, True)]  # fmt: skip


def _interrupted_replace(dump: str, uri: str, batches: int, if_exists: IfExists = IfExists.REPLACE) -> None:
    """Commit ``batches`` batches of a replace (or another ``if_exists``), then stop as a killed run would."""
    importer = open_importer(uri)
    try:
        importer.prepare(vecfmt.open_dump(dump).manifest, if_exists=if_exists)
        rows_done = 0
        for batch in list(vecfmt.open_dump(dump).batches("", batch_size=50))[:batches]:
            rows_done += batch.num_rows
            importer.write("", batch, rows_done=rows_done)
        importer._loader.close()  # type: ignore[attr-defined]  # wait until every batch is committed
        assert importer.rows_committed() == rows_done  # type: ignore[attr-defined]
    finally:
        importer.close()


def test_an_interrupted_replace_resumes_and_a_new_one_clears_what_it_staged(tmp_path, pg_db):
    old, new = make_table(300, 4, seed=1), make_table(400, 4, seed=2, prefix="new-")
    vecfmt.write_dump(str(tmp_path / "old"), old)
    vecfmt.write_dump(str(tmp_path / "new"), new)
    transfer.import_dump(str(tmp_path / "old"), pg(pg_db))
    _interrupted_replace(str(tmp_path / "new"), pg(pg_db), 3)
    assert run_sql(pg_db, "SELECT count(*) FROM items", f"SELECT count(*) FROM {STAGED}") == [(150,)]
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(300,)]  # untouched while the new rows load
    result = transfer.import_dump(str(tmp_path / "new"), pg(pg_db), if_exists="replace", resume=True)
    assert (result.rows_skipped, result.rows) == (150, 250)
    transfer.export(pg(pg_db), str(tmp_path / "back"))
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "back")).table(""), new)
    assert run_sql(pg_db, f"SELECT to_regclass('{STAGED}') IS NULL") == [(True,)]
    # The swapped-in table carries the usual names: no "__vecfmt_replace" left on it anywhere.
    names = run_sql(pg_db, "SELECT relname FROM pg_class WHERE relname LIKE 'items%' ORDER BY 1")
    assert names == [("items",), ("items_embedding_hnsw_idx",), ("items_pkey",)]
    assert run_sql(pg_db, "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%vecfmt_replace%'") == [(0,)]
    assert "staging_for" not in run_sql(pg_db, "SELECT obj_description('items'::regclass)")[0][0]

    # A fresh replace (no resume) clears what an interrupted one staged ...
    _interrupted_replace(str(tmp_path / "old"), pg(pg_db), 2)
    transfer.import_dump(str(tmp_path / "old"), pg(pg_db), if_exists="replace")
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(300,)]
    # ... but never a table of that name that vecfmt did not stage.
    run_sql(pg_db, f"CREATE TABLE {STAGED} (precious int)", f"INSERT INTO {STAGED} VALUES (1)")
    with pytest.raises(StoreError, match=f"{STAGED}.* was not staged by vecfmt"):
        transfer.import_dump(str(tmp_path / "new"), pg(pg_db), if_exists="replace")
    assert run_sql(pg_db, f"SELECT precious FROM {STAGED}") == [(1,)]
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(300,)]


def test_a_resume_with_another_if_exists_and_an_append_onto_an_unfinished_import_are_refused(tmp_path, pg_db):
    """Hostile review: a resume ran whatever if_exists it was given (an interrupted append resumed as 'replace'
    kept the old rows: 40,000 for 20,000), and an append onto the table an interrupted import created (no primary
    key yet) loaded every row again (rc 0, ids repeated). Both are refused, changing nothing."""
    old, new = make_table(300, 4, seed=1), make_table(400, 4, seed=2, prefix="new-")
    vecfmt.write_dump(str(tmp_path / "old"), old)
    vecfmt.write_dump(str(tmp_path / "new"), new)
    transfer.import_dump(str(tmp_path / "old"), pg(pg_db))
    _interrupted_replace(str(tmp_path / "new"), pg(pg_db), 2, IfExists.APPEND)
    for wrong in ("replace", "upsert", "fail"):
        with pytest.raises(StoreError, match="ran with if_exists append; resume it with the same"):
            transfer.import_dump(str(tmp_path / "new"), pg(pg_db), if_exists=wrong, resume=True)
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(400,)]
    transfer.import_dump(str(tmp_path / "new"), pg(pg_db), if_exists="append", resume=True)
    assert run_sql(pg_db, "SELECT count(*), count(DISTINCT id) FROM items") == [(700, 700)]

    _interrupted_replace(str(tmp_path / "new"), pg(pg_db, "fresh"), 2, IfExists.FAIL)  # it creates the table
    for mode in ("append", "upsert"):
        run = vecfmt_cli("import", str(tmp_path / "new"), pg(pg_db, "fresh"), "--if-exists", mode)
        assert_one_clear_error(run, "was created by an import that did not finish", "--resume")
    assert run_sql(pg_db, "SELECT count(*) FROM fresh") == [(100,)]
    transfer.import_dump(str(tmp_path / "new"), pg(pg_db, "fresh"), resume=True)
    assert run_sql(pg_db, "SELECT count(*), count(DISTINCT id) FROM fresh") == [(400, 400)]


def test_a_locked_table_is_one_clear_error_not_a_hang(tmp_path, pg_db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(50, 4))
    transfer.import_dump(str(tmp_path / "a"), pg(pg_db))
    with psycopg.connect(pg_db) as holder:  # a reader in a long transaction
        holder.execute("SELECT count(*) FROM items")
        started = time.monotonic()
        run = vecfmt_cli("import", str(tmp_path / "a"), pg(pg_db, lock_timeout="1s"), "--if-exists", "replace",
                         timeout=60)  # fmt: skip
        assert time.monotonic() - started < 30
        assert_one_clear_error(run, "table public.items is locked by another session", "lock_timeout=1s",
                               "--resume")  # fmt: skip
        assert PASSWORD not in run.stderr
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(50,)]
    run = vecfmt_cli("import", str(tmp_path / "a"), pg(pg_db, lock_timeout="soon"), "--if-exists", "replace")
    assert_one_clear_error(run, "lock_timeout")


def test_copying_a_table_onto_itself_is_refused(tmp_path, pg_db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(50, 4))
    transfer.import_dump(str(tmp_path / "a"), pg(pg_db))
    other_spelling = pg(pg_db, schema="public")
    run = vecfmt_cli("copy", pg(pg_db), other_spelling, "--if-exists", "replace", timeout=60)
    assert_one_clear_error(run, "are the same table")
    assert PASSWORD not in run.stderr
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(50,)]
    assert transfer.copy(pg(pg_db), pg(pg_db, "items2")).rows == 50  # another table: fine


def _waiting_on_locks(dsn: str) -> int:
    return run_sql(dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'")[0][0]  # fmt: skip


def _wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_one_import_finishing_never_drops_the_progress_table_under_another(tmp_path, pg_db):
    import threading

    vecfmt.write_dump(str(tmp_path / "a"), make_table(100, 4))
    dump = vecfmt.open_dump(str(tmp_path / "a"))
    run_sql(pg_db, "CREATE EXTENSION vector",
            "CREATE TABLE items_a (id text PRIMARY KEY, embedding vector(4), metadata jsonb)")
    first = open_importer(pg(pg_db, "items_a", index="none", lock_timeout="60s"))
    second = open_importer(pg(pg_db, "items_b", index="none", lock_timeout="60s"))
    errors: list[BaseException] = []

    def run(step) -> None:
        try:
            step()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    def load_second() -> None:
        second.prepare(dump.manifest, if_exists=IfExists.FAIL)
        second.write("", dump.table("").to_batches()[0], rows_done=100)
        second.finish()

    try:
        first.prepare(dump.manifest, if_exists=IfExists.APPEND)
        first.write("", dump.table("").to_batches()[0], rows_done=100)
        with psycopg.connect(pg_db) as holder:  # holds the progress table so the two meet there
            holder.execute(f"LOCK TABLE {PROGRESS_TABLE} IN SHARE MODE")
            finishing = threading.Thread(target=run, args=(first.finish,))
            finishing.start()
            _wait_for(lambda: _waiting_on_locks(pg_db) == 1)  # the first import, about to clean up
            starting = threading.Thread(target=run, args=(load_second,))
            starting.start()
            _wait_for(lambda: _waiting_on_locks(pg_db) == 2)  # the second, about to record its start
        finishing.join(60)
        starting.join(60)
    finally:
        first.close()
        second.close()
    assert not errors, errors
    assert run_sql(pg_db, "SELECT count(*) FROM items_a") == [(100,)]
    assert run_sql(pg_db, "SELECT count(*) FROM items_b") == [(100,)]
    assert run_sql(pg_db, f"SELECT to_regclass('{PROGRESS_TABLE}') IS NULL") == [(True,)]


def test_jsonb_changes_numbers_as_documented(tmp_path, pg_db):
    table = make_table(3, 4)
    texts = ['{"z": -0.0, "big": 1.5e300, "f": 1.0, "e": 1E2, "small": 1e-7, "n": 12345678901234567890}',
             '{"b": 1, "a": [0.1, -0, 2.50]}', None]  # fmt: skip
    table = table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(texts, pa.string()))
    _, back = round_trip(tmp_path, pg_db, table)
    got = [json.loads(t) if t is not None else None for t in back.sort_by("id").column("metadata").to_pylist()]
    first = got[0]
    assert first["big"] == 15 * 10**299 and isinstance(first["big"], int)  # 1.5e300: a 301-digit integer
    assert first["z"] == 0 and str(first["z"]) == "0.0"  # the sign of -0.0 is lost
    assert first["f"] == 1.0 and isinstance(first["f"], float)  # 1.0 keeps its ".0"
    assert first["e"] == 100 and isinstance(first["e"], int)  # an exponent is written out
    assert str(first["small"]) == "1e-07" and first["n"] == 12345678901234567890  # exact digits
    assert got[1] == {"a": [0.1, 0, 2.5], "b": 1}
    diff = diff_dumps(str(tmp_path / "a"), str(tmp_path / "b"))
    assert diff.namespaces[""].metadata_changed == 1  # diff tells the changed row apart (types and signs count)
