"""Milvus against the real engine embedded in this process (Milvus Lite, ``milvus-lite``): round trips
bit for bit, partitions as namespaces, scalar and dynamic fields with their types in ``extra.milvus``, the
if_exists modes, a replace that fails leaving the old collection, kill -9 mid-import and --resume, search,
verify, and bad inputs as one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

import vecfmt
from tests.helpers import (
    assert_one_clear_error,
    assert_split_export_is_the_whole,
    make_table,
    rewrite_part,
    vecfmt_cli,
    write_namespaced,
)
from vecfmt import transfer
from vecfmt.errors import StoreError
from vecfmt.ops.diff import diff_dumps
from vecfmt.schema import vectors_array
from vecfmt.stores.base import Slice, open_exporter, open_importer
from vecfmt.stores.milvus.catalog import dense_matrix, narrow


@pytest.fixture
def db(tmp_path):
    """A Milvus Lite folder; whatever a test opened in this process is released by the store on close."""
    return str(tmp_path / "milvus.db")


def uri(db: str, collection: str = "docs", **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"collection": collection, **options}.items())
    return f"milvus://{db}?{query}"


def client(db: str):
    """A raw MilvusClient on the folder (for checks the store does not offer); close it with ``release``."""
    from vecfmt.stores.milvus.connect import sdk

    return sdk().MilvusClient(db)


def release(db: str, c) -> None:
    from milvus_lite.server_manager import server_manager_instance

    c.close()
    server_manager_instance.release_server(db)


def assert_identical(got: pa.Table, want: pa.Table) -> None:
    """Same columns; ids, raw float32 bits (nulls included), metadata text and documents identical."""
    got, want = got.sort_by("id"), want.sort_by("id")
    assert got.column_names == want.column_names
    for name in want.column_names:
        a, b = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(b.type):
            assert a.is_valid().equals(b.is_valid()), name
            va = a.values.to_numpy(zero_copy_only=False).view(np.uint32)
            vb = b.values.to_numpy(zero_copy_only=False).view(np.uint32)
            np.testing.assert_array_equal(va, vb, err_msg=name)
        else:
            assert a.to_pylist() == b.to_pylist(), name


def odd_floats(n: int, dim: int, seed: int) -> np.ndarray:
    """Random float32 bit patterns over every exponent (subnormals, huge magnitudes), finite only, with -0.0,
    the smallest subnormal and the largest float placed in."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, size=(n, dim), dtype=np.uint64).astype(np.uint32)
    bits[(bits & 0x7F800000) == 0x7F800000] &= 0xBF7FFFFF  # inf/NaN exponents -> finite ones
    out = bits.view(np.float32)
    out[0, :4] = [-0.0, np.float32(1e-45), np.finfo(np.float32).max, -np.finfo(np.float32).tiny]
    out[1::7, 1] = -0.0
    return out


def unicode_table(n: int, dim: int) -> pa.Table:
    """make_table's rows with awkward ids (quotes, backslashes, unicode, a newline) and odd float32 values."""
    table = make_table(n, dim, document=True)
    ids = [f"id-{i}" for i in range(n)]
    ids[:6] = ['q"uote', "back\\slash", "über-🙂", "a'b", "new\nline", "日本語"]
    table = table.set_column(0, "id", pa.array(ids, pa.string()))
    return table.set_column(1, "values", vectors_array(odd_floats(n, dim, 1)))


# --- round trips -------------------------------------------------------------------------------------


def test_dump_to_milvus_and_back_is_bit_identical(tmp_path, db):
    table = unicode_table(2_600, 24)  # more rows than one page (page=500 below)
    nested = [None if i % 7 == 3 else json.dumps(
        {"i": i, "big": 2**62 + i, "f": i / 3, "neg": -0.0, "deep": {"a": [1, {"b": [None, True, "ü"]}]}},
        ensure_ascii=False) for i in range(len(table))]  # fmt: skip
    table = table.set_column(2, "metadata", pa.array(nested, pa.string()))
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="euclidean")
    target = uri(db, page=500)
    assert transfer.import_dump(str(tmp_path / "a"), target, batch_size=700).rows == 2_600
    manifest = transfer.export(target, str(tmp_path / "b"), batch_size=500)
    assert [(v.name, v.column, v.dimension, v.metric) for v in manifest.vectors] == \
        [("default", "values", 24, "euclidean")]
    assert manifest.total_rows == 2_600 and manifest.document
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)
    assert diff_dumps(str(tmp_path / "a"), str(tmp_path / "b")).identical
    saved = manifest.extra["milvus"]
    assert {f["name"]: f["type"] for f in saved["fields"]} == \
        {"id": "VARCHAR", "default": "FLOAT_VECTOR", "metadata": "JSON", "document": "VARCHAR"}
    # the exported dump imports again into a collection of the same shape and exports the same rows
    transfer.import_dump(str(tmp_path / "b"), uri(db, "again"))
    transfer.export(uri(db, "again"), str(tmp_path / "c"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "c")).table(""), table)


