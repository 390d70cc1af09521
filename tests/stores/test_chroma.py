"""Chroma against the real thing: a persistent database folder (``PersistentClient``) and a ``chroma run``
server started per session (tests/servers/chroma.py). Round trips bit for bit (l2, ip), what the cosine
space gives back, namespaces, more rows than a page and a batch, if_exists modes, a replace that fails
mid-way, a client killed mid-import then resumed, search, verify, bad inputs, the token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import Run, assert_one_clear_error, make_table, rewrite_part, vecfmt_cli, write_raw_dump
from vecfmt import transfer
from vecfmt.errors import VecfmtError
from vecfmt.ops.diff import diff_dumps
from vecfmt.schema import vectors_array
from vecfmt.stores.base import open_exporter, open_importer
from vecfmt.stores.chroma.catalog import JSON_KEY

try:
    import chromadb  # noqa: F401
except ImportError:  # under CI the store must be tested: fail there, skip loudly elsewhere
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("chromadb is not installed: pip install 'vecfmt[chroma]'", allow_module_level=True)


def folder(tmp_path: Path, collection: str = "docs", **options: object) -> str:
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"chroma://{tmp_path / 'chroma'}?collection={collection}{extra}"


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def assert_identical(got: pa.Table, want: pa.Table) -> None:
    """Same columns; ids, float32 bits, metadata text and documents identical (row order aside: a server
    holds records in the order its concurrent requests landed)."""
    got, want = by_id(got), by_id(want)
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        a, b = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(b.type):
            va = a.values.to_numpy(zero_copy_only=False).view(np.uint32)
            vb = b.values.to_numpy(zero_copy_only=False).view(np.uint32)
            np.testing.assert_array_equal(va, vb, err_msg=name)
        else:
            assert a.to_pylist() == b.to_pylist(), name


def rich_table(n: int, dim: int, *, seed: int = 0, prefix: str = "id-", edges: bool = True) -> pa.Table:
    """make_table's rows (nested objects, unicode, null metadata, documents), unicode ids, float32 edge
    values, and metadata of every kind: scalars, lists, nested objects, keys Chroma reserves."""
    table = make_table(n, dim, seed=seed, prefix=prefix, document=True)
    ids = [f"{prefix}{i}" if i % 3 else f"{prefix}{i}-ü/日本 é" for i in range(n)]
    vectors = table.column("values").combine_chunks().values.to_numpy().reshape(n, dim).copy()
    if edges:  # subnormals, -0.0, near the float32 maximum
        vectors[0, :4] = [np.float32(1.4e-45), -0.0, np.float32(3.0e38), np.float32(-1.17549435e-38)]
    metadata = [None if i % 7 == 3 else json.dumps(
        {"i": i, "tag": ["α", "β"][i % 2], "score": i / 8, "tenth": 0.1, "ok": i % 2 == 0, "tags": ["x", "y"],
         "counts": [i, i + 1], "big": 2**63 + i, "mixed": [1, "a"], "empty": {}, "none": None, "#hash": 1,
         "nested": {"page": i % 5, "tags": ["x", "y"]}, "parts": [{"n": 1}, {"n": 2}]}, ensure_ascii=False)
        for i in range(n)]  # fmt: skip
    documents = [None if i % 5 == 4 else f"Dokument {i} über Vektoren" for i in range(n)]
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "values": vecfmt.schema.vectors_array(vectors),
        "metadata": pa.array(metadata, pa.string()),
        "document": pa.array(documents, pa.string()),
    })  # fmt: skip


def exported(uri: str, tmp_path: Path, name: str = "out", **kwargs: object) -> pa.Table:
    transfer.export(uri, str(tmp_path / name), **kwargs)  # type: ignore[arg-type]
    return vecfmt.open_dump(str(tmp_path / name)).table("")


def raw_collection(uri: str):  # the chromadb collection behind a URI, through the store's own client
    from vecfmt.stores.base import StoreURI
    from vecfmt.stores.chroma.connect import Target

    target = Target(StoreURI.parse(uri))
    return target, target.get(target.collection)


# --- round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "dot"])
def test_folder_round_trip_is_bit_identical(tmp_path, metric):
    table = rich_table(1_500, 16)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric=metric)
    uri = folder(tmp_path)
    assert transfer.import_dump(str(tmp_path / "a"), uri, batch_size=700).rows == 1_500
    manifest = transfer.export(uri, str(tmp_path / "b"), batch_size=600)
    assert manifest.primary.metric == metric and manifest.primary.dimension == 16
    assert manifest.namespaces[0].rows == 1_500
    assert manifest.extra["chroma"]["configuration"]["hnsw"]["space"] == {"euclidean": "l2", "dot": "ip"}[metric]
    got = vecfmt.open_dump(str(tmp_path / "b")).table("")
    assert got.column("id").to_pylist() == table.column("id").to_pylist()  # a folder keeps insertion order
    assert_identical(got, table)
    assert diff_dumps(str(tmp_path / "a"), str(tmp_path / "b")).identical

    # what Chroma holds: the JSON whole, its scalar keys beside it (filterable), nothing it cannot hold
    target, collection = raw_collection(uri)
    try:
        record = collection.get(ids=["id-1"], include=["metadatas", "documents"])
        held = record["metadatas"][0]
        assert json.loads(held[JSON_KEY]) == json.loads(table.column("metadata")[1].as_py())
        assert {k: held[k] for k in ("i", "tag", "score", "tenth", "ok", "tags", "counts")} == \
            {"i": 1, "tag": "β", "score": 0.125, "tenth": 0.1, "ok": False, "tags": ["x", "y"], "counts": [1, 2]}
        assert not {"big", "mixed", "empty", "none", "#hash", "nested", "parts"} & set(held)
        assert record["documents"] == ["Dokument 1 über Vektoren"]
        assert len(collection.get(where={"tag": "α"}, include=[])["ids"]) == 643  # even i, metadata not null
    finally:
        target.close()


def test_server_round_trip_with_namespaces(tmp_path, chroma_server, chroma_collection):
    # the same ids in every namespace: unique per (namespace, id), as each namespace is a collection
    tables = {ns: rich_table(400, 8, seed=s) for s, ns in enumerate(["", "acme", "glob-ex"])}
    with vecfmt.DumpWriter(str(tmp_path / "a"), metric="dot") as writer:
        for ns, table in tables.items():
            for batch in table.to_batches(max_chunksize=150):
                writer.write_batch(batch, ns)
    uri = chroma_server.uri(chroma_collection, batch=128)
    transfer.import_dump(str(tmp_path / "a"), uri, batch_size=200)
    manifest = transfer.export(uri, str(tmp_path / "b"), batch_size=150)
    assert sorted(n.name for n in manifest.namespaces) == ["", "acme", "glob-ex"]
    assert manifest.extra["chroma"]["collections"] == {"": chroma_collection, "acme": f"{chroma_collection}.acme",
                                                      "glob-ex": f"{chroma_collection}.glob-ex"}  # fmt: skip
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    for ns, table in tables.items():
        assert_identical(dump.table(ns), table)
    assert diff_dumps(str(tmp_path / "a"), str(tmp_path / "b")).identical
    # one namespace alone, and one namespace's collection read as a collection of its own
    transfer.export(uri, str(tmp_path / "c"), namespaces=["acme"])
    assert vecfmt.open_dump(str(tmp_path / "c")).manifest.namespace_names() == ["acme"]
    assert_identical(exported(chroma_server.uri(f"{chroma_collection}.acme"), tmp_path, "d"), tables["acme"])


def test_cosine_gives_back_normalised_vectors_scaled_back_within_two_ulp(tmp_path, chroma_server, chroma_collection):
    """Chroma's cosine space keeps each vector as x * (1/|x|) in float32 and gives back that times |x|:
    not bit-exact, within 2 ulp per component (measured; asserted with margin), norms and directions kept."""
    table = make_table(600, 64, seed=3)
    want = table.column("values").combine_chunks().values.to_numpy().reshape(600, 64)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="cosine")
    for n, uri in enumerate([folder(tmp_path), chroma_server.uri(chroma_collection)]):
        transfer.import_dump(str(tmp_path / "a"), uri)
        got = by_id(exported(uri, tmp_path, f"b{n}"))
        order = np.argsort(np.array(table.column("id").to_pylist()), kind="stable")
        assert got.column("id").to_pylist() == [table.column("id")[int(i)].as_py() for i in order]
        back = got.column("values").combine_chunks().values.to_numpy().reshape(600, 64)
        orig = want[order]
        ulps = np.abs(back.view(np.int32).astype(np.int64) - orig.view(np.int32).astype(np.int64))
        assert ulps.max() <= 4, ulps.max()
        assert (ulps > 0).any()  # really not bit-exact: the bound is what the docs state
        assert np.abs(back - orig).max() / np.abs(orig).max() < 1e-6
        norms = np.linalg.norm(back, axis=1) / np.linalg.norm(orig, axis=1)
        assert np.abs(norms - 1).max() < 1e-6
        assert got.column("metadata").to_pylist() == by_id(table).column("metadata").to_pylist()
        # 2 ulp is a relative 2.4e-7: an absolute tolerance above that times the largest component covers it
        a, b = str(tmp_path / "a"), str(tmp_path / f"b{n}")
        assert not diff_dumps(a, b).identical
        assert diff_dumps(a, b, tolerance=float(np.abs(orig).max()) * 5e-7).identical


def test_more_rows_than_a_page_and_the_client_batch_limit(tmp_path):
    """vector-io's Chroma export wrote 10,000 of 100,000 rows and exited 0: every row must come out, and
    an import asking for batches above the client's max_batch_size is split to fit it."""
    import chromadb

    n = 6_000
    limit = chromadb.PersistentClient(path=str(tmp_path / "probe")).get_max_batch_size()
    assert n > limit  # the batch option below is capped to it
    table = make_table(n, 4, seed=5)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="euclidean")
    uri = folder(tmp_path, batch=100_000, page=1_000)
    transfer.import_dump(str(tmp_path / "a"), uri, batch_size=n)
    manifest = transfer.export(uri, str(tmp_path / "b"), batch_size=10_000)
    assert manifest.total_rows == n
    got = vecfmt.open_dump(str(tmp_path / "b")).table("")
    assert got.column("id").to_pylist() == table.column("id").to_pylist()
    assert_identical(got, table)


