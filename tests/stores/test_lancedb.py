"""LanceDB, embedded and real: dump -> LanceDB -> dump is bit-identical."""

import json
import os
import signal
import subprocess
import sys
import time

import lancedb
import numpy as np
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import make_table
from vecfmt import transfer
from vecfmt.errors import StoreError
from vecfmt.ops import validate_dump
from vecfmt.schema import vectors_array


def lance(tmp_path, table="items", extra=""):
    return f"lancedb://{tmp_path}/db?table={table}{extra}"


@pytest.mark.parametrize("kwargs", [
    {"dim": 1},
    {"dim": 384, "document": True},
    {"dim": 8, "sparse": True},
    {"dim": 8, "named": {"title": 4, "image": 3}},
])
def test_dump_to_lancedb_and_back_is_bit_identical(tmp_path, identical, kwargs):
    table = make_table(700, **kwargs)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    vecfmt.write_dump(a, table, metric="dot", model=vecfmt.EmbeddingModel("m", "p", kwargs["dim"]))
    result = transfer.import_dump(a, lance(tmp_path), batch_size=100)
    assert result.rows == 700
    manifest = transfer.export(lance(tmp_path), b, batch_size=128)
    original = vecfmt.open_dump(a).manifest
    assert manifest.vectors == original.vectors
    assert manifest.embedding_model == original.embedding_model
    assert manifest.source == vecfmt.Source("lancedb", "items")
    identical(vecfmt.open_dump(b).table(""), vecfmt.open_dump(a).table(""))


def test_namespaces_and_unicode_ids_round_trip(tmp_path, identical):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    first = make_table(50, 4, prefix="ünï-")
    second = make_table(30, 4, prefix="日本-", seed=2)
    with vecfmt.DumpWriter(a) as w:
        w.write(first, namespace="")
        w.write(second, namespace="it's/a tenant")
    transfer.import_dump(a, lance(tmp_path))
    transfer.export(lance(tmp_path), b)
    dump = vecfmt.open_dump(b)
    assert dump.namespaces == ["", "it's/a tenant"]
    identical(dump.table(""), first)
    identical(dump.table("it's/a tenant"), second)


def test_if_exists_modes(tmp_path):
    a = str(tmp_path / "a")
    vecfmt.write_dump(a, make_table(100, 4))
    target = lance(tmp_path)
    transfer.import_dump(a, target)
    with pytest.raises(StoreError, match="already exists"):
        transfer.import_dump(a, target)
    transfer.import_dump(a, target, if_exists="append")
    assert _count(tmp_path) == 200
    transfer.import_dump(a, target, if_exists="replace")
    assert _count(tmp_path) == 100
    changed = make_table(120, 4, seed=9)  # 100 old ids with new vectors + 20 new ids
    vecfmt.write_dump(str(tmp_path / "c"), changed)
    transfer.import_dump(str(tmp_path / "c"), target, if_exists="upsert")
    assert _count(tmp_path) == 120
    transfer.export(target, str(tmp_path / "back"))
    back = vecfmt.open_dump(str(tmp_path / "back")).table("").sort_by("id")
    np.testing.assert_array_equal(
        back.column("values").combine_chunks().values.to_numpy(),
        changed.sort_by("id").column("values").combine_chunks().values.to_numpy(),
    )


def test_append_refuses_other_dimensions(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(10, 4))
    vecfmt.write_dump(str(tmp_path / "b"), make_table(10, 5))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    with pytest.raises(StoreError, match="column 'vector' has 4 dimensions, the dump has 5"):
        transfer.import_dump(str(tmp_path / "b"), lance(tmp_path), if_exists="append")