def test_float32_bits_survive_over_many_random_vectors(tmp_path, db):
    """vector-io's Milvus import rounded 31% of vectors; here every bit pattern must come back."""
    n, dim = 6_000, 64
    values = odd_floats(n, dim, 7)
    assert (np.abs(values) < np.finfo(np.float32).tiny).sum() > 0  # subnormals are in
    assert (np.abs(values) > 1e30).sum() > 1_000
    table = pa.table({"id": pa.array([f"v{i}" for i in range(n)]), "values": vectors_array(values),
                      "metadata": pa.nulls(n, pa.string())})  # fmt: skip
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="dot")
    transfer.import_dump(str(tmp_path / "a"), uri(db), batch_size=2_000)
    transfer.export(uri(db), str(tmp_path / "b"), batch_size=1_000)
    got = vecfmt.open_dump(str(tmp_path / "b")).table("").sort_by("id")
    want = table.sort_by("id")
    np.testing.assert_array_equal(got.column("values").combine_chunks().values.to_numpy().view(np.uint32),
                                  want.column("values").combine_chunks().values.to_numpy().view(np.uint32))


def test_named_and_sparse_vectors_round_trip(tmp_path, db):
    table = make_table(900, 8, sparse=True, named={"title": 4}, seed=3)
    sparse = table.column("sparse_values").combine_chunks()  # Milvus takes non-negative sparse weights only
    weights = pa.ListArray.from_arrays(sparse.field("values").offsets, pa.compute.abs(sparse.field("values").values))
    sparse = pa.StructArray.from_arrays([sparse.field("indices"), weights], fields=list(sparse.type))
    table = table.set_column(table.schema.get_field_index("sparse_values"), "sparse_values", sparse)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="cosine")
    transfer.import_dump(str(tmp_path / "a"), uri(db))
    manifest = transfer.export(uri(db), str(tmp_path / "b"), batch_size=400)
    assert [(v.name, v.column) for v in manifest.vectors] == [("default", "values"), ("title", "values_title")]
    assert manifest.sparse_values
    got = vecfmt.open_dump(str(tmp_path / "b")).table("")
    assert_identical(got, table)


def test_namespaces_are_partitions(tmp_path, db):
    tables = {ns: make_table(400, 8, seed=s, prefix=f"{ns or 'd'}-") for s, ns in enumerate(["", "acme", "glob_ex"])}
    write_namespaced(str(tmp_path / "a"), tables, max_chunksize=1000, metric="dot")
    transfer.import_dump(str(tmp_path / "a"), uri(db), batch_size=150)
    c = client(db)
    try:
        assert sorted(c.list_partitions("docs")) == ["_default", "acme", "glob_ex"]
        assert c.get_partition_stats("docs", "acme")["row_count"] == 400
    finally:
        release(db, c)
    manifest = transfer.export(uri(db), str(tmp_path / "b"))
    assert {n.name: n.rows for n in manifest.namespaces} == {"": 400, "acme": 400, "glob_ex": 400}
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    for ns, table in tables.items():
        assert_identical(dump.table(ns), table)
    transfer.export(uri(db), str(tmp_path / "c"), namespaces=["acme"])
    assert vecfmt.open_dump(str(tmp_path / "c")).manifest.namespace_names() == ["acme"]


def test_scalar_dynamic_and_sparse_fields_keep_their_types(tmp_path, db):
    from pymilvus import DataType

    c = client(db)
    try:
        schema = c.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("emb", DataType.FLOAT_VECTOR, dim=4)
        schema.add_field("sp", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("title", DataType.VARCHAR, max_length=100)
        schema.add_field("year", DataType.INT32, nullable=True)
        schema.add_field("score", DataType.DOUBLE)
        schema.add_field("ok", DataType.BOOL)
        schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4, max_length=10)
        schema.add_field("info", DataType.JSON, nullable=True)
        index = c.prepare_index_params()
        index.add_index("emb", index_type="FLAT", metric_type="IP")
        index.add_index("sp", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        c.create_collection("src", schema=schema, index_params=index)
        rows = [{"pk": i * 10, "emb": np.arange(4, dtype=np.float32) + i, "sp": {i: 0.5, 100 + i: 1.5},
                 "title": f"t{i}", "year": None if i % 3 == 0 else 1990 + i, "score": i / 4, "ok": i % 2 == 0,
                 "tags": ["a", "b"][: i % 3], "info": {"n": i} if i % 2 else None, "extra": f"dyn{i}"}
                for i in range(50)]  # fmt: skip
        c.insert("src", rows)
        c.flush("src")
    finally:
        release(db, c)
    manifest = transfer.export(uri(db, "src"), str(tmp_path / "a"))
    saved = manifest.extra["milvus"]
    types = {f["name"]: f["type"] for f in saved["fields"]}
    assert types == {"pk": "INT64", "emb": "FLOAT_VECTOR", "sp": "SPARSE_FLOAT_VECTOR", "title": "VARCHAR",
                     "year": "INT32", "score": "DOUBLE", "ok": "BOOL", "tags": "ARRAY", "info": "JSON"}  # fmt: skip
    assert saved["enable_dynamic_field"] and saved["primary_key"] == "pk"
    assert manifest.primary.metric == "dot" and manifest.sparse_values
    dumped = vecfmt.open_dump(str(tmp_path / "a")).table("").sort_by("id")
    row = json.loads(dumped.filter(pa.compute.equal(dumped.column("id"), "50")).column("metadata")[0].as_py())
    assert row == {"title": "t5", "year": 1995, "score": 1.25, "ok": False, "tags": ["a", "b"], "info": {"n": 5},
                   "extra": "dyn5"}  # fmt: skip
    row = json.loads(dumped.filter(pa.compute.equal(dumped.column("id"), "0")).column("metadata")[0].as_py())
    assert row == {"title": "t0", "score": 0.0, "ok": True, "tags": [], "extra": "dyn0"}  # null year, null info
    # back into a new collection: the same field types, the same dump
    transfer.import_dump(str(tmp_path / "a"), uri(db, "copy"))
    c = client(db)
    try:
        fields = {f["name"]: f["type"].name for f in c.describe_collection("copy")["fields"]}
        assert fields == types
        assert c.describe_collection("copy")["enable_dynamic_field"]
    finally:
        release(db, c)
    transfer.export(uri(db, "copy"), str(tmp_path / "b"))
    assert diff_dumps(str(tmp_path / "a"), str(tmp_path / "b")).identical
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), dumped)