def test_export_of_a_collection_vecfmt_did_not_write(tmp_path):
    """A collection made with the client as users make them (legacy hnsw:space metadata, the default
    embedding function, plain metadata dicts, documents on some records)."""
    import chromadb
    from chromadb.config import Settings

    rng = np.random.default_rng(12)
    vectors = rng.standard_normal((1_200, 384)).astype(np.float32)
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False))
    try:
        collection = client.create_collection("theirs", metadata={"hnsw:space": "ip", "owner": "team-a"})
        collection.add(ids=[f"r{i}" for i in range(1_200)], embeddings=vectors,
                       metadatas=[{"k": i, "s": "x", "f": 0.5, "b": True, "l": [1, 2]} if i % 4 else None
                                  for i in range(1_200)],
                       documents=[f"text {i}" if i % 3 else None for i in range(1_200)])  # fmt: skip
    finally:
        client.close()
    manifest = transfer.export(folder(tmp_path, "theirs"), str(tmp_path / "b"))
    assert (manifest.primary.metric, manifest.primary.dimension, manifest.total_rows) == ("dot", 384, 1_200)
    assert manifest.embedding_model is not None and manifest.embedding_model.name == "all-MiniLM-L6-v2"
    assert manifest.extra["chroma"]["metadata"] == {"hnsw:space": "ip", "owner": "team-a"}  # as Chroma has it
    got = vecfmt.open_dump(str(tmp_path / "b")).table("")
    assert got.column("id").to_pylist() == [f"r{i}" for i in range(1_200)]
    np.testing.assert_array_equal(got.column("values").combine_chunks().values.to_numpy().view(np.uint32),
                                  vectors.reshape(-1).view(np.uint32))  # fmt: skip
    metadata = got.column("metadata").to_pylist()
    assert metadata[0] is None and json.loads(metadata[1]) == {"k": 1, "s": "x", "f": 0.5, "b": True, "l": [1, 2]}
    assert got.column("document").to_pylist()[:4] == [None, "text 1", "text 2", None]
    # and into a collection of vecfmt's: the space from the dump, the collection's own metadata kept
    transfer.import_dump(str(tmp_path / "b"), folder(tmp_path, "mine"))
    target, mine = raw_collection(folder(tmp_path, "mine"))
    try:
        assert mine.configuration_json["hnsw"]["space"] == "ip" and mine.metadata["owner"] == "team-a"
    finally:
        target.close()
    assert_identical(exported(folder(tmp_path, "mine"), tmp_path, "c"), got)


