"""Qdrant against the real qdrant-client in local mode (no Qdrant server builds here): round trips bit for
bit (dot, Euclid; cosine as documented), the id rule, named and sparse vectors, namespaces, if_exists modes,
a replace that fails mid-way, a client killed mid-import and resumed, search, verify, bad inputs.

Local mode commits every point to SQLite on its own, so these tests keep to a few hundred rows."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import (
    assert_one_clear_error,
    assert_split_export_is_the_whole,
    assert_tables_identical,
    make_table,
    rewrite_part,
    vecfmt_cli,
    write_namespaced,
    write_raw_dump,
)
from vecfmt import transfer
from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.schema import vectors_array
from vecfmt.stores.base import IfExists, Slice, StoreURI, open_exporter, open_importer
from vecfmt.stores.qdrant.ids import ID_KEY, ID_NAMESPACE, NAMESPACE_KEY, point_id, point_order

ODD_IDS = ["0", "42", "007", "-1", "18446744073709551615", "18446744073709551616", "über/ß 1", "名前", "",
           str(uuid.UUID(int=7)), str(uuid.UUID(int=0xABC)).upper(), "1.5", " 3"]  # fmt: skip


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Import progress files in the test's folder (subprocesses inherit it)."""
    monkeypatch.setenv("VECFMT_STATE_DIR", str(tmp_path / "state"))


def q(path, collection: str = "docs", **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"collection": collection, **options}.items())
    return f"qdrant://{path}?{query}"


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def rich_table(n: int, dim: int, *, seed: int = 0, nulls: bool = True) -> pa.Table:
    """make_table's rows (nested metadata, unicode, nulls, documents, a sparse vector) with odd ids, and a named
    vector that some rows lack."""
    table = make_table(n, dim, seed=seed, document=True, sparse=True, named={"title": 4})
    ids = ODD_IDS + [f"id-{i}" for i in range(n - len(ODD_IDS))]
    table = table.set_column(0, "id", pa.array(ids, pa.string()))
    title = table.column("values_title").combine_chunks()
    if not nulls:
        return table
    title = pa.FixedSizeListArray.from_arrays(title.values, 4, mask=pa.array([i % 5 == 2 for i in range(n)]))
    return table.set_column(table.schema.get_field_index("values_title"), "values_title", title)