def test_float16_and_bfloat16_widen_and_narrow_exactly():
    """Milvus Lite 3.2 has no FLOAT16/BFLOAT16 fields, so the conversions are checked on their own."""
    half = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float16)
    matrix, mask = dense_matrix([row.tobytes() for row in half], "FLOAT16_VECTOR", 8)
    assert mask is None and np.array_equal(matrix, half.astype(np.float32))
    wrapped, _ = dense_matrix([[row.tobytes()] for row in half], "FLOAT16_VECTOR", 8)  # pymilvus 3's row shape
    assert np.array_equal(wrapped, matrix)
    assert [bytes(r) for r in narrow(matrix, "FLOAT16_VECTOR", "h")] == [row.tobytes() for row in half]
    bf = (np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    matrix, _ = dense_matrix([row.tobytes() for row in bf], "BFLOAT16_VECTOR", 8)
    assert np.array_equal(matrix.view(np.uint32), bf.astype(np.uint32) << 16)
    assert [bytes(r) for r in narrow(matrix, "BFLOAT16_VECTOR", "b")] == [row.tobytes() for row in bf]
    with pytest.raises(vecfmt.errors.StoreError, match="rounded"):
        narrow(np.full((1, 8), 0.1, np.float32), "FLOAT16_VECTOR", "h")


# --- if_exists ---------------------------------------------------------------------------------------------


def test_if_exists_modes(tmp_path, db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(300, 8))
    vecfmt.write_dump(str(tmp_path / "more"), make_table(100, 8, prefix="more-", seed=2))
    changed = make_table(300, 8, seed=5)
    vecfmt.write_dump(str(tmp_path / "changed"), changed)
    target = uri(db)
    transfer.import_dump(str(tmp_path / "a"), target)
    run = vecfmt_cli("import", str(tmp_path / "a"), target)
    assert_one_clear_error(run, "already holds 300 rows", "append, upsert or replace")
    transfer.import_dump(str(tmp_path / "more"), target, if_exists="append")
    assert transfer.export(target, str(tmp_path / "e1")).total_rows == 400
    transfer.import_dump(str(tmp_path / "changed"), target, if_exists="upsert")
    got = vecfmt.open_dump(str(tmp_path / "e1")).table("")
    transfer.export(target, str(tmp_path / "e2"))
    got = vecfmt.open_dump(str(tmp_path / "e2")).table("")
    assert got.num_rows == 400
    assert_identical(got.filter(pa.compute.starts_with(got.column("id"), "id-")), changed)
    transfer.import_dump(str(tmp_path / "more"), target, if_exists="replace")
    transfer.export(target, str(tmp_path / "e3"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "e3")).table(""), make_table(100, 8, prefix="more-", seed=2))
    c = client(db)
    try:
        assert c.list_collections() == ["docs"]  # nothing staged or set aside is left
    finally:
        release(db, c)


def test_failed_replace_leaves_the_old_collection(tmp_path, db):
    old = make_table(200, 8, prefix="old-")
    vecfmt.write_dump(str(tmp_path / "old"), old)
    transfer.import_dump(str(tmp_path / "old"), uri(db))
    vecfmt.write_dump(str(tmp_path / "new"), make_table(3_000, 8, prefix="new-"),
                      options=vecfmt.ParquetOptions(max_file_rows=1_000))  # fmt: skip
    manifest = json.loads((tmp_path / "new" / "manifest.json").read_text())
    manifest["files"][2]["sha256"] = "0" * 64  # the third file fails its checksum, after 2,000 rows were written
    (tmp_path / "new" / "manifest.json").write_text(json.dumps(manifest))
    run = vecfmt_cli("import", str(tmp_path / "new"), uri(db), "--if-exists", "replace", "--batch-size", "500")
    assert_one_clear_error(run, "SHA-256")
    transfer.export(uri(db), str(tmp_path / "after"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "after")).table(""), old)
    c = client(db)
    try:
        assert c.list_collections() == ["docs"]
    finally:
        release(db, c)


# --- kill -9 mid-import, then --resume ----------------------------------------------------------------