def test_export_resumes_from_its_offset_token(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(1_000, 4), metric="euclidean")
    uri = folder(tmp_path, page=100)
    transfer.import_dump(str(tmp_path / "a"), uri)
    exporter = open_exporter(uri)
    try:
        exporter.describe()
        part = exporter.slices("")[0]
        chunks = list(exporter.batches(part, batch_size=250))
        rest = list(exporter.batches(part, batch_size=250, resume=chunks[3].resume_token))
    finally:
        exporter.close()
    first = [i for c in chunks for i in c.batch.column("id").to_pylist()]
    assert len(first) == 1_000 and len(set(first)) == 1_000 and chunks[3].resume_token == "400"
    assert [i for c in rest for i in c.batch.column("id").to_pylist()] == first[400:]


def test_metadata_rule_keeps_the_text_and_lets_changes_made_in_chroma_win():
    from vecfmt.stores.chroma.catalog import from_chroma, to_chroma

    text = '{"b": 1, "a": 1.0, "ok": true, "l": [1, 2], "n": {"x": null}, "#k": 1, "_vecfmt_metadata": "mine"}'
    held = to_chroma(text, "r")
    assert held == {JSON_KEY: text, "b": 1, "a": 1.0, "ok": True, "l": [1, 2]}
    assert from_chroma(held, "r") == text  # unchanged: the text, byte for byte
    # changed in Chroma (types count: 1.0 is not 1, 1 is not true): Chroma's keys win, the rest is kept
    assert json.loads(from_chroma({**held, "b": 1.0, "ok": 1}, "r")) == \
        {"b": 1.0, "a": 1.0, "ok": 1, "l": [1, 2], "n": {"x": None}, "#k": 1, "_vecfmt_metadata": "mine"}
    without_a = {k: v for k, v in held.items() if k != "a"}
    assert "a" not in json.loads(from_chroma(without_a, "r"))
    assert from_chroma({"x": 1, "y": ["z"]}, "r") == '{"x": 1, "y": ["z"]}'  # a record vecfmt did not write
    assert from_chroma(None, "r") is None and to_chroma(None, "r") is None