def points(path, collection: str) -> dict[object, dict]:
    """Point id -> payload, read with the client itself (no vecfmt handle may be open on the folder)."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(path))
    try:
        found, _ = client.scroll(collection, limit=10_000, with_payload=True)
        return {p.id: p.payload for p in found}
    finally:
        client.close()


def collections(path) -> tuple[set[str], dict[str, str]]:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(path))
    try:
        names = {c.name for c in client.get_collections().collections}
        return names, {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    finally:
        client.close()


# --- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_round_trip_is_bit_identical(tmp_path, metric):
    table = rich_table(120, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric=metric)
    uri = q(tmp_path / "db")
    result = transfer.import_dump(str(tmp_path / "a"), uri, batch_size=50)
    assert result.rows == 120
    manifest = transfer.export(uri, str(tmp_path / "b"), batch_size=35)
    assert [(v.name, v.column, v.dimension, v.metric) for v in manifest.vectors] == \
        [("default", "values", 8, metric), ("title", "values_title", 4, metric)]
    assert manifest.sparse_values and manifest.document and manifest.total_rows == 120
    assert manifest.extra["qdrant"]["sparse"] == "sparse" and manifest.extra["qdrant"]["document"] == "document"
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "b")).table("")), by_id(table))

    # the manifest recreates the collection: a second import and export give the same rows again
    transfer.import_dump(str(tmp_path / "b"), q(tmp_path / "db", "again"))
    transfer.export(q(tmp_path / "db", "again"), str(tmp_path / "c"))
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "c")).table("")), by_id(table))


def test_ids_follow_the_documented_rule(tmp_path):
    table = make_table(len(ODD_IDS), 4).set_column(0, "id", pa.array(ODD_IDS, pa.string()))
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="dot")
    transfer.import_dump(str(tmp_path / "a"), q(tmp_path / "db"))
    held = points(tmp_path / "db", "docs")
    assert 0 in held and 42 in held and 2**64 - 1 in held  # canonical unsigned integers stay integers
    assert str(uuid.UUID(int=7)) in held  # canonical UUIDs stay UUIDs
    for mapped in ("007", "-1", "18446744073709551616", "名前", "", str(uuid.UUID(int=0xABC)).upper(), " 3"):
        key = str(uuid.uuid5(ID_NAMESPACE, mapped))
        assert held[key][ID_KEY] == mapped, mapped
    assert ID_KEY not in held[42] and ID_KEY not in held[str(uuid.UUID(int=7))]
    assert point_id("x", "ns") == (str(uuid.uuid5(ID_NAMESPACE, "2:ns:x")), True)
    assert point_id("b:c", "a") != point_id("c", "a:b")


def test_unnamed_vector_for_a_plain_dump_and_export_of_a_foreign_collection(tmp_path):
    from qdrant_client import QdrantClient, models

    vecfmt.write_dump(str(tmp_path / "a"), make_table(30, 6), metric="euclidean")
    transfer.import_dump(str(tmp_path / "a"), q(tmp_path / "db"))
    client = QdrantClient(path=str(tmp_path / "db"))
    try:
        params = client.get_collection("docs").config.params
        assert params.vectors.size == 6 and params.vectors.distance == models.Distance.EUCLID  # unnamed
        # a collection vecfmt did not make: Manhattan, uint ids, a payload of every JSON type, two sparse vectors
        client.create_collection("foreign", vectors_config={"img": models.VectorParams(
            size=3, distance=models.Distance.MANHATTAN)}, sparse_vectors_config={
            "a": models.SparseVectorParams(), "b": models.SparseVectorParams(modifier=models.Modifier.IDF)})
        client.upsert("foreign", [models.PointStruct(id=i, vector={"img": [i, 0.5, -1.25], "b": models.SparseVector(
            indices=[9, 2], values=[1.0, 2.0])}, payload={"n": i, "f": 0.5, "t": None, "l": [1, "x"]})
            for i in range(5)])
    finally:
        client.close()
    run = vecfmt_cli("export", q(tmp_path / "db", "foreign"), str(tmp_path / "f"))
    assert_one_clear_error(run, "several sparse vectors", "sparse=NAME")
    manifest = transfer.export(q(tmp_path / "db", "foreign", sparse="b"), str(tmp_path / "f"))
    assert [(v.name, v.metric) for v in manifest.vectors] == [("img", "manhattan")]
    got = vecfmt.open_dump(str(tmp_path / "f")).table("")
    assert got.column("id").to_pylist() == ["0", "1", "2", "3", "4"]
    assert got.column("sparse_values")[0].as_py() == {"indices": [2, 9], "values": [2.0, 1.0]}  # sorted
    assert json.loads(got.column("metadata")[3].as_py()) == {"n": 3, "f": 0.5, "t": None, "l": [1, "x"]}
    assert manifest.extra["qdrant"]["sparse_modifier"] == "idf"
    # and back into a new collection: same names, distance, IDF modifier
    transfer.import_dump(str(tmp_path / "f"), q(tmp_path / "db", "back"))
    client = QdrantClient(path=str(tmp_path / "db"))
    try:
        config = client.get_collection("back").config.params
        assert config.vectors["img"].distance == models.Distance.MANHATTAN
        assert config.sparse_vectors["b"].modifier == models.Modifier.IDF
    finally:
        client.close()


def test_unnamed_vector_with_sparse_and_a_sparse_only_dump(tmp_path):
    table = make_table(20, 4, sparse=True, document=True)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="dot")
    transfer.import_dump(str(tmp_path / "a"), q(tmp_path / "db"))
    manifest = transfer.export(q(tmp_path / "db"), str(tmp_path / "b"))
    assert manifest.extra["qdrant"]["unnamed"] is True and manifest.sparse_values
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "b")).table("")), by_id(table))
    sparse_only = table.drop_columns(["values"])
    vecfmt.write_dump(str(tmp_path / "s"), sparse_only, vectors=[])
    transfer.import_dump(str(tmp_path / "s"), q(tmp_path / "db", "sparse"))
    manifest = transfer.export(q(tmp_path / "db", "sparse"), str(tmp_path / "sb"))
    assert manifest.vectors == [] and manifest.sparse_values
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "sb")).table("")), by_id(sparse_only))


def test_cosine_round_trip_and_what_qdrant_keeps(tmp_path):
    """Qdrant stores cosine vectors normalised (v / |v|). Local mode persists what it was given and normalises
    in memory: a fresh open gives the originals back bit for bit; the session that wrote them (and a server)
    gives the normalised ones, which point the same way within float32 rounding."""
    table = make_table(60, 16)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="cosine")
    uri = q(tmp_path / "db")
    transfer.import_dump(str(tmp_path / "a"), uri)
    transfer.export(uri, str(tmp_path / "b"))  # another client: read from the folder
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "b")).table("")), by_id(table))

    from vecfmt.stores.qdrant.connect import Target

    held = Target(StoreURI.parse(uri))
    held.client()  # keeps the folder's one client open: the exporter below shares it, as in one session
    try:
        importer = open_importer(q(tmp_path / "db", "same"))
        dump = vecfmt.open_dump(str(tmp_path / "a"))
        importer.prepare(dump.manifest, if_exists=IfExists.FAIL)
        for batch in dump.batches(""):
            importer.write("", batch, rows_done=batch.num_rows)
        importer.finish()
        importer.close()
        transfer.export(q(tmp_path / "db", "same"), str(tmp_path / "c"))
    finally:
        held.close()
    got = by_id(vecfmt.open_dump(str(tmp_path / "c")).table("")).column("values").combine_chunks()
    want = by_id(table).column("values").combine_chunks()
    g = got.values.to_numpy().reshape(-1, 16).astype(np.float64)
    w = want.values.to_numpy().reshape(-1, 16).astype(np.float64)
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    assert np.abs(g - unit).max() < 1e-6  # v / |v| computed in float32
    assert np.abs(np.linalg.norm(g, axis=1) - 1).max() < 1e-6
    assert ((g * w).sum(axis=1) / np.linalg.norm(w, axis=1)).min() > 1 - 1e-6  # the same direction
    assert not np.array_equal(g, w)


def test_namespaces_keep_their_ids_apart_and_count(tmp_path):
    tables = {ns: make_table(40, 4, seed=s) for s, ns in enumerate(["", "acme", "tenant/7"])}  # same ids in each
    write_namespaced(str(tmp_path / "a"), tables, metric="dot")
    uri = q(tmp_path / "db")
    transfer.import_dump(str(tmp_path / "a"), uri)
    held = points(tmp_path / "db", "docs")
    assert len(held) == 120
    assert sum(1 for p in held.values() if p.get(NAMESPACE_KEY) == "tenant/7") == 40
    exporter = open_exporter(uri)
    try:
        assert exporter.describe().namespaces == {"": 40, "acme": 40, "tenant/7": 40}
    finally:
        exporter.close()
    manifest = transfer.export(uri, str(tmp_path / "b"))
    assert {n.name: n.rows for n in manifest.namespaces} == {"": 40, "acme": 40, "tenant/7": 40}
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    for ns, table in tables.items():
        assert_tables_identical(by_id(dump.table(ns)), by_id(table))
    transfer.export(uri, str(tmp_path / "c"), namespaces=["acme"])
    assert vecfmt.open_dump(str(tmp_path / "c")).manifest.namespace_names() == ["acme"]


def test_export_resumes_from_its_offset(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(100, 4), metric="dot")
    uri = q(tmp_path / "db", page="10")
    transfer.import_dump(str(tmp_path / "a"), uri)
    exporter = open_exporter(uri)
    try:
        exporter.describe()
        chunks = list(exporter.batches(exporter.slices("")[0], batch_size=10))
        rest = list(exporter.batches(exporter.slices("")[0], batch_size=10, resume=chunks[3].resume_token))
        assert list(exporter.batches(exporter.slices("")[0], batch_size=10, resume=chunks[-1].resume_token)) == []
    finally:
        exporter.close()
    first = [i for c in chunks for i in c.batch.column("id").to_pylist()]
    assert len(first) == 100 and len(set(first)) == 100
    assert [i for c in rest for i in c.batch.column("id").to_pylist()] == first[40:]


# --- if_exists -------------------------------------------------------------------------------------


def test_if_exists_modes(tmp_path):
    table = make_table(50, 4)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="dot")
    uri = q(tmp_path / "db")
    transfer.import_dump(str(tmp_path / "a"), uri)
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "a"), uri), "already holds 50 points", "upsert")
    transfer.import_dump(str(tmp_path / "a"), uri, if_exists="upsert")  # same point ids: same points
    vecfmt.write_dump(str(tmp_path / "more"), make_table(10, 4, prefix="more-"), metric="dot")
    transfer.import_dump(str(tmp_path / "more"), uri, if_exists="append")
    assert len(points(tmp_path / "db", "docs")) == 60

    vecfmt.write_dump(str(tmp_path / "new"), make_table(10, 4, prefix="new-", seed=3), metric="dot")
    transfer.import_dump(str(tmp_path / "new"), uri, if_exists="replace")
    names, aliases = collections(tmp_path / "db")
    assert aliases["docs"] in names and "docs" not in names  # the name is now an alias of the loaded collection
    transfer.export(uri, str(tmp_path / "b"))
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "b")).table("")),
                            by_id(make_table(10, 4, prefix="new-", seed=3)))
    # a second replace switches the alias in one request and drops the collection it named before
    first = aliases["docs"]
    transfer.import_dump(str(tmp_path / "a"), uri, if_exists="replace")
    names, aliases = collections(tmp_path / "db")
    assert first not in names and aliases["docs"] in names and len(names) == 1
    transfer.export(uri, str(tmp_path / "c"))
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "c")).table("")), by_id(table))
    # a replace into a name that holds nothing is a plain import: a collection of that name, no alias
    transfer.import_dump(str(tmp_path / "new"), q(tmp_path / "db", "fresh"), if_exists="replace")
    names, aliases = collections(tmp_path / "db")
    assert "fresh" in names and "fresh" not in aliases


def test_replace_failing_mid_way_leaves_the_old_collection(tmp_path):
    old = make_table(30, 4, prefix="old-")
    vecfmt.write_dump(str(tmp_path / "old"), old, metric="dot")
    uri = q(tmp_path / "db")
    transfer.import_dump(str(tmp_path / "old"), uri)
    dump = str(tmp_path / "new")
    vecfmt.write_dump(dump, make_table(90, 4, prefix="new-"), metric="dot",
                      options=vecfmt.ParquetOptions(max_file_rows=30))  # fmt: skip
    manifest = json.loads((tmp_path / "new" / "manifest.json").read_text())
    broken = tmp_path / "new" / manifest["files"][2]["path"]
    data = bytearray(broken.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, wrong SHA-256: found when the third file is read
    broken.write_bytes(bytes(data))
    run = vecfmt_cli("import", dump, uri, "--if-exists", "replace", "--batch-size", "30")
    assert_one_clear_error(run, "SHA-256")
    names, aliases = collections(tmp_path / "db")
    assert names == {"docs"} and aliases == {}  # the staged collection is gone
    transfer.export(uri, str(tmp_path / "b"))
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "b")).table("")), by_id(old))


def test_replace_stopped_between_delete_and_alias_is_finished_by_resume(tmp_path, monkeypatch):
    """The first replace of a plain collection deletes it, then makes the name an alias: a failure between the
    two leaves the new data complete in the staged collection, and --resume finishes the swap."""
    from qdrant_client import QdrantClient

    vecfmt.write_dump(str(tmp_path / "old"), make_table(5, 4, prefix="old-"), metric="dot")
    uri = q(tmp_path / "db")
    transfer.import_dump(str(tmp_path / "old"), uri)
    table = make_table(20, 4, prefix="new-")
    vecfmt.write_dump(str(tmp_path / "new"), table, metric="dot")
    real = QdrantClient.update_collection_aliases

    def refuse(self, *args, **kwargs):
        raise RuntimeError("the server went away")

    monkeypatch.setattr(QdrantClient, "update_collection_aliases", refuse)
    message = one_line_refusal(transfer.import_dump, str(tmp_path / "new"), uri, if_exists="replace",
                               match="the new data is there.*20 rows of the dump are committed.*--resume")
    assert "Traceback" not in message
    monkeypatch.setattr(QdrantClient, "update_collection_aliases", real)
    names, aliases = collections(tmp_path / "db")
    assert aliases == {} and len(names) == 1 and "docs" not in names  # only the staged collection, complete
    result = transfer.import_dump(str(tmp_path / "new"), uri, resume=True)
    assert result.rows == 0 and result.rows_skipped == 20
    transfer.export(uri, str(tmp_path / "b"))
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "b")).table("")), by_id(table))


def with_nan(table: pa.Table, row: int) -> pa.Table:
    """``table`` with one NaN in row ``row``'s vector (what the checked writer refuses; a raw dump holds it)."""
    values = table.column("values").combine_chunks()
    matrix = values.values.to_numpy().reshape(len(values), -1).copy()
    matrix[row, 1] = np.nan
    return table.set_column(table.schema.get_field_index("values"), "values", vectors_array(matrix))