def _kill_mid_import(dump: str, target: str, env: dict[str, str], state, at: int, *args: str) -> int:
    """Run ``vecfmt import`` in a subprocess, kill -9 it once ``at`` rows are acknowledged; the rows it had."""
    proc = subprocess.Popen([sys.executable, "-m", "vecfmt.cli", "import", dump, target, "--batch-size", "1000", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def acknowledged() -> int:
        try:
            return max(json.loads(p.read_text())["rows_done"] for p in (state / "milvus").glob("import-*.json"))
        except (OSError, ValueError, KeyError):
            return 0

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and acknowledged() < at:
        time.sleep(0.02)
    assert proc.poll() is None, ("the import ended before it could be killed", proc.communicate())
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    return acknowledged()


def test_kill_9_mid_import_then_resume_is_exact(tmp_path, db):
    n = 9_000
    table = make_table(n, 16, document=True)
    dump = str(tmp_path / "a")
    vecfmt.write_dump(dump, table, options=vecfmt.ParquetOptions(max_file_rows=2_000))
    state = tmp_path / "state"
    env = {**os.environ, "VECFMT_STATE_DIR": str(state)}
    target = uri(db, batch=500)
    stopped = _kill_mid_import(dump, target, env, state, 3_000)
    assert 3_000 <= stopped < n, stopped

    run = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", dump, target, "--resume", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["rows_skipped"] == stopped
    manifest = transfer.export(target, str(tmp_path / "b"))
    assert manifest.total_rows == n  # nothing twice, nothing missing
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)
    assert not list((state / "milvus").glob("import-*.json"))  # complete: nothing left to resume


def test_kill_9_mid_replace_keeps_the_old_collection_then_resume_swaps(tmp_path, db):
    old = make_table(300, 16, prefix="old-")
    vecfmt.write_dump(str(tmp_path / "old"), old)
    transfer.import_dump(str(tmp_path / "old"), uri(db))
    n = 6_000
    table = make_table(n, 8, prefix="new-")
    dump = str(tmp_path / "new")
    vecfmt.write_dump(dump, table, options=vecfmt.ParquetOptions(max_file_rows=1_500))
    state = tmp_path / "state"
    env = {**os.environ, "VECFMT_STATE_DIR": str(state)}
    stopped = _kill_mid_import(dump, uri(db, batch=500), env, state, 1_500, "--if-exists", "replace")
    assert 1_500 <= stopped < n, stopped
    transfer.export(uri(db), str(tmp_path / "during"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "during")).table(""), old)  # readers still see the old rows

    command = ["import", dump, uri(db, batch=500), "--if-exists", "replace", "--resume", "--json"]
    run = subprocess.run([sys.executable, "-m", "vecfmt.cli", *command], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["rows_skipped"] == stopped
    transfer.export(uri(db), str(tmp_path / "after"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "after")).table(""), table)
    c = client(db)
    try:
        assert c.list_collections() == ["docs"]
    finally:
        release(db, c)


# --- search and verify -----------------------------------------------------------------------------------


def test_search_finds_each_vector_in_its_partition(tmp_path, db):
    tables = {"": make_table(300, 16), "other": make_table(300, 16, seed=9, prefix="o-")}
    write_namespaced(str(tmp_path / "a"), tables, max_chunksize=1000, metric="euclidean")
    transfer.import_dump(str(tmp_path / "a"), uri(db))
    exporter = open_exporter(uri(db))
    try:
        for ns, table in tables.items():
            prefix = "o-" if ns else "id-"
            for row in (0, 17, 299):
                hits = exporter.search(table.column("values")[row].values.to_numpy(), 3, namespace=ns)
                assert hits[0][0] == f"{prefix}{row}" and abs(hits[0][1]) < 1e-4
                assert all(h[0].startswith(prefix) for h in hits)
                assert hits[0][1] <= hits[1][1] <= hits[2][1]  # L2: squared distances, nearest first
    finally:
        exporter.close()
    importer = open_importer(uri(db))
    try:
        hits = importer.search(tables[""].column("values")[5].values.to_numpy(), 1)
        assert hits[0][0] == "id-5"
    finally:
        importer.close()


def test_verify_passes_after_an_import(tmp_path, db):
    from vecfmt.quality.verify import verify

    vecfmt.write_dump(str(tmp_path / "a"), make_table(500, 16, document=True))
    transfer.import_dump(str(tmp_path / "a"), uri(db))
    report = verify(str(tmp_path / "a"), uri(db), full=True)
    assert report.passed, report
    run = vecfmt_cli("verify", str(tmp_path / "a"), uri(db))
    assert run.code == 0, run


def test_export_resumes_from_its_token(tmp_path, db):
    vecfmt.write_dump(str(tmp_path / "a"), unicode_table(1_000, 8))
    transfer.import_dump(str(tmp_path / "a"), uri(db))
    exporter = open_exporter(uri(db))
    try:
        exporter.describe()
        chunks = list(exporter.batches(exporter.slices("")[0], batch_size=100))
        rest = list(exporter.batches(exporter.slices("")[0], batch_size=100, resume=chunks[3].resume_token))
    finally:
        exporter.close()
    first = [i for c in chunks for i in c.batch.column("id").to_pylist()]
    assert len(first) == 1_000 and len(set(first)) == 1_000
    assert [i for c in rest for i in c.batch.column("id").to_pylist()] == first[400:]