def test_copy_through_lancedb_and_back_and_refusing_its_own_source(tmp_path, chroma_server, chroma_collection):
    pytest.importorskip("lancedb")
    table = rich_table(300, 8, edges=False)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="euclidean")
    source = folder(tmp_path)
    transfer.import_dump(str(tmp_path / "a"), source)
    lance = f"lancedb://{tmp_path / 'lance'}?table=docs"
    assert transfer.copy(source, lance).rows == 300
    target = chroma_server.uri(chroma_collection)
    assert transfer.copy(lance, target).rows == 300
    assert_identical(exported(target, tmp_path), table)
    refused(lambda: transfer.copy(source, f"chroma://{tmp_path}/./chroma?collection=docs"), "same table")


# --- if_exists ---------------------------------------------------------------------------------------


def test_if_exists_fail_append_upsert(tmp_path, chroma_server, chroma_collection):
    uri = chroma_server.uri(chroma_collection)
    table = make_table(300, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="euclidean")
    transfer.import_dump(str(tmp_path / "a"), uri)
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "a"), uri), "already holds records", "upsert")
    # append: new ids go in; ids the collection holds are refused, not silently skipped (Chroma's add would)
    vecfmt.write_dump(str(tmp_path / "more"), make_table(50, 8, seed=1, prefix="more-"), metric="euclidean")
    transfer.import_dump(str(tmp_path / "more"), uri, if_exists="append")
    refused(lambda: transfer.import_dump(str(tmp_path / "a"), uri, if_exists="append"),
            "already holds the id 'id-0'", "upsert")
    # upsert replaces whole records: keys of the old metadata do not linger (Chroma's upsert merges them)
    changed = make_table(300, 8, seed=2)
    metadata = [json.dumps({"only": i}) if i % 2 else None for i in range(300)]
    changed = changed.set_column(changed.schema.get_field_index("metadata"), "metadata", pa.array(metadata))
    vecfmt.write_dump(str(tmp_path / "c"), changed, metric="euclidean")
    transfer.import_dump(str(tmp_path / "c"), uri, if_exists="upsert")
    got = exported(uri, tmp_path)
    assert got.num_rows == 350
    assert_identical(got.filter(pa.compute.starts_with(got.column("id"), "id-")), changed)
    target, collection = raw_collection(uri)
    try:
        assert collection.get(ids=["id-1"], include=["metadatas"])["metadatas"][0] == \
            {JSON_KEY: '{"only": 1}', "only": 1}
        assert collection.get(ids=["id-0"], include=["metadatas"])["metadatas"] == [None]
    finally:
        target.close()