def test_a_refused_import_leaves_no_collection_it_created(tmp_path):
    """A bad row refuses the import (the core calls abort()): the collection this run created is dropped, whether
    the row was in the first batch (nothing sent yet) or in a later file (rows already sent); a collection that
    held points before keeps them (and the rows this run appended)."""
    db = tmp_path / "db"
    uri = q(db)
    vecfmt.write_dump(str(tmp_path / "old"), make_table(5, 4, prefix="old-"), metric="dot")
    transfer.import_dump(str(tmp_path / "old"), q(db, "kept"))  # another collection of the folder: untouched

    # a NaN vector in the first batch: the core refuses it before anything is sent
    write_raw_dump(str(tmp_path / "nan"), {"": with_nan(make_table(20, 4), 3)}, metric="dot")
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "nan"), uri), "NaN", "'id-3'")
    assert collections(db) == ({"kept"}, {})

    # metadata the store refuses (a key where vecfmt keeps ids), in the first batch: refused by the importer
    table = make_table(20, 4)
    metadata = table.column("metadata").to_pylist()
    metadata[7] = json.dumps({ID_KEY: "x"})
    table = table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(metadata))
    vecfmt.write_dump(str(tmp_path / "meta"), table, metric="dot")
    one_line_refusal(transfer.import_dump, str(tmp_path / "meta"), uri, match=f"'id-7'.*{ID_KEY}")
    assert collections(db) == ({"kept"}, {})

    # a NaN in the third file, after 60 rows were upserted into the new collection: it goes, and so does the
    # progress file (a broken dump cannot be resumed)
    late = str(tmp_path / "late")
    table = make_table(90, 4, seed=2)
    vecfmt.write_dump(late, table, metric="dot", options=vecfmt.ParquetOptions(max_file_rows=30))
    rewrite_part(late, 2, with_nan(table.slice(60), 4))
    message = one_line_refusal(transfer.import_dump, late, uri, batch_size=30, match="NaN.*'id-64'")
    assert "nothing was changed" in message
    assert collections(db) == ({"kept"}, {})
    assert not list((tmp_path / "state" / "qdrant").glob("import-*.json"))

    # the same dump appended to a collection that held points: nothing of it is dropped
    message = one_line_refusal(transfer.import_dump, late, q(db, "kept"), if_exists="append", batch_size=30,
                               match="NaN.*'id-64'")  # fmt: skip
    assert "the first 60 rows are in the target" in message
    held = points(db, "kept")
    assert len(held) == 65 and {p[ID_KEY] for p in held.values() if ID_KEY in p} >= {"old-0", "id-59"}

    # and the dump that is fine still imports into the name the refused imports left free
    transfer.import_dump(str(tmp_path / "old"), uri)
    assert len(points(db, "docs")) == 5