# --- bad inputs, one line each -------------------------------------------------------------------------------


def test_bad_inputs_are_one_clear_line(tmp_path, db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(20, 8))
    vecfmt.write_dump(str(tmp_path / "b"), make_table(20, 16, prefix="other-"))
    assert vecfmt_cli("import", str(tmp_path / "a"), uri(db)).code == 0
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "b"), uri(db), "--if-exists", "append"),
                           "8-dimensional", "16", "nothing was written")  # fmt: skip
    with pytest.raises(StoreError, match="'nope' does not exist"):
        transfer.export(uri(db, "nope"), str(tmp_path / "x"))
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "a"), uri(db, colection="x")),
                           "unknown option 'colection'")  # fmt: skip
    with pytest.raises(StoreError, match="'my-docs' is not a valid collection name"):
        transfer.import_dump(str(tmp_path / "a"), uri(db, "my-docs"))
    long = make_table(20, 8).set_column(0, "id", pa.array([f"id-{i}" for i in range(19)] + ["x" * 600]))
    vecfmt.write_dump(str(tmp_path / "long"), long)
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "long"), uri(db, "longids")),
                           "600 bytes long", "at most 512", "id_max_length")  # fmt: skip
    write_namespaced(str(tmp_path / "twice"), {"a": make_table(5, 8), "b": make_table(5, 8)}, max_chunksize=1000)
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "twice"), uri(db, "twice")),
                           "more than one namespace")  # fmt: skip
    write_namespaced(str(tmp_path / "ns"), {"bad/name": make_table(5, 8)}, max_chunksize=1000)
    with pytest.raises(StoreError, match="'bad/name' cannot be a partition name"):
        transfer.import_dump(str(tmp_path / "ns"), uri(db, "ns"))
    c = client(db)
    try:
        assert c.list_collections() == ["docs"]  # none of the refused imports created anything
    finally:
        release(db, c)
    # a longer key is an option away; an existing collection's own max_length is what ids are checked against
    transfer.import_dump(str(tmp_path / "long"), uri(db, "longids", id_max_length=1000))
    assert transfer.export(uri(db, "longids"), str(tmp_path / "l2")).total_rows == 20
    vecfmt.write_dump(str(tmp_path / "longer"), make_table(3, 8, prefix="y" * 1200))
    with pytest.raises(vecfmt.errors.InvalidDataError, match="at most 1000"):
        transfer.import_dump(str(tmp_path / "longer"), uri(db, "longids"), if_exists="append")


def test_token_never_shows(tmp_path, monkeypatch):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4))
    secret = "root:s3cr3t-p4ss"
    env = {**os.environ, "MILVUS_TOKEN": secret}
    run = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", str(tmp_path / "a"),
                          "milvus://127.0.0.1:1?collection=docs&timeout=2"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "s3cr3t" not in run.stderr + run.stdout
    run = vecfmt_cli("import", str(tmp_path / "a"), "milvus://root:s3cr3t-p4ss@127.0.0.1:1?collection=docs&timeout=2")
    assert run.code != 0 and "s3cr3t" not in run.stderr + run.stdout, run.stderr


def test_copy_between_collections_of_one_lite_folder(tmp_path, db):
    table = make_table(700, 8, document=True)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), uri(db))
    result = transfer.copy(uri(db), uri(db, "twin"))  # one Milvus Lite, shared by both sides and released once
    assert result.rows == 700
    transfer.export(uri(db, "twin"), str(tmp_path / "b"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)
    assert_one_clear_error(vecfmt_cli("copy", uri(db), f"milvus://{os.path.relpath(db)}?collection=docs"),
                           "same table")  # fmt: skip


def test_a_row_without_a_named_vector_is_refused_and_nothing_is_left(tmp_path, db):
    table = make_table(10, 4, named={"title": 4})
    title = table.column("values_title").combine_chunks()
    title = pa.FixedSizeListArray.from_arrays(title.values, 4, mask=pa.array([i == 2 for i in range(10)]))
    table = table.set_column(table.schema.get_field_index("values_title"), "values_title", title)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    with pytest.raises(vecfmt.errors.InvalidDataError, match="row 'id-2' has no 'values_title' vector"):
        transfer.import_dump(str(tmp_path / "a"), uri(db))
    c = client(db)
    try:
        assert c.list_collections() == []  # the collection this import created is dropped
    finally:
        release(db, c)


def test_every_awkward_id_can_be_the_page_cursor(tmp_path, db):
    """One row per page: each id becomes the ``id > "..."`` bound of the next query (pymilvus's own
    query_iterator fails on the first id holding a double quote)."""
    ids = ['q"uote', "back\\slash", 'both\\"', "new\nline", "cr\rx", "tab\tx", "über-🙂", "a'b", "日本語", "", " "]
    table = make_table(len(ids), 4).set_column(0, "id", pa.array(ids, pa.string()))
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), uri(db))
    transfer.export(uri(db, page=1), str(tmp_path / "b"), batch_size=1)
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