def test_interrupted_import_resumes_without_duplicates_or_losses(tmp_path, identical):
    a = str(tmp_path / "a")
    table = make_table(1000, 8)
    vecfmt.write_dump(a, table, options=vecfmt.ParquetOptions(max_file_rows=300))
    importer_cls = vecfmt.stores.lancedb.LanceDBImporter
    original_write = importer_cls.write
    calls = {"n": 0}

    def failing_write(self, namespace, batch, *, rows_done):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as if the process were stopped mid-import
        original_write(self, namespace, batch, rows_done=rows_done)

    importer_cls.write = failing_write
    try:
        with pytest.raises(KeyboardInterrupt):
            transfer.import_dump(a, lance(tmp_path), batch_size=100)
    finally:
        importer_cls.write = original_write
    assert _count(tmp_path) == 400
    result = transfer.import_dump(a, lance(tmp_path), resume=True, batch_size=100)
    assert (result.rows_skipped, result.rows) == (400, 600)
    transfer.export(lance(tmp_path), str(tmp_path / "b"))
    identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


def test_resume_refuses_a_table_of_another_dump(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(10, 4))
    vecfmt.write_dump(str(tmp_path / "b"), make_table(10, 4, seed=3))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    with pytest.raises(StoreError, match="not started by an import of this dump"):
        transfer.import_dump(str(tmp_path / "b"), lance(tmp_path), resume=True)


def test_foreign_table_columns_fold_into_metadata(tmp_path):
    db = lancedb.connect(str(tmp_path / "db"))
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    db.create_table("docs", pa.table({
        "id": pa.array([10, 11, 12], pa.int64()),
        "vector": vectors_array(matrix),
        "title": ["a", "b", None],
        "page": [1, 2, 3],
    }))
    manifest = transfer.export(lance(tmp_path, "docs", "&metric=euclidean"), str(tmp_path / "out"))
    assert manifest.vectors[0].metric == "euclidean"
    assert manifest.extra == {"lancedb": {"folded_columns": {"title": "string", "page": "int64"}}}
    rows = vecfmt.open_dump(str(tmp_path / "out")).table("")
    assert rows.column("id").to_pylist() == ["10", "11", "12"]
    assert [json.loads(m) for m in rows.column("metadata").to_pylist()] == [
        {"title": "a", "page": 1}, {"title": "b", "page": 2}, {"page": 3}]
    np.testing.assert_array_equal(rows.column("values").combine_chunks().values.to_numpy(), matrix.ravel())


def test_search_finds_the_nearest(tmp_path):
    table = make_table(200, 16)
    vecfmt.write_dump(str(tmp_path / "a"), table, metric="euclidean")
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    importer = vecfmt.stores.lancedb.LanceDBImporter(vecfmt.stores.base.StoreURI.parse(lance(tmp_path)))
    importer.prepare(vecfmt.open_dump(str(tmp_path / "a")).manifest, if_exists="append")
    query = table.column("values").combine_chunks().values.to_numpy().reshape(200, 16)[77]
    [(ident, distance)] = importer.search(query, 1)
    assert ident == "id-77" and distance == pytest.approx(0.0, abs=1e-6)


def test_copy_lancedb_to_lancedb(tmp_path, identical):
    table = make_table(300, 8, document=True)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path, "src"))
    result = transfer.copy(lance(tmp_path, "src"), lance(tmp_path, "dst"))
    assert result.rows == 300
    transfer.export(lance(tmp_path, "dst"), str(tmp_path / "b"))
    identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


def _count(tmp_path, table="items") -> int:
    return lancedb.connect(str(tmp_path / "db")).open_table(table).count_rows()