def test_a_point_qdrant_refuses_before_any_is_acknowledged_leaves_no_collection(tmp_path, monkeypatch):
    """Qdrant refusing the first request is a StoreError (the core calls no abort for those): the collection
    this run created still goes, and with it the progress file; one already there is kept."""
    from qdrant_client import QdrantClient

    vecfmt.write_dump(str(tmp_path / "a"), make_table(20, 4), metric="dot")
    transfer.import_dump(str(tmp_path / "a"), q(tmp_path / "db", "kept"))

    def refuse(self, *args, **kwargs):
        raise ValueError("Wrong input: the point is refused")

    monkeypatch.setattr(QdrantClient, "upsert", refuse)
    one_line_refusal(transfer.import_dump, str(tmp_path / "a"), q(tmp_path / "db"), match="upsert failed.*refused")
    assert collections(tmp_path / "db") == ({"kept"}, {})
    assert not list((tmp_path / "state" / "qdrant").glob("import-*.json"))
    # into a collection that was there: kept, and so is the progress file (0 rows) for --resume
    one_line_refusal(transfer.import_dump, str(tmp_path / "a"), q(tmp_path / "db", "kept"), if_exists="upsert",
                     match="upsert failed.*refused")  # fmt: skip
    assert collections(tmp_path / "db") == ({"kept"}, {})
    assert len(points(tmp_path / "db", "kept")) == 20