def test_int64_keys_take_only_canonical_ids(tmp_path, db):
    """int() reads "00012", "+12" and " 7" as numbers: several ids would become one key (hostile review)."""
    from pymilvus import DataType

    c = client(db)
    try:
        schema = c.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=8)
        index = c.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="COSINE")
        c.create_collection("ic", schema=schema, index_params=index)
    finally:
        release(db, c)
    for ids in (["12", "00012"], ["7", " 7"], ["1", "+1"], ["0", "-0"], ["9223372036854775808"]):
        vecfmt.write_dump(str(tmp_path / "d"), make_table(len(ids), 8).set_column(0, "id", pa.array(ids)),
                          overwrite=True)
        run = vecfmt_cli("import", str(tmp_path / "d"), uri(db, "ic"), "--if-exists", "append")
        assert_one_clear_error(run, "canonical form within 64 bits")
    vecfmt.write_dump(str(tmp_path / "d"), make_table(3, 8).set_column(0, "id", pa.array(["-5", "0", "12"])),
                      overwrite=True)
    assert vecfmt_cli("import", str(tmp_path / "d"), uri(db, "ic"), "--if-exists", "append").code == 0


def test_a_refused_replace_drops_nothing_it_cannot_prove_it_staged(tmp_path, db):
    vecfmt.write_dump(str(tmp_path / "d"), make_table(3, 8))
    for name in ("c", "c_vecfmt_old", "c_vecfmt_staged"):
        transfer.import_dump(str(tmp_path / "d"), uri(db, name))
    run = vecfmt_cli("import", str(tmp_path / "d"), uri(db, "c"), "--if-exists", "replace")
    assert_one_clear_error(run, "c_vecfmt_old exists")
    c = client(db)
    try:
        assert sorted(c.list_collections()) == ["c", "c_vecfmt_old", "c_vecfmt_staged"]
        c.drop_collection("c_vecfmt_old")
    finally:
        release(db, c)
    run = vecfmt_cli("import", str(tmp_path / "d"), uri(db, "c"), "--if-exists", "replace")
    assert_one_clear_error(run, "c_vecfmt_staged exists, and nothing shows vecfmt staged it")
    c = client(db)
    try:
        assert sorted(c.list_collections()) == ["c", "c_vecfmt_staged"]
    finally:
        release(db, c)


def _sparse_table(n: int, *, prefix: str = "id-", negative_row: int | None = None) -> pa.Table:
    """make_table's rows with sparse weights Milvus takes (non-negative), but for one negative weight in
    ``negative_row``: a row the dump format allows and only the store refuses."""
    table = make_table(n, 8, sparse=True, prefix=prefix)
    sparse = [None if r is None else {"indices": r["indices"], "values": [abs(v) for v in r["values"]]}
              for r in table.column("sparse_values").to_pylist()]  # fmt: skip
    if negative_row is not None:
        sparse[negative_row] = {"indices": [1, 2], "values": [-1.0, 2.0]}
    at = table.schema.get_field_index("sparse_values")
    return table.set_column(at, "sparse_values", pa.array(sparse, table.schema.field("sparse_values").type))


def test_a_refused_first_batch_leaves_no_collection_behind(tmp_path, db):
    """Milvus refuses a row of the first request after prepare() created the collection: the collection this
    run created is dropped (a replace's staged one too, the old target kept as it was); a dump broken in its
    first batch (NaN) leaves nothing either. Once rows are acknowledged, a refusal keeps them for --resume."""
    good = _sparse_table(300)
    vecfmt.write_dump(str(tmp_path / "refused"), _sparse_table(300, negative_row=5))
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "refused"), uri(db, "fresh")),
                           "insert failed", "sparse")  # fmt: skip
    nan = good.column("values").combine_chunks().values.to_numpy(zero_copy_only=False).copy()
    nan[8 * 7] = np.nan  # row 7: the core's check refuses it after prepare() created the collection
    rewrite_part(str(tmp_path / "refused"), 0, good.set_column(1, "values", vectors_array(nan.reshape(300, 8))))
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "refused"), uri(db, "fresh")), "NaN")
    c = client(db)
    try:
        assert c.list_collections() == []
    finally:
        release(db, c)

    old = _sparse_table(50, prefix="old-")
    vecfmt.write_dump(str(tmp_path / "old"), old)
    transfer.import_dump(str(tmp_path / "old"), uri(db))
    vecfmt.write_dump(str(tmp_path / "refused2"), _sparse_table(300, negative_row=5))
    with pytest.raises(StoreError, match="insert failed"):
        transfer.import_dump(str(tmp_path / "refused2"), uri(db), if_exists="replace")
    transfer.export(uri(db), str(tmp_path / "after"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "after")).table(""), old)
    c = client(db)
    try:
        assert c.list_collections() == ["docs"]  # no docs_vecfmt_staged left
    finally:
        release(db, c)

    # refused after the first 1,000 rows were acknowledged: those stay, and the error says how to go on
    late = _sparse_table(3_000, prefix="late-", negative_row=2_500)
    vecfmt.write_dump(str(tmp_path / "late"), late, options=vecfmt.ParquetOptions(max_file_rows=1_000))
    run = vecfmt_cli("import", str(tmp_path / "late"), uri(db, "late", batch=500), "--batch-size", "1000")
    assert_one_clear_error(run, "insert failed", "rows of the dump are committed", "--resume")
    assert transfer.export(uri(db, "late"), str(tmp_path / "late-out")).total_rows >= 1_000