def test_replace_swaps_in_a_staged_collection(tmp_path, chroma_server, chroma_collection):
    uri = chroma_server.uri(chroma_collection)
    vecfmt.write_dump(str(tmp_path / "a"), make_table(200, 8), metric="euclidean")
    transfer.import_dump(str(tmp_path / "a"), uri)
    new = make_table(30, 8, seed=4, prefix="new-")
    vecfmt.write_dump(str(tmp_path / "b"), new, metric="euclidean")
    transfer.import_dump(str(tmp_path / "b"), uri, if_exists="replace")
    assert_identical(exported(uri, tmp_path), new)
    target, _ = raw_collection(uri)
    try:
        names = sorted(c.name for c in target.list())
    finally:
        target.close()
    assert [n for n in names if n.startswith(chroma_collection)] == [chroma_collection]  # nothing staged left


def test_replace_that_fails_mid_way_leaves_the_old_collection(tmp_path, chroma_server, chroma_collection):
    uri = chroma_server.uri(chroma_collection)
    old = make_table(300, 8)
    vecfmt.write_dump(str(tmp_path / "a"), old, metric="euclidean")
    transfer.import_dump(str(tmp_path / "a"), uri)
    vecfmt.write_dump(str(tmp_path / "b"), make_table(900, 8, seed=9, prefix="new-"), metric="euclidean",
                      options=vecfmt.ParquetOptions(max_file_rows=300))  # fmt: skip
    manifest_path = tmp_path / "b" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][1]["sha256"] = "0" * 64  # the second file fails its checksum after the first is in
    manifest_path.write_text(json.dumps(manifest))
    run = vecfmt_cli("import", str(tmp_path / "b"), uri, "--if-exists", "replace", "--batch-size", "100")
    assert_one_clear_error(run)
    assert "sha" in run.stderr.lower() or "checksum" in run.stderr.lower(), run.stderr
    assert_identical(exported(uri, tmp_path), old)
    target, _ = raw_collection(uri)
    try:
        assert [c.name for c in target.list() if c.name.startswith(chroma_collection)] == [chroma_collection]
    finally:
        target.close()


def collection_names(tmp_path: Path) -> set[str]:
    target, _ = raw_collection(folder(tmp_path, "any"))
    try:
        return {c.name for c in target.list()}
    finally:
        target.close()


def with_nan(table: pa.Table, row: int) -> pa.Table:
    """``table`` with one NaN in row ``row``'s vector (what the checked writer refuses; a raw dump holds it)."""
    values = table.column("values").combine_chunks()
    matrix = values.values.to_numpy().reshape(len(values), -1).copy()
    matrix[row, 1] = np.nan
    return table.set_column(table.schema.get_field_index("values"), "values", vectors_array(matrix))


def with_column(table: pa.Table, name: str, row: int, value: object) -> pa.Table:
    column = table.column(name).to_pylist()
    column[row] = value
    return table.set_column(table.schema.get_field_index(name), name, pa.array(column, pa.string()))