# --- a client killed mid-import ----------------------------------------------------------------------


@pytest.mark.parametrize("if_exists", ["fail", "replace"])
def test_killed_mid_import_then_resume_ends_exact(tmp_path, if_exists):
    uri = q(tmp_path / "db", batch="10")
    if if_exists == "replace":
        vecfmt.write_dump(str(tmp_path / "old"), make_table(5, 8, prefix="old-"), metric="euclidean")
        transfer.import_dump(str(tmp_path / "old"), uri)
    table = make_table(250, 8)
    dump = str(tmp_path / "a")
    vecfmt.write_dump(dump, table, metric="euclidean", options=vecfmt.ParquetOptions(max_file_rows=60))
    proc = subprocess.Popen([sys.executable, "-m", "vecfmt.cli", "import", dump, uri, "--if-exists", if_exists,
                             "--batch-size", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    state = tmp_path / "state" / "qdrant"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = [json.loads(p.read_text())["rows_done"] for p in state.glob("import-*.json")] if state.exists() else []
        if done and done[0] >= 40:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, "the import finished before it could be killed"
    if if_exists == "replace":  # until the swap, the name still gives the old rows
        names, aliases = collections(tmp_path / "db")
        assert "docs" in names and aliases == {} and len(names) == 2
        assert len(points(tmp_path / "db", "docs")) == 5
    run = vecfmt_cli("import", dump, uri, "--resume", timeout=300)
    assert run.code == 0, run
    assert "resumed after" in run.stdout, run.stdout
    transfer.export(uri, str(tmp_path / "b"))
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "b")).table("")), by_id(table))
    assert not list(state.glob("import-*.json"))  # done: nothing left to resume


# --- search and verify -------------------------------------------------------------------------------


def test_search_finds_the_right_neighbours_on_both_sides(tmp_path):
    table = make_table(80, 8)
    tables = {"": table, "acme": make_table(20, 8, seed=5)}
    write_namespaced(str(tmp_path / "a"), tables, metric="euclidean")
    uri = q(tmp_path / "db")
    importer = open_importer(uri)
    dump = vecfmt.open_dump(str(tmp_path / "a"))
    try:
        importer.prepare(dump.manifest, if_exists=IfExists.FAIL)
        done = 0
        for ns in dump.manifest.namespace_names():
            for batch in dump.batches(ns):
                done += batch.num_rows
                importer.write(ns, batch, rows_done=done)
        importer.finish()
        vectors = table.column("values").combine_chunks().values.to_numpy().reshape(-1, 8)
        query = vectors[17] + np.float32(0.01)
        exact = np.argsort(((vectors - query) ** 2).sum(axis=1))[:5]
        hits = importer.search(query, 5)
        assert [h[0] for h in hits] == [f"id-{i}" for i in exact]
        acme = importer.search(tables["acme"].column("values")[3].values.to_numpy(), 1, namespace="acme")
        assert acme[0][0] == "id-3" and acme[0][1] < 1e-5
    finally:
        importer.close()
    exporter = open_exporter(uri)
    try:
        exporter.describe()
        assert [h[0] for h in exporter.search(query, 5)] == [f"id-{i}" for i in exact]
    finally:
        exporter.close()