def test_pages_are_read_by_column(tmp_path, db):
    """The export reads each page's vectors from the answer's packed bytes (``columnar``), not row by row:
    guards the fast path against a pymilvus whose result no longer has that shape (it would fall back)."""
    from vecfmt.stores.milvus.exporter import columnar

    table = make_table(50, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), uri(db))
    exporter = open_exporter(uri(db))
    try:
        assert exporter.page_rows(10_000) == 10_000  # 32 bytes a row: the core's batch, not 1,000
        page = exporter.target.client().query("docs", filter="", output_fields=["*"], limit=50,
                                              strict_float32=True)  # fmt: skip
        read = columnar(page)
        assert read is not None
        rows, matrices = read
        by_id = {r["id"]: i for i, r in enumerate(rows)}
        want = table.column("values").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(50, 8)
        order = [by_id[i] for i in table.column("id").to_pylist()]
        np.testing.assert_array_equal(matrices["default"][order].view(np.uint32), want.view(np.uint32))
    finally:
        exporter.close()


def test_abort_keeps_a_collection_it_created_once_another_writer_put_rows_in_it(tmp_path, db):
    """Hostile review: a broken dump's abort() dropped the collection this run created even when another
    writer had found it and written there. It is kept when it holds more rows than this run wrote, and
    dropped when it holds only this run's."""
    from vecfmt.stores.base import IfExists

    vecfmt.write_dump(str(tmp_path / "a"), make_table(20, 4))
    manifest = vecfmt.open_dump(str(tmp_path / "a")).manifest
    for other_writer in (True, False):
        importer = open_importer(uri(db, "fresh" if other_writer else "other"))
        try:
            importer.prepare(manifest, if_exists=IfExists.FAIL)
            if other_writer:
                row = {"id": "by-other", "default": [0.5, 0.25, 0.0, 1.0], "metadata": {}}
                importer.target.client().insert("fresh", [row])
                importer.target.client().flush("fresh")
            importer.abort()
        finally:
            importer.close()
    c = client(db)
    try:
        assert c.list_collections() == ["fresh"]
        c.load_collection("fresh")
        assert [r["id"] for r in c.query("fresh", filter="", output_fields=["id"], limit=10)] == ["by-other"]
    finally:
        release(db, c)


# --- slices: primary-key ranges ------------------------------------------------------------------------


def read_slice(exporter, part, *, batch_size: int = 100, resume: str | None = None) -> list:
    return list(exporter.batches(part, batch_size=batch_size, resume=resume))


def table_of(chunks: list) -> pa.Table:
    return pa.Table.from_batches([c.batch for c in chunks])


def assert_slices_cover_once(exporter, namespace: str, want: pa.Table, key_of, *, at_least: int) -> list:
    """The namespace's slices: JSON keys, ranges open at both ends and ascending, each row read in the one
    slice whose range holds its key, and together every row once, as one whole read gives them."""
    parts = exporter.slices(namespace)
    assert len(parts) >= at_least
    assert [json.loads(json.dumps(p.key)) for p in parts] == [p.key for p in parts]  # the job state keeps them
    starts, ends = [p.key["pk"][0] for p in parts], [p.key["pk"][1] for p in parts]
    assert starts[0] is None and ends[-1] is None and ends[:-1] == starts[1:] and starts[1:] == sorted(starts[1:])
    tables = [table_of(read_slice(exporter, p, batch_size=7)) for p in parts]
    for (low, high), got in zip(zip(starts, ends, strict=True), tables, strict=True):
        assert got.num_rows > 0
        for record_id in got.column("id").to_pylist():
            key = key_of(record_id)
            assert (low is None or key >= low) and (high is None or key < high), (record_id, low, high)
    whole = table_of(read_slice(exporter, Slice(namespace)))
    assert_identical(pa.concat_tables(tables), whole)
    assert_identical(whole, want)
    return parts