def test_interrupted_export_resumes_from_its_last_checkpoint(tmp_path, identical, monkeypatch):
    table = make_table(2000, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    out = str(tmp_path / "out")
    options = vecfmt.ParquetOptions(max_file_rows=300)
    exporter_cls = vecfmt.stores.lancedb.LanceDBExporter
    original = exporter_cls.batches

    def dying(self, part, *, batch_size, resume=None):
        for i, chunk in enumerate(original(self, part, batch_size=batch_size, resume=resume)):
            if i == 11:
                raise ConnectionError("store went away")
            yield chunk

    monkeypatch.setattr(exporter_cls, "batches", dying)
    with pytest.raises(ConnectionError):
        transfer.export(lance(tmp_path), out, batch_size=100, options=options, resume=True)
    state = json.loads((tmp_path / "out" / "vecfmt-export-state.json").read_text())
    assert [f["rows"] for f in state["files"]] == [300, 300, 300]
    assert json.loads(state["cursor"]["token"])["offset"] == 900
    assert not (tmp_path / "out" / "manifest.json").exists()
    kept = {f["path"]: (tmp_path / "out" / f["path"]).stat().st_ino for f in state["files"]}

    monkeypatch.setattr(exporter_cls, "batches", original)
    manifest = transfer.export(lance(tmp_path), out, batch_size=100, options=options, resume=True)
    assert manifest.total_rows == 2000
    assert {p: (tmp_path / "out" / p).stat().st_ino for p in kept} == kept  # not rewritten
    assert not (tmp_path / "out" / "vecfmt-export-state.json").exists()
    identical(vecfmt.open_dump(out).table(""), table)


def test_resume_never_touches_a_complete_dump(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(10, 4))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    transfer.export(lance(tmp_path), str(tmp_path / "out"))
    with pytest.raises(vecfmt.DumpError, match="already holds a dump"):
        transfer.export(lance(tmp_path), str(tmp_path / "out"), resume=True)


def test_export_killed_with_sigkill_resumes(tmp_path, identical):
    table = make_table(40_000, 64)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    out = tmp_path / "out"
    script = (
        "import vecfmt; from vecfmt import transfer; "
        f"transfer.export({lance(tmp_path)!r}, {str(out)!r}, batch_size=200, resume=True, "
        "options=vecfmt.ParquetOptions(max_file_rows=1000))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    state = out / "vecfmt-export-state.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and len(json.loads(state.read_text())["files"]) >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert proc.wait() == -signal.SIGKILL, "the export finished before it could be killed"
    assert not (out / "manifest.json").exists()
    manifest = transfer.export(lance(tmp_path), str(out), batch_size=200, resume=True,
                               options=vecfmt.ParquetOptions(max_file_rows=1000))
    assert manifest.total_rows == 40_000
    identical(vecfmt.open_dump(str(out)).table(""), table)
    assert validate_dump(str(out)) == []


def test_resume_refuses_other_namespaces_than_the_interrupted_export(tmp_path, monkeypatch):
    with vecfmt.DumpWriter(str(tmp_path / "a")) as w:
        w.write(make_table(600, 4, prefix="a-"), namespace="a")
        w.write(make_table(600, 4, prefix="b-"), namespace="b")
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    exporter_cls = vecfmt.stores.lancedb.LanceDBExporter
    original = exporter_cls.batches

    def dying(self, part, *, batch_size, resume=None):
        for i, chunk in enumerate(original(self, part, batch_size=batch_size, resume=resume)):
            if part.namespace == "b" and i == 3:
                raise ConnectionError("store went away")
            yield chunk

    monkeypatch.setattr(exporter_cls, "batches", dying)
    options = vecfmt.ParquetOptions(max_file_rows=200)
    out = str(tmp_path / "out")
    with pytest.raises(ConnectionError):
        transfer.export(lance(tmp_path), out, batch_size=100, options=options, resume=True)
    monkeypatch.setattr(exporter_cls, "batches", original)
    with pytest.raises(vecfmt.DumpError, match=r"covered namespaces \['a', 'b'\], this one \['b'\]"):
        transfer.export(lance(tmp_path), out, namespaces=["b"], batch_size=100, options=options, resume=True)
    manifest = transfer.export(lance(tmp_path), out, batch_size=100, options=options, resume=True)
    assert {ns.name: ns.rows for ns in manifest.namespaces} == {"a": 600, "b": 600}
    assert validate_dump(out) == []