def test_verify_passes_and_copy_between_collections_of_one_folder(tmp_path):
    # no null named vectors: verify digests the bits under a null vector too, which no store keeps
    table = rich_table(60, 8, nulls=False)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="dot")
    uri = q(tmp_path / "db")
    transfer.import_dump(str(tmp_path / "a"), uri)
    run = vecfmt_cli("verify", str(tmp_path / "a"), uri, "--full", "--queries", "10")
    assert run.code == 0, run
    # one folder, one client shared by both sides of the copy (local mode locks the folder)
    result = transfer.copy(uri, q(tmp_path / "db", "copy"))
    assert result.rows == 60
    transfer.export(q(tmp_path / "db", "copy"), str(tmp_path / "b"))
    assert_tables_identical(by_id(vecfmt.open_dump(str(tmp_path / "b")).table("")), by_id(table))
    assert_one_clear_error(vecfmt_cli("copy", uri, q(tmp_path / "db")), "same table")


# --- bad inputs --------------------------------------------------------------------------------------


def one_line_refusal(call, *args, match: str, **kwargs) -> str:
    """In-process: the store's refusal is a StoreError/InvalidDataError of one line (the CLI prints just that)."""
    with pytest.raises((StoreError, InvalidDataError), match=match) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_inputs_are_one_clear_line(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 8), metric="dot")
    vecfmt.write_dump(str(tmp_path / "b"), make_table(5, 16, prefix="other-"), metric="dot")
    vecfmt.write_dump(str(tmp_path / "cos"), make_table(5, 8, prefix="c-"), metric="cosine")
    uri = q(tmp_path / "db")
    assert vecfmt_cli("import", str(tmp_path / "a"), uri).code == 0
    # through the CLI: exit 1, one line, no traceback
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "b"), uri, "--if-exists", "append"),
                           "8-dimensional", "16", "nothing was written")  # fmt: skip
    assert_one_clear_error(vecfmt_cli("export", q(tmp_path / "db", "nope"), str(tmp_path / "x")), "does not exist")
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "a"), q(tmp_path / "db", colection="x")),
                           "unknown option 'colection'")  # fmt: skip
    # in-process, the same errors the CLI prints
    one_line_refusal(transfer.import_dump, str(tmp_path / "cos"), uri, if_exists="append", match="distance Dot")
    one_line_refusal(transfer.export, q(tmp_path / "none"), str(tmp_path / "x"), match="no Qdrant local storage")
    assert not (tmp_path / "none").exists()
    one_line_refusal(transfer.import_dump, str(tmp_path / "a"), q(tmp_path / "db", grpc="true"),
                     match="option grpc is for a server")  # fmt: skip
    one_line_refusal(transfer.import_dump, str(tmp_path / "a"), q(tmp_path / "db", "a/b"),
                     match="not a valid Qdrant name")  # fmt: skip
    one_line_refusal(transfer.import_dump, str(tmp_path / "a"), q(tmp_path / "db", batch="0"),
                     match="batch must be between")  # fmt: skip
    table = make_table(5, 8, prefix="r-")
    table = table.set_column(table.schema.get_field_index("metadata"), "metadata",
                             pa.array([json.dumps({ID_KEY: "x"})] * 5))  # fmt: skip
    vecfmt.write_dump(str(tmp_path / "reserved"), table, metric="dot")
    one_line_refusal(transfer.import_dump, str(tmp_path / "reserved"), uri, if_exists="append",
                     match=f"'r-0'.*{ID_KEY}")  # fmt: skip
    with pytest.raises(StoreError, match="needs the option collection"):
        open_importer(f"qdrant://{tmp_path / 'db'}")


def test_api_key_never_shows(tmp_path, monkeypatch):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4), metric="dot")
    secret = "s3cr3t-key-value"
    run = vecfmt_cli("import", str(tmp_path / "a"), f"qdrant://127.0.0.1:9?collection=docs&api_key={secret}")
    assert_one_clear_error(run, "qdrant 127.0.0.1:9", "cannot connect")
    assert secret not in run.stderr + run.stdout
    monkeypatch.setenv("QDRANT_API_KEY", secret)
    message = one_line_refusal(transfer.import_dump, str(tmp_path / "a"),
                               "qdrant://127.0.0.1:9?collection=docs&grpc=true&grpc_port=9", match="cannot connect")
    assert secret not in message
    assert secret not in str(StoreURI.parse(f"qdrant://h:1?collection=c&api_key={secret}"))