def test_a_refused_import_leaves_no_collection_it_created(tmp_path):
    """A refused import leaves no collection this run created: a bad row in the first batch (refused by the core,
    or by the store) or in a later file (records already added: that collection goes too, and the error says
    nothing was changed), a collection of another namespace found not to fit. What the target held before stays,
    and so do the rows appended to it (the error counts them)."""
    vecfmt.write_dump(str(tmp_path / "old"), make_table(5, 4, prefix="old-"), metric="euclidean")
    transfer.import_dump(str(tmp_path / "old"), folder(tmp_path, "kept"))  # another collection: untouched
    uri = folder(tmp_path)
    for name, table, needles in [
        ("nan", with_nan(make_table(20, 4), 3), ("NaN", "'id-3'")),  # the core's check_batch
        ("json", with_column(make_table(20, 4), "metadata", 6, '{"x": NaN}'), ("'id-6'", "NaN")),  # also
        ("empty-id", with_column(make_table(20, 4), "id", 9, ""), ("empty string",)),  # the importer's own
    ]:  # fmt: skip
        write_raw_dump(str(tmp_path / name), {"": table}, metric="euclidean")
        assert_one_clear_error(vecfmt_cli("import", str(tmp_path / name), uri), *needles)
        assert collection_names(tmp_path) == {"kept"}, name

    # a NaN in the third file, after 60 records were added to the new collection: it goes, and so does the
    # progress file (a broken dump cannot be resumed)
    late = str(tmp_path / "late")
    table = make_table(90, 4, seed=2)
    vecfmt.write_dump(late, table, metric="euclidean", options=vecfmt.ParquetOptions(max_file_rows=30))
    rewrite_part(late, 2, with_nan(table.slice(60), 4))
    state = tmp_path / "state"
    run = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", late, folder(tmp_path, batch=10),
                          "--batch-size", "30"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "VECFMT_STATE_DIR": str(state)})  # fmt: skip
    assert_one_clear_error(Run(run.returncode, run.stdout, run.stderr), "NaN", "'id-64'", "nothing was changed")
    assert collection_names(tmp_path) == {"kept"}
    assert not list(state.glob("chroma/import-*.json"))

    # a namespace's collection that does not fit (another dimension), found after the default namespace's was
    # checked: refused before anything is created
    vecfmt.write_dump(str(tmp_path / "wide"), make_table(5, 8, prefix="w-"), metric="euclidean")
    transfer.import_dump(str(tmp_path / "wide"), folder(tmp_path, "docs.acme"))
    tables = {"": make_table(10, 4), "acme": make_table(10, 4, seed=1)}
    with vecfmt.DumpWriter(str(tmp_path / "ns"), metric="euclidean") as writer:
        for ns, part in tables.items():
            writer.write_batch(part.to_batches()[0], ns)
    refused(lambda: transfer.import_dump(str(tmp_path / "ns"), uri, if_exists="append"), "8-dimensional",
            "nothing was written")  # fmt: skip
    assert collection_names(tmp_path) == {"kept", "docs.acme"}

    # into a collection that held records: appended rows stay and are counted; a replace leaves it as it was
    kept = folder(tmp_path, "kept", batch=10)
    message = refused(lambda: transfer.import_dump(late, kept, if_exists="replace", batch_size=30), "'id-64'")
    assert "nothing was changed: the old table is as it was" in message
    assert exported(kept, tmp_path, "replaced").num_rows == 5
    message = refused(lambda: transfer.import_dump(late, kept, if_exists="append", batch_size=30), "'id-64'")
    assert "the first 60 rows are in the target" in message
    assert exported(kept, tmp_path, "appended").num_rows == 65
    assert collection_names(tmp_path) == {"kept", "docs.acme"}

    # and the dump that is fine still imports into the name the refused imports left free
    assert transfer.import_dump(str(tmp_path / "old"), uri).rows == 5


# --- a client killed mid-import ------------------------------------------------------------------------