def test_varchar_key_slices_cover_every_row_once(tmp_path, db, monkeypatch):
    table = unicode_table(300, 8)
    awkward = ['q"uote', "back\\slash", 'both\\"', "new\nline", "cr\rx", "tab\tx", "über-🙂", "a'b", "日本語", "",
               " ", "~", "\U0010ffff"]  # fmt: skip
    table = table.set_column(0, "id", pa.array(awkward + [f"id-{i}" for i in range(300 - len(awkward))]))
    tables = {"": table, "acme": make_table(90, 8, seed=2, prefix="acme-", document=True)}
    write_namespaced(str(tmp_path / "a"), tables)
    source = uri(db)
    transfer.import_dump(str(tmp_path / "a"), source)
    exporter = open_exporter(source)
    try:
        exporter.describe()
        monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 30)
        assert exporter.slices("") == [Slice("")]  # Milvus Lite: one process, one slice
        monkeypatch.setattr("vecfmt.stores.milvus.exporter.SPLIT_LOCAL", True)
        parts = assert_slices_cover_once(exporter, "", table, str, at_least=10)
        assert_slices_cover_once(exporter, "acme", tables["acme"], str, at_least=3)
        # a cut holding a quote, a backslash or a line break is a literal, not filter text
        cut = {"pk": [None, 'q"uote']}
        below = table_of(read_slice(exporter, Slice("", cut))).column("id").to_pylist()
        assert sorted(below) == sorted(i for i in table.column("id").to_pylist() if i < 'q"uote')
        cut = {"pk": ["new\nline", "tab\tx"]}
        inside = table_of(read_slice(exporter, Slice("", cut))).column("id").to_pylist()
        assert sorted(inside) == sorted(i for i in table.column("id").to_pylist() if "new\nline" <= i < "tab\tx")
        # a resume token continues inside its slice and stops at the slice's end
        part = parts[3]
        chunks = read_slice(exporter, part, batch_size=7)
        assert len(chunks) >= 3
        rest = read_slice(exporter, part, batch_size=7, resume=chunks[1].resume_token)
        assert table_of(rest).column("id").to_pylist() == table_of(chunks[2:]).column("id").to_pylist()
        with pytest.raises(StoreError, match="not a slice"):
            read_slice(exporter, Slice("", {"pk": [1, None]}))  # an integer bound on a VARCHAR key
    finally:
        exporter.close()
    assert_split_export_is_the_whole(source, tmp_path, monkeypatch)


def test_int64_key_slices_cover_every_row_once(tmp_path, db, monkeypatch):
    from pymilvus import DataType

    c = client(db)
    try:
        schema = c.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=8)
        index = c.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="COSINE")
        c.create_collection("ic", schema=schema, index_params=index)
    finally:
        release(db, c)
    rng = np.random.default_rng(4)
    edges = [-(2**63), -(2**63) + 1, -1, 0, 1, 2, 9, 10, 2**31, 2**63 - 2, 2**63 - 1]
    spread = rng.integers(-(2**63), 2**63 - 1, size=250, dtype=np.int64).tolist()
    keys = list(dict.fromkeys(edges + spread + list(range(100, 140))))
    table = make_table(len(keys), 8).set_column(0, "id", pa.array([str(k) for k in keys]))
    vecfmt.write_dump(str(tmp_path / "a"), table)
    source = uri(db, "ic")
    transfer.import_dump(str(tmp_path / "a"), source, if_exists="append")
    exporter = open_exporter(source)
    try:
        exporter.describe()
        monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 30)
        monkeypatch.setattr("vecfmt.stores.milvus.exporter.SPLIT_LOCAL", True)
        want = table_of(read_slice(exporter, Slice("")))
        assert sorted(int(i) for i in want.column("id").to_pylist()) == sorted(keys)
        parts = assert_slices_cover_once(exporter, "", want, int, at_least=10)
        assert all(isinstance(p.key["pk"][0], int) for p in parts[1:])
        with pytest.raises(StoreError, match="not a slice"):
            read_slice(exporter, Slice("", {"pk": ["1 or true", None]}))  # text never reaches an INT64 filter
    finally:
        exporter.close()
    assert_split_export_is_the_whole(source, tmp_path, monkeypatch)


def test_a_partition_key_collection_splits_as_one_namespace(tmp_path, db, monkeypatch):
    from pymilvus import DataType

    c = client(db)
    try:
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=64, is_partition_key=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=4)
        index = c.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="L2")
        c.create_collection("pkc", schema=schema, index_params=index, num_partitions=4)
        vectors = np.random.default_rng(6).standard_normal((90, 4)).astype(np.float32)
        c.insert("pkc", [{"pk": f"k{i:03d}", "tenant": f"t{i % 3}", "vec": vectors[i].tolist()} for i in range(90)])
    finally:
        release(db, c)
    monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 15)
    monkeypatch.setattr("vecfmt.stores.milvus.exporter.SPLIT_LOCAL", True)
    exporter = open_exporter(uri(db, "pkc"))
    try:
        assert exporter.describe().namespaces == {"": 90}
        want = table_of(read_slice(exporter, Slice("")))
        assert want.num_rows == 90
        assert_slices_cover_once(exporter, "", want, str, at_least=5)
    finally:
        exporter.close()


def test_export_with_workers_on_milvus_lite_is_one_clear_line(tmp_path, db):
    """Milvus Lite locks its folder to one process, and the job's own process holds it: a second worker is
    refused at once (not retried), naming what to do."""
    tables = {ns: make_table(20, 4, seed=s, prefix=f"{ns}-") for s, ns in enumerate(["a", "b"])}  # two partitions
    write_namespaced(str(tmp_path / "a"), tables)
    transfer.import_dump(str(tmp_path / "a"), uri(db))
    run = vecfmt_cli("export", uri(db), str(tmp_path / "b"), "--workers", "2")
    assert_one_clear_error(run, "one process at a time", "--workers", "not retried")
    assert "retries)" not in run.stderr  # refused at once
    run = vecfmt_cli("export", uri(db), str(tmp_path / "b"), "--workers", "1", "--resume")  # the same job
    assert run.code == 0, run.stderr
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    for ns, table in tables.items():
        assert_identical(dump.table(ns), table)