def test_folder_locked_by_another_process_is_one_line(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4), metric="dot")
    transfer.import_dump(str(tmp_path / "a"), q(tmp_path / "db"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom qdrant_client import QdrantClient\n"
                               f"c = QdrantClient(path={str(tmp_path / 'db')!r})\nprint('open', flush=True)\n"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        assert_one_clear_error(vecfmt_cli("export", q(tmp_path / "db"), str(tmp_path / "b")),
                               "open in another process")  # fmt: skip
    finally:
        holder.kill()
        holder.wait()


def test_manifest_never_names_vecfmt_keys_as_metadata(tmp_path):
    tables = {"ns": make_table(10, 4, document=True)}
    write_namespaced(str(tmp_path / "a"), tables, metric="dot")
    transfer.import_dump(str(tmp_path / "a"), q(tmp_path / "db"))
    transfer.export(q(tmp_path / "db"), str(tmp_path / "b"))
    got = vecfmt.open_dump(str(tmp_path / "b")).table("ns")
    for text in got.column("metadata").to_pylist():
        assert text is None or not ({ID_KEY, NAMESPACE_KEY, "document"} & set(json.loads(text)))


def test_ids_that_would_be_one_point_are_refused(tmp_path):
    """An id written as a UUID is that UUID; another id's mapped UUID could equal it (hostile review)."""
    table = make_table(2, 4)
    clash = str(uuid.uuid5(ID_NAMESPACE, "x"))
    table = table.set_column(0, "id", pa.array(["x", clash]))
    vecfmt.write_dump(str(tmp_path / "d"), table)
    run = vecfmt_cli("import", str(tmp_path / "d"), q(tmp_path / "db"))
    assert_one_clear_error(run, "are the same Qdrant point", "'x'")
    in_namespace = str(uuid.uuid5(ID_NAMESPACE, "1:a:x"))
    write_raw_dump(str(tmp_path / "n"), {"": make_table(1, 4).set_column(0, "id", pa.array([in_namespace])),
                                         "a": make_table(1, 4).set_column(0, "id", pa.array(["x"]))})
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "n"), q(tmp_path / "db2")), "are the same Qdrant point")


def test_an_api_key_echoed_back_by_a_server_is_removed_in_every_encoding(tmp_path, monkeypatch):
    """A server (or proxy) that puts the key into its error text, raw or percent-encoded (hostile review)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import quote, quote_plus

    key = "k@y:/?#s3 cr3t"

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):
            sent = self.headers.get("api-key", "")
            body = json.dumps({"status": {"error": f"forbidden: {sent} {quote(sent, safe='')} {quote_plus(sent)}"}})
            self.send_response(403)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        vecfmt.write_dump(str(tmp_path / "d"), make_table(3, 4))
        for env, option in ((key, ""), (None, "&api_key=" + quote(key, safe=""))):
            if env:
                monkeypatch.setenv("QDRANT_API_KEY", env)
            else:
                monkeypatch.delenv("QDRANT_API_KEY", raising=False)
            run = vecfmt_cli("import", str(tmp_path / "d"), f"qdrant://127.0.0.1:{port}?collection=c{option}")
            assert run.code != 0
            text = run.stdout + run.stderr
            for form in (key, quote(key, safe=""), quote(key), quote_plus(key)):
                assert form not in text, text
    finally:
        server.shutdown()


def test_abort_keeps_a_collection_it_created_once_another_writer_put_points_in_it(tmp_path):
    """Hostile review: a broken dump's abort() dropped the collection this run created even when another
    writer had found it and written there. It is kept when it holds more points than this run wrote, and
    dropped when it holds only this run's."""
    from qdrant_client import models

    vecfmt.write_dump(str(tmp_path / "a"), make_table(20, 4), metric="dot")
    manifest = vecfmt.open_dump(str(tmp_path / "a")).manifest
    for name in ("fresh", "other"):
        importer = open_importer(q(tmp_path / "db", name))
        try:
            importer.prepare(manifest, if_exists=IfExists.FAIL)
            if name == "fresh":  # another writer puts a point into the collection this import just created
                client = importer.target.client()
                vectors = client.get_collection(name).config.params.vectors
                vector = [0.5, 0.25, 0.0, 1.0]
                named = {key: vector for key in vectors} if isinstance(vectors, dict) else vector
                client.upsert(name, points=[models.PointStruct(id=7, vector=named, payload={"by": "other"})])
            importer.abort()
        finally:
            importer.close()
    assert collections(tmp_path / "db") == ({"fresh"}, {})
    assert [p.get("by") for p in points(tmp_path / "db", "fresh").values()] == ["other"]


# --- slices: ranges of point ids -----------------------------------------------------------------------

UUID_MAX = str(uuid.UUID(int=(1 << 128) - 1))


def edge_point_ids(n: int) -> list[str]:
    """Dump ids that become point ids over both of Qdrant's id kinds: 0, small and the largest integers,
    the smallest and largest UUIDs, random UUIDs, and ids that map to UUIDv5 points."""
    rng = random.Random(3)
    fixed = ["0", "1", "2", "9", "10", str(2**63), str(2**64 - 2), str(2**64 - 1), str(uuid.UUID(int=0)),
             str(uuid.UUID(int=1)), UUID_MAX, "plain", "über/ß"]  # fmt: skip
    ints = [str(rng.getrandbits(64)) for _ in range((n - len(fixed)) // 2)]
    uuids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n - len(fixed) - len(ints))]
    return fixed + ints + uuids