def _acknowledged(state_dir: Path) -> int:
    for path in state_dir.glob("chroma/import-*.json"):
        try:
            return int(json.loads(path.read_text())["rows_done"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


@pytest.mark.parametrize("where", ["folder", "server-replace"])
def test_import_killed_then_resumed_ends_exact(tmp_path, chroma_server, chroma_collection, where):
    """kill -9 of the importing process, then --resume: every row once, bit for bit. On the server the import
    is a replace of an existing collection: the old one serves until the resumed run swaps the new one in."""
    table = make_table(8_000, 16, seed=7)
    dump = str(tmp_path / "a")
    vecfmt.write_dump(dump, table, metric="euclidean", options=vecfmt.ParquetOptions(max_file_rows=2_000))
    uri = folder(tmp_path, batch=250) if where == "folder" else chroma_server.uri(chroma_collection, batch=250)
    extra: list[str] = []
    old = make_table(100, 16, seed=8, prefix="old-")
    if where == "server-replace":
        vecfmt.write_dump(str(tmp_path / "old"), old, metric="euclidean")
        transfer.import_dump(str(tmp_path / "old"), uri)
        extra = ["--if-exists", "replace"]
    state = tmp_path / "state"
    env = {**os.environ, "VECFMT_STATE_DIR": str(state)}
    proc = subprocess.Popen([sys.executable, "-m", "vecfmt.cli", "import", dump, uri, "--batch-size", "500", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _acknowledged(state) < 2_000:
        time.sleep(0.02)
    assert proc.poll() is None, ("the import finished before it could be killed", proc.communicate())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = _acknowledged(state)
    assert 2_000 <= killed_at < 8_000
    if where == "server-replace":
        assert_identical(exported(uri, tmp_path, "during"), old)  # not swapped yet: the old collection serves

    if where == "server-replace":  # a replace resumed as anything else would mix old and new rows
        run = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", dump, uri, "--resume"],
                             capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert_one_clear_error(Run(run.returncode, run.stdout, run.stderr), "resume it with --if-exists replace")
    run = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", dump, uri, "--resume", *extra],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not list(state.glob("chroma/import-*.json"))  # complete: nothing left to resume
    assert_identical(exported(uri, tmp_path), table)  # every row once, bit for bit
    if where == "server-replace":
        target, _ = raw_collection(uri)
        try:
            assert [c.name for c in target.list() if c.name.startswith(chroma_collection)] == [chroma_collection]
        finally:
            target.close()


def test_server_killed_mid_import_then_resumed_ends_exact(tmp_path, chroma_factory, chroma_collection):
    """kill -9 of the Chroma server: the import fails in one line saying how many rows are in and how to go
    on; the server restarted on its data, --resume ends with every row once, bit for bit."""
    server = chroma_factory()
    table = make_table(8_000, 16, seed=13)
    dump = str(tmp_path / "a")
    vecfmt.write_dump(dump, table, metric="euclidean", options=vecfmt.ParquetOptions(max_file_rows=2_000))
    uri = server.uri(chroma_collection, batch=250)
    state = tmp_path / "state"
    env = {**os.environ, "VECFMT_STATE_DIR": str(state)}
    proc = subprocess.Popen([sys.executable, "-m", "vecfmt.cli", "import", dump, uri, "--batch-size", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _acknowledged(state) < 2_000:
        time.sleep(0.02)
    assert proc.poll() is None, ("the import finished before the server could be killed", proc.communicate())
    server.kill()
    stdout, stderr = proc.communicate(timeout=120)
    assert_one_clear_error(Run(proc.returncode, stdout, stderr), f"chroma server 127.0.0.1:{server.port}", "--resume")
    assert "rows of the dump are committed" in stderr, stderr

    server.start()  # same port, same data
    run = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", dump, uri, "--resume"],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert_identical(exported(uri, tmp_path), table)


# --- search and verify -----------------------------------------------------------------------------------


def test_search_finds_the_right_neighbours(tmp_path, chroma_server, chroma_collection):
    table = make_table(400, 16, seed=11)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="euclidean")
    matrix = table.column("values").combine_chunks().values.to_numpy().reshape(400, 16)
    for uri in (folder(tmp_path), chroma_server.uri(chroma_collection)):
        importer = open_importer(uri)
        try:
            transfer.import_dump(str(tmp_path / "a"), uri)
        finally:
            importer.close()
        exporter = open_exporter(uri)
        try:
            for row in (0, 17, 399):
                query = matrix[row] + np.float32(0.01)
                truth = np.argsort(((matrix - query) ** 2).sum(axis=1))[:5]
                hits = exporter.search(query, 5)
                assert [h[0] for h in hits] == [f"id-{i}" for i in truth]
                assert hits[0][1] == pytest.approx(float(((matrix[truth[0]] - query) ** 2).sum()), rel=1e-4)
        finally:
            exporter.close()


def test_verify_dump_against_chroma_passes(tmp_path, chroma_server, chroma_collection):
    from vecfmt.quality.verify import verify

    table = rich_table(500, 8, edges=False)  # near-maximal values would overflow dot products
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="dot")
    for uri in (folder(tmp_path), chroma_server.uri(chroma_collection)):
        transfer.import_dump(str(tmp_path / "a"), uri)
        report = verify(str(tmp_path / "a"), uri, full=True, progress=False)
        assert report.passed, report
    run = vecfmt_cli("verify", str(tmp_path / "a"), folder(tmp_path))
    assert run.code == 0, run.stderr


# --- bad inputs ------------------------------------------------------------------------------------------


def test_wrong_dimension_on_append_is_one_line(tmp_path, chroma_server, chroma_collection):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(20, 8), metric="euclidean")
    vecfmt.write_dump(str(tmp_path / "b"), make_table(20, 16, prefix="other-"), metric="euclidean")
    uri = chroma_server.uri(chroma_collection)
    transfer.import_dump(str(tmp_path / "a"), uri)
    refused(lambda: transfer.import_dump(str(tmp_path / "b"), uri, if_exists="append"),
            "8-dimensional", "16", "nothing was written")
    vecfmt.write_dump(str(tmp_path / "c"), make_table(20, 8, prefix="c-"), metric="dot")
    refused(lambda: transfer.import_dump(str(tmp_path / "c"), uri, if_exists="append"),
            "space l2", "ip", "nothing was written")
    assert exported(uri, tmp_path).num_rows == 20


def refused(call, *needles: str) -> str:
    """In process (the CLI prints the same str()): a vecfmt error, one line, saying what we expect."""
    with pytest.raises(VecfmtError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_bad_inputs_are_one_clear_line(tmp_path, chroma_server, chroma_collection):
    a = str(tmp_path / "a")
    vecfmt.write_dump(a, make_table(5, 4))
    run = vecfmt_cli("export", chroma_server.uri("missing-one"), str(tmp_path / "b"))
    assert_one_clear_error(run, "'missing-one' does not exist")
    run = vecfmt_cli("import", a, chroma_server.uri(chroma_collection, colection="x"))
    assert_one_clear_error(run, "unknown option 'colection'")
    refused(lambda: transfer.export(folder(tmp_path / "nowhere"), str(tmp_path / "b")), "no such folder")
    assert not (tmp_path / "nowhere").exists()  # an export creates nothing
    refused(lambda: transfer.import_dump(a, "chroma://data?collection=x"), "neither a database folder", "HOST:PORT")
    refused(lambda: transfer.import_dump(a, folder(tmp_path, "a")), "not a valid collection name")
    refused(lambda: open_importer(f"chroma://{tmp_path}"), "needs the option collection")
    for name, kwargs, needles in [("m", {"metric": "manhattan"}, ("manhattan", "no Chroma space")),
                                  ("s", {"sparse": True}, ("dense vectors only",)),
                                  ("n", {"named": {"title": 3}}, ("one vector", "title"))]:  # fmt: skip
        metric = kwargs.pop("metric", "cosine")
        vecfmt.write_dump(str(tmp_path / name), make_table(5, 4, **kwargs), metric=metric)
        refused(lambda n=name: transfer.import_dump(str(tmp_path / n), folder(tmp_path)), *needles)


def test_unreachable_server_is_one_line_and_the_token_never_shows(tmp_path, monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4))
    token = "chr-secret-token-8d2f"
    env = {**os.environ, "CHROMA_TOKEN": token}
    uri = f"chroma://127.0.0.1:{port}?collection=docs"
    run = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", str(tmp_path / "a"), uri],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert f"chroma server 127.0.0.1:{port}: cannot connect" in run.stderr and token not in run.stderr + run.stdout
    monkeypatch.setenv("CHROMA_TOKEN", token)
    message = refused(lambda: transfer.export(uri, str(tmp_path / "b")), f"127.0.0.1:{port}: cannot connect")
    assert token not in message
    refused(lambda: transfer.import_dump(str(tmp_path / "a"), f"chroma://u:{token}@127.0.0.1:{port}?collection=d"),
            "CHROMA_TOKEN")


def test_token_is_sent_but_never_written(tmp_path, chroma_server, chroma_collection, monkeypatch):
    token = "chr-secret-token-5e1a"
    monkeypatch.setenv("CHROMA_TOKEN", token)
    vecfmt.write_dump(str(tmp_path / "a"), make_table(50, 4))
    uri = chroma_server.uri(chroma_collection, token_header="x-chroma-token")
    transfer.import_dump(str(tmp_path / "a"), uri)
    manifest = transfer.export(uri, str(tmp_path / "b"))
    assert manifest.total_rows == 50
    assert token not in (tmp_path / "b" / "manifest.json").read_text()