def read_slice(exporter, part, *, batch_size: int = 100, resume: str | None = None) -> list:
    return list(exporter.batches(part, batch_size=batch_size, resume=resume))


def table_of(chunks: list) -> pa.Table:
    return pa.Table.from_batches([c.batch for c in chunks])


def test_slices_split_point_ids_and_cover_every_point_once(tmp_path, monkeypatch):
    ids = edge_point_ids(300)
    tables = {"": make_table(len(ids), 4).set_column(0, "id", pa.array(ids, pa.string())),
              "acme": make_table(120, 4, seed=1)}  # every point of a namespace has a UUIDv5 id
    write_namespaced(str(tmp_path / "a"), tables, metric="dot")
    uri = q(tmp_path / "db")
    transfer.import_dump(str(tmp_path / "a"), uri)
    exporter = open_exporter(uri)
    try:
        exporter.describe()
        monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 30)
        assert exporter.slices("") == [Slice("")]  # local mode: one process, one slice
        monkeypatch.setattr("vecfmt.stores.qdrant.exporter.SPLIT_LOCAL", True)
        for ns, table in tables.items():
            parts = exporter.slices(ns)
            assert len(parts) >= (8 if ns == "" else 3)  # about rows / 30, from a random sample
            assert [json.loads(json.dumps(p.key)) for p in parts] == [p.key for p in parts]
            starts, ends = [p.key["points"][0] for p in parts], [p.key["points"][1] for p in parts]
            assert starts[0] is None and ends[-1] is None and ends[:-1] == starts[1:]
            order = [point_order(c) for c in starts[1:]]
            assert order == sorted(order) and len(set(order)) == len(order)
            if ns == "":
                assert any(isinstance(c, int) for c in starts[1:]) and any(isinstance(c, str) for c in starts[1:])
            got = [table_of(read_slice(exporter, p, batch_size=7)) for p in parts]
            for part, part_table in zip(parts, got, strict=True):
                low, high = (None if b is None else point_order(b) for b in part.key["points"])
                for record_id in part_table.column("id").to_pylist():
                    held = point_order(point_id(record_id, ns)[0])
                    assert (low is None or held >= low) and (high is None or held < high), (record_id, part.key)
            whole = table_of(read_slice(exporter, Slice(ns)))
            assert_tables_identical(by_id(pa.concat_tables(got)), by_id(whole))
            assert_tables_identical(by_id(whole), by_id(table))
        # a resume token continues inside its slice and stops at the slice's end
        part = max(exporter.slices(""), key=lambda p: len(table_of(read_slice(exporter, p))))
        chunks = read_slice(exporter, part, batch_size=7)
        assert len(chunks) >= 3
        rest = read_slice(exporter, part, batch_size=7, resume=chunks[1].resume_token)
        assert table_of(rest).column("id").to_pylist() == table_of(chunks[2:]).column("id").to_pylist()
        assert read_slice(exporter, part, batch_size=7, resume=chunks[-1].resume_token) == []
    finally:
        exporter.close()
    # a collection vecfmt made without namespaces is counted another way: it splits too
    vecfmt.write_dump(str(tmp_path / "p"), make_table(90, 4), metric="dot")
    transfer.import_dump(str(tmp_path / "p"), q(tmp_path / "db", "plain"))
    exporter = open_exporter(q(tmp_path / "db", "plain"))
    try:
        exporter.describe()
        parts = exporter.slices("")
        assert len(parts) >= 2
        got = pa.concat_tables([table_of(read_slice(exporter, p, batch_size=7)) for p in parts])
        assert_tables_identical(by_id(got), by_id(make_table(90, 4)))
    finally:
        exporter.close()
    assert_split_export_is_the_whole(uri, tmp_path, monkeypatch)


def test_export_with_workers_on_local_mode_is_one_clear_line(tmp_path):
    """Local mode locks its folder to one process, and the job's own process holds it: a second worker is
    refused at once (not retried), naming what to do."""
    tables = {ns: make_table(20, 4, seed=s) for s, ns in enumerate(["a", "b"])}  # two partitions
    write_namespaced(str(tmp_path / "a"), tables, metric="dot")
    uri = q(tmp_path / "db")
    transfer.import_dump(str(tmp_path / "a"), uri)
    run = vecfmt_cli("export", uri, str(tmp_path / "b"), "--workers", "2")
    assert_one_clear_error(run, "open in another process", "--workers", "not retried")
    assert "retries)" not in run.stderr  # refused at once
    run = vecfmt_cli("export", uri, str(tmp_path / "b"), "--workers", "1", "--resume")  # the same job, one process
    assert run.code == 0, run.stderr
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    for ns, table in tables.items():
        assert_tables_identical(by_id(dump.table(ns)), by_id(table))
