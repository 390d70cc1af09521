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
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli, write_raw_dump
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
    with pytest.raises(StoreError, match="column 'vector' has 4 dimensions, the dump has 5 float32 dimensions"):
        transfer.import_dump(str(tmp_path / "b"), lance(tmp_path), if_exists="append")


def _stop_at_write(monkeypatch, n: int) -> None:
    """The importer's ``n``-th write raises KeyboardInterrupt, as if the process were stopped there."""
    importer_cls = vecfmt.stores.lancedb.LanceDBImporter
    original_write = importer_cls.write
    calls = {"n": 0}

    def failing_write(self, namespace, batch, *, rows_done):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        original_write(self, namespace, batch, rows_done=rows_done)

    monkeypatch.setattr(importer_cls, "write", failing_write)


def test_interrupted_import_resumes_without_duplicates_or_losses(tmp_path, identical, monkeypatch):
    a = str(tmp_path / "a")
    table = make_table(1000, 8)
    vecfmt.write_dump(a, table, options=vecfmt.ParquetOptions(max_file_rows=300))
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 200)  # commits after writes 2 and 4
    _stop_at_write(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        transfer.import_dump(a, lance(tmp_path), batch_size=100)
    monkeypatch.undo()
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


def _rows(tmp_path, table="items") -> list[tuple]:
    """(namespace, id) of every row; a table without a namespace column is all default namespace."""
    got = lancedb.connect(str(tmp_path / "db")).open_table(table).to_arrow()
    spaces = got.column("namespace").to_pylist() if "namespace" in got.column_names else [""] * got.num_rows
    return sorted(zip(spaces, got.column("id").to_pylist(), strict=True))


def _tables(tmp_path) -> list[str]:
    return list(lancedb.connect(str(tmp_path / "db")).list_tables().tables)


def test_upsert_keys_on_namespace_and_id(tmp_path):
    with vecfmt.DumpWriter(str(tmp_path / "a")) as w:
        w.write(make_table(2, 4, prefix="x"), namespace="a")  # ids x0, x1
        w.write(make_table(1, 4, prefix="x", seed=1), namespace="b")  # id x0, another vector
    for _ in range(2):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), if_exists="upsert")
    assert _rows(tmp_path) == [("a", "x0"), ("a", "x1"), ("b", "x0")]
    transfer.export(lance(tmp_path), str(tmp_path / "back"))
    dump = vecfmt.open_dump(str(tmp_path / "back"))
    np.testing.assert_array_equal(dump.vectors(dump.table("b")), vecfmt.open_dump(str(tmp_path / "a")).vectors(
        vecfmt.open_dump(str(tmp_path / "a")).table("b")))


def test_upsert_of_a_default_namespace_dump_into_a_namespaced_table(tmp_path):
    with vecfmt.DumpWriter(str(tmp_path / "a")) as w:
        w.write(make_table(3, 4), namespace="t")
    vecfmt.write_dump(str(tmp_path / "d"), make_table(2, 4, seed=5))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    transfer.import_dump(str(tmp_path / "d"), lance(tmp_path), if_exists="upsert")
    transfer.import_dump(str(tmp_path / "d"), lance(tmp_path), if_exists="upsert")
    assert _rows(tmp_path) == [("", "id-0"), ("", "id-1"), ("t", "id-0"), ("t", "id-1"), ("t", "id-2")]


def _old_table(tmp_path, n=1000) -> None:
    vecfmt.write_dump(str(tmp_path / "old"), make_table(n, 8, prefix="old-"))
    transfer.import_dump(str(tmp_path / "old"), lance(tmp_path))


def _assert_old_table_untouched(tmp_path, n=1000) -> None:
    assert _tables(tmp_path) == ["items"]  # no staged table left behind
    assert _rows(tmp_path) == sorted(("", f"old-{i}") for i in range(n))


def test_replace_with_a_dump_whose_checksum_is_wrong_leaves_the_old_table(tmp_path):
    _old_table(tmp_path)
    new = str(tmp_path / "new")
    vecfmt.write_dump(new, make_table(1000, 8), options=vecfmt.ParquetOptions(max_file_rows=100))
    manifest = json.loads((tmp_path / "new" / "manifest.json").read_text())
    manifest["files"][3]["sha256"] = "0" * 64
    (tmp_path / "new" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(vecfmt.DumpError, match="SHA-256"):
        transfer.import_dump(new, lance(tmp_path), if_exists="replace", batch_size=25)
    _assert_old_table_untouched(tmp_path)


def test_replace_with_a_bad_row_leaves_the_old_table(tmp_path):
    _old_table(tmp_path)
    bad = make_table(1000, 8)
    vectors = bad.column("values").combine_chunks().values.to_numpy().copy().reshape(1000, 8)
    vectors[700, 3] = np.nan
    bad = bad.set_column(1, "values", vectors_array(vectors))
    write_raw_dump(str(tmp_path / "new"), {"": bad})
    with pytest.raises(vecfmt.InvalidDataError, match="NaN"):
        transfer.import_dump(str(tmp_path / "new"), lance(tmp_path), if_exists="replace", batch_size=25)
    _assert_old_table_untouched(tmp_path)


def test_interrupted_replace_keeps_the_old_table_and_resumes(tmp_path, identical, monkeypatch):
    _old_table(tmp_path)
    new = make_table(1000, 8, prefix="new-", document=True)
    vecfmt.write_dump(str(tmp_path / "new"), new, options=vecfmt.ParquetOptions(max_file_rows=300))
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 300)
    _stop_at_write(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        transfer.import_dump(str(tmp_path / "new"), lance(tmp_path), if_exists="replace", batch_size=100)
    monkeypatch.undo()
    assert _rows(tmp_path) == sorted(("", f"old-{i}") for i in range(1000))  # readers still see the old rows
    assert len(_tables(tmp_path)) == 2  # the staged table, kept for the resume
    result = transfer.import_dump(str(tmp_path / "new"), lance(tmp_path), if_exists="replace", resume=True,
                                  batch_size=100)
    assert (result.rows_skipped, result.rows) == (300, 700)
    assert _tables(tmp_path) == ["items"]
    transfer.export(lance(tmp_path), str(tmp_path / "back"))
    identical(vecfmt.open_dump(str(tmp_path / "back")).table(""), new)


def test_a_new_replace_clears_a_staged_table_left_by_an_interrupted_one(tmp_path, monkeypatch):
    _old_table(tmp_path, 100)
    vecfmt.write_dump(str(tmp_path / "new"), make_table(100, 8, prefix="new-"))
    monkeypatch.setattr(vecfmt.stores.lancedb.LanceDBImporter, "finish",
                        lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        transfer.import_dump(str(tmp_path / "new"), lance(tmp_path), if_exists="replace")
    monkeypatch.undo()
    assert len(_tables(tmp_path)) == 2
    transfer.import_dump(str(tmp_path / "new"), lance(tmp_path), if_exists="replace")
    assert _tables(tmp_path) == ["items"]
    assert _rows(tmp_path) == sorted(("", f"new-{i}") for i in range(100))


def test_null_namespaces_export_under_the_default_namespace(tmp_path):
    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("items", pa.table({
        "id": ["a", "b", "c"],
        "vector": vectors_array(np.eye(3, dtype=np.float32)),
        "namespace": pa.array([None, "t", ""], pa.string()),
    }))
    manifest = transfer.export(lance(tmp_path), str(tmp_path / "out"))
    assert {ns.name: ns.rows for ns in manifest.namespaces} == {"": 2, "t": 1}
    assert sorted(vecfmt.open_dump(str(tmp_path / "out")).table("").column("id").to_pylist()) == ["a", "c"]


def test_import_commits_large_pieces_and_compacts(tmp_path, identical):
    table = make_table(20_000, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), batch_size=1000)
    lance_table = lancedb.connect(str(tmp_path / "db")).open_table("items")
    assert lance_table.stats()["fragment_stats"]["num_fragments"] == 1
    assert len(lance_table.list_versions()) <= 3  # create, one commit, compaction at most
    transfer.export(lance(tmp_path), str(tmp_path / "b"))
    identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


def test_finish_compacts_the_fragments_of_several_commits_and_keeps_every_version(tmp_path, monkeypatch):
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 5000)
    vecfmt.write_dump(str(tmp_path / "a"), make_table(20_000, 8))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), batch_size=1000)
    lance_table = lancedb.connect(str(tmp_path / "db")).open_table("items")
    assert lance_table.stats()["fragment_stats"]["num_fragments"] == 1
    versions = [v["version"] for v in lance_table.list_versions()]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 6  # 1 create + 4 adds: none pruned
    assert lance_table.count_rows() == 20_000


def _foreign(tmp_path, **columns) -> None:
    n = len(next(iter(columns.values())))
    lancedb.connect(str(tmp_path / "db")).create_table("docs", pa.table({
        "id": [f"r{i}" for i in range(n)],
        "vector": vectors_array(np.ones((n, 2), np.float32)),
        **columns,
    }))


def _exported_metadata(tmp_path) -> list:
    transfer.export(lance(tmp_path, "docs"), str(tmp_path / "out"))
    rows = vecfmt.open_dump(str(tmp_path / "out")).table("").sort_by("id")
    return [None if m is None else json.loads(m) for m in rows.column("metadata").to_pylist()]


def test_folded_columns_are_encoded_as_json(tmp_path):
    import datetime as dt
    _foreign(
        tmp_path,
        blob=pa.array([b"\x00\x01", None], pa.binary()),
        day=pa.array([dt.date(2024, 2, 29), None], pa.date32()),
        at=pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 6000), None], pa.timestamp("ms")),
        score=pa.array([0.5, None], pa.float64()),
        tags=pa.array([["x"], []], pa.list_(pa.string())),
    )
    assert _exported_metadata(tmp_path) == [
        {"blob": "AAE=", "day": "2024-02-29", "at": "2024-01-02T03:04:05.006000", "score": 0.5, "tags": ["x"]},
        {"tags": []},
    ]


def test_folded_nan_is_refused_naming_column_and_row(tmp_path):
    _foreign(tmp_path, score=pa.array([0.5, float("nan")], pa.float64()))
    run = vecfmt_cli("export", lance(tmp_path, "docs"), str(tmp_path / "out"))
    assert_one_clear_error(run, "'score'", "'r1'", "NaN")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_metadata_that_is_not_an_object_is_wrapped_under_its_column_name(tmp_path):
    _foreign(tmp_path, metadata=pa.array(['[1, 2]', '{"k": 1}', '"s"', None]))
    assert _exported_metadata(tmp_path) == [{"metadata": [1, 2]}, {"k": 1}, {"metadata": "s"}, None]


def test_metadata_that_is_not_an_object_is_wrapped_when_columns_are_folded(tmp_path):
    _foreign(tmp_path, metadata=pa.array(['[1, 2]', '{"k": 1}', "7", None]), page=[1, 2, 3, 4])
    assert _exported_metadata(tmp_path) == [
        {"metadata": [1, 2], "page": 1}, {"k": 1, "page": 2}, {"metadata": 7, "page": 3}, {"page": 4}]


def test_metadata_that_is_not_json_is_refused(tmp_path):
    _foreign(tmp_path, metadata=pa.array(["{}", "oops"]))
    with pytest.raises(vecfmt.InvalidDataError, match=r"column 'metadata' of row 'r1' is not JSON"):
        transfer.export(lance(tmp_path, "docs"), str(tmp_path / "out"))


def test_unknown_options_are_refused(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(3, 2))
    with pytest.raises(StoreError, match=r"lancedb: unknown option 'tabel'"):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path, extra="&tabel=x"))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path, extra="&metric=cosine&id=id&vector=vector"))
    with pytest.raises(StoreError, match=r"lancedb: unknown option 'metirc'"):
        transfer.export(lance(tmp_path, extra="&metirc=dot"), str(tmp_path / "b"))
    run = vecfmt_cli("export", lance(tmp_path, extra="&namespace_colum=ns"), str(tmp_path / "c"))
    assert_one_clear_error(run, "unknown option 'namespace_colum'")


# --- resume verifies the table is exactly as the interrupted run left it ---------------------------


def _interrupted_import(tmp_path, monkeypatch, rows=1000) -> pa.Table:
    """An import of ``a`` stopped after its second commit (400 rows committed)."""
    table = make_table(rows, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table, options=vecfmt.ParquetOptions(max_file_rows=300))
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 200)  # commits after writes 2 and 4
    _stop_at_write(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), batch_size=100)
    monkeypatch.undo()
    assert _count(tmp_path) == 400
    return table


def test_resume_refuses_a_table_another_writer_appended_to_since_the_interruption(tmp_path, monkeypatch):
    _interrupted_import(tmp_path, monkeypatch)
    vecfmt.write_dump(str(tmp_path / "other"), make_table(100, 8, prefix="other-"))
    transfer.import_dump(str(tmp_path / "other"), lance(tmp_path), if_exists="append")
    run = vecfmt_cli("import", str(tmp_path / "a"), lance(tmp_path), "--resume")
    assert run.code == 1
    assert_one_clear_error(run, "'items'", "changed since the interrupted import", "without --resume")
    assert _count(tmp_path) == 500  # nothing written


def test_resume_refuses_when_stopped_between_a_commit_and_its_progress_record(tmp_path, monkeypatch):
    """The data commit landed, the record of it did not: the resume cannot tell that commit from another
    writer's, so it refuses rather than skip or duplicate rows."""
    vecfmt.write_dump(str(tmp_path / "a"), make_table(1000, 8), options=vecfmt.ParquetOptions(max_file_rows=300))
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 200)
    importer_cls = vecfmt.stores.lancedb.LanceDBImporter
    original = importer_cls._record_progress
    calls = {"n": 0}

    def dying(self, version):
        calls["n"] += 1
        if calls["n"] == 3:  # 1: the table's creation, 2: the first commit, 3: the second
            raise KeyboardInterrupt
        original(self, version)

    monkeypatch.setattr(importer_cls, "_record_progress", dying)
    with pytest.raises(KeyboardInterrupt):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), batch_size=100)
    monkeypatch.undo()
    assert _count(tmp_path) == 400
    with pytest.raises(StoreError, match="changed since the interrupted import"):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), resume=True, batch_size=100)
    assert _count(tmp_path) == 400
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), if_exists="replace")
    assert _count(tmp_path) == 1000


def test_a_finished_import_keeps_no_progress_record_and_refuses_a_resume(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(300, 8))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    assert lancedb.connect(str(tmp_path / "db")).open_table("items").tags.list() == {}  # nothing pins a version
    with pytest.raises(StoreError, match="no interrupted import of this dump"):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), resume=True)
    assert _count(tmp_path) == 300


def test_import_killed_with_sigkill_resumes_exactly_or_refuses(tmp_path, identical):
    table = make_table(30_000, 16)
    vecfmt.write_dump(str(tmp_path / "a"), table, options=vecfmt.ParquetOptions(max_file_rows=2000))
    script = (
        "import vecfmt.stores.lancedb as l; from vecfmt import transfer; l.COMMIT_ROWS = 2000; "
        f"transfer.import_dump({str(tmp_path / 'a')!r}, {lance(tmp_path)!r}, batch_size=500)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    record = tmp_path / "db" / "items.lance" / "_refs" / "tags" / "vecfmt-import.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if record.exists() and json.loads(record.read_text() or "{}").get("version", 0) >= 4:  # a few commits
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    assert proc.wait() == -signal.SIGKILL, "the import finished before it could be killed"
    try:
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), resume=True, batch_size=500)
    except StoreError as exc:  # killed between a commit and its record: refused, table untouched
        assert "changed since the interrupted import" in str(exc)
        return
    transfer.export(lance(tmp_path), str(tmp_path / "b"))
    identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


# --- copy refuses its own source however it is spelled ----------------------------------------------


@pytest.mark.parametrize("spelling", ["file://{db}", "{db}/../db", "file://{db}/", "file://{db}/../db"])
def test_copy_onto_its_own_source_spelled_otherwise_is_refused(tmp_path, spelling):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(100, 4))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    target = "lancedb://" + spelling.format(db=tmp_path / "db") + "?table=items"
    with pytest.raises(StoreError, match="same table"):
        transfer.copy(lance(tmp_path), target, if_exists="append")
    assert _count(tmp_path) == 100


# --- metadata must be JSON objects -----------------------------------------------------------------


def _dump_with_metadata(tmp_path, row: int, text: str) -> str:
    table = make_table(1000, 8)
    texts = [f'{{"i": {i}}}' for i in range(1000)]
    texts[row] = text
    table = table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(texts, pa.string()))
    write_raw_dump(str(tmp_path / "bad"), {"": table})
    return str(tmp_path / "bad")


@pytest.mark.parametrize("text", ['{"x": ', "[1,2]", '{"x": NaN}', "", '"s"'])
def test_replace_with_metadata_that_is_not_a_json_object_leaves_the_old_table(tmp_path, text):
    _old_table(tmp_path)
    bad = _dump_with_metadata(tmp_path, 550, text)
    run = vecfmt_cli("import", bad, lance(tmp_path), "--if-exists", "replace", "--batch-size", "100")
    assert_one_clear_error(run, "'id-550'", "metadata")
    _assert_old_table_untouched(tmp_path)


def test_import_refuses_metadata_that_is_not_json_before_committing(tmp_path):
    bad = _dump_with_metadata(tmp_path, 550, '{"x": ')
    with pytest.raises(vecfmt.InvalidDataError, match=r"metadata of id 'id-550' is not a JSON object.*nothing was "
                       r"changed: the target is as it was"):
        transfer.import_dump(bad, lance(tmp_path), batch_size=100)
    # the table it created is gone, not left empty
    assert vecfmt.stores.lancedb._table_names(lancedb.connect(str(tmp_path / "db"))) == []


def test_a_refused_import_keeps_the_rows_committed_before_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 200)
    bad = _dump_with_metadata(tmp_path, 550, '{"x": ')
    with pytest.raises(vecfmt.InvalidDataError, match=r"id 'id-550'.*the first 400 rows are in the target"):
        transfer.import_dump(bad, lance(tmp_path), batch_size=100)
    assert _count(tmp_path) == 400


def test_a_lance_commit_is_all_or_nothing_when_its_piece_is_cancelled(tmp_path):
    db = lancedb.connect(str(tmp_path / "db"))
    table = db.create_table("t", schema=pa.schema([("id", pa.string())]))
    piece = vecfmt.stores.lancedb._StreamedCommit(lambda reader: table.add(reader).version, table.schema)
    for start in range(0, 300, 100):
        piece.put(pa.record_batch({"id": [str(i) for i in range(start, start + 100)]}))
    piece.cancel()
    assert (table.count_rows(), table.version) == (0, 1)
    piece = vecfmt.stores.lancedb._StreamedCommit(lambda reader: table.add(reader).version, table.schema)
    piece.put(pa.record_batch({"id": ["a", "b"]}))
    assert piece.finish() == 2 and table.count_rows() == 2


def test_export_refuses_table_metadata_that_is_not_json(tmp_path):
    _foreign(tmp_path, metadata=pa.array(['{"k": 1}', '{"k": ']))
    with pytest.raises(vecfmt.InvalidDataError, match=r"metadata of id 'r1' is not a JSON object"):
        transfer.export(lance(tmp_path, "docs"), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "manifest.json").exists()


# --- concurrent writers ------------------------------------------------------------------------------


def test_a_replace_overtaken_by_another_fails_clearly_and_the_table_holds_one_dump(tmp_path, monkeypatch):
    """Replace X is loading when replace Y runs from start to end (it drops X's staged table and swaps its
    own rows in): X must stop with one clear line, not commit its rows into Y's table."""
    _old_table(tmp_path, 100)
    vecfmt.write_dump(str(tmp_path / "x"), make_table(1000, 8, prefix="x-"))
    vecfmt.write_dump(str(tmp_path / "y"), make_table(700, 8, prefix="y-"))
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 200)
    # as on object storage, which has no lock (on a local folder the lock refuses Y outright: tested below)
    monkeypatch.setattr(vecfmt.stores.lancedb.importer, "_lock_table", lambda location, name: None)
    importer_cls = vecfmt.stores.lancedb.LanceDBImporter
    original_write = importer_cls.write
    state = {"n": 0, "inside": False}

    def write(self, namespace, batch, *, rows_done):
        state["n"] += 1
        if state["n"] == 3 and not state["inside"]:
            state["inside"] = True
            transfer.import_dump(str(tmp_path / "y"), lance(tmp_path), if_exists="replace", batch_size=100)
        original_write(self, namespace, batch, rows_done=rows_done)

    monkeypatch.setattr(importer_cls, "write", write)
    with pytest.raises(StoreError, match="another writer changed LanceDB table") as caught:
        transfer.import_dump(str(tmp_path / "x"), lance(tmp_path), if_exists="replace", batch_size=100)
    assert "\n" not in str(caught.value) and "--resume" not in str(caught.value)
    assert _rows(tmp_path) == sorted(("", f"y-{i}") for i in range(700))


def test_an_import_of_a_table_another_import_holds_is_refused_and_changes_nothing(tmp_path):
    """Two resumes of one interrupted import would both append (Lance rebases appends, it does not refuse
    them): the table's lock lets one import at a time load it, and is gone with the process that held it."""
    vecfmt.write_dump(str(tmp_path / "a"), make_table(300, 8))
    held = vecfmt.stores.lancedb._lock_table(str(tmp_path / "db"), "items")
    for if_exists in ("fail", "replace"):
        with pytest.raises(StoreError, match=r"another writer \(a vecfmt import\) is loading LanceDB table 'items'"):
            transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), if_exists=if_exists)
    assert vecfmt.stores.lancedb._table_names(lancedb.connect(str(tmp_path / "db"))) == []
    held.close()
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path))
    assert _count(tmp_path) == 300


def test_ctrl_c_while_lance_commits_keeps_the_commit_resumable(tmp_path, identical, monkeypatch):
    """Ctrl-C while Lance makes a commit: the commit lands all the same, so the import waits for it and
    records it before it stops; --resume then goes on from there."""
    table = make_table(1000, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table, options=vecfmt.ParquetOptions(max_file_rows=250))
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 500)
    original_wait = vecfmt.stores.lancedb._StreamedCommit.wait
    calls = {"n": 0}

    def interrupted_wait(self):
        calls["n"] += 1
        if calls["n"] == 1:  # the signal arrives while the first commit is being made
            raise KeyboardInterrupt
        return original_wait(self)

    monkeypatch.setattr(vecfmt.stores.lancedb._StreamedCommit, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), batch_size=100)
    assert _count(tmp_path) == 500
    result = transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), resume=True, batch_size=100)
    assert (result.rows_skipped, result.rows) == (500, 500)
    transfer.export(lance(tmp_path), str(tmp_path / "b"))
    identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


def test_a_corrupt_file_after_commits_says_what_the_target_holds(tmp_path, monkeypatch):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(1000, 8), options=vecfmt.ParquetOptions(max_file_rows=200))
    part = tmp_path / "a" / "__default__" / "part-00003.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    monkeypatch.setattr("vecfmt.stores.lancedb.COMMIT_ROWS", 200)
    with pytest.raises(vecfmt.DumpError, match=r"part-00003.parquet is corrupt.*the first 600 rows of the dump "
                       r"are in the target, which is incomplete"):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), batch_size=100)
    assert _count(tmp_path) == 600


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_replaces_leave_exactly_one_dump(tmp_path, attempt):
    _old_table(tmp_path, 100)
    dumps = {}
    for name in ("x", "y"):
        vecfmt.write_dump(str(tmp_path / name), make_table(60_000, 8, prefix=f"{name}-", seed=ord(name)))
        dumps[name] = sorted(("", f"{name}-{i}") for i in range(60_000))
    procs = [subprocess.Popen([sys.executable, "-m", "vecfmt.cli", "import", str(tmp_path / name), lance(tmp_path),
                               "--if-exists", "replace", "--batch-size", "2000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("x", "y")]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode in (0, 1), stderr
        if proc.returncode == 1:
            assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
            assert "another writer" in stderr, stderr
    assert _rows(tmp_path) in (dumps["x"], dumps["y"], sorted(("", f"old-{i}") for i in range(100)))


# --- a vector index after import ----------------------------------------------------------------------


def _indexes(tmp_path, table="items"):
    import lancedb

    return [(i.index_type, i.columns) for i in lancedb.connect(str(tmp_path / "db")).open_table(table).list_indices()]


@pytest.mark.parametrize(("extra", "expected"), [
    ("", []),  # auto: 3,000 rows are below index_min_rows, a flat scan is exact and fast
    ("&index_min_rows=2000&num_partitions=4&num_sub_vectors=4", [("IvfPq", ["vector"])]),
    ("&index=ivf_hnsw_sq&num_partitions=2", [("IvfHnswSq", ["vector"])]),
    ("&index=none&index_min_rows=1", []),
])
def test_an_index_is_built_when_the_table_is_large_enough(tmp_path, extra, expected):
    vecfmt.write_dump(str(tmp_path / "d"), make_table(3_000, 16))
    transfer.import_dump(str(tmp_path / "d"), lance(tmp_path, extra=extra))
    assert _indexes(tmp_path) == expected
    from vecfmt.quality.verify import verify

    report = verify(str(tmp_path / "d"), lance(tmp_path), queries=30)
    assert report.namespaces[""].complete and report.search is not None
    assert report.search.recall_target >= (1.0 if not expected else 0.5)


def test_an_appended_table_keeps_its_index_up_to_date(tmp_path):
    vecfmt.write_dump(str(tmp_path / "d"), make_table(3_000, 16))
    vecfmt.write_dump(str(tmp_path / "e"), make_table(500, 16, prefix="more-"))
    transfer.import_dump(str(tmp_path / "d"), lance(tmp_path, extra="&index=ivf_pq&num_partitions=4&num_sub_vectors=4"))
    transfer.import_dump(str(tmp_path / "e"), lance(tmp_path), if_exists="append")
    assert _indexes(tmp_path) == [("IvfPq", ["vector"])]
    import lancedb

    assert lancedb.connect(str(tmp_path / "db")).open_table("items").count_rows() == 3_500


def test_a_bad_index_option_is_one_clear_line(tmp_path):
    vecfmt.write_dump(str(tmp_path / "d"), make_table(10, 4))
    run = vecfmt_cli("import", str(tmp_path / "d"), lance(tmp_path, extra="&index=btree"))
    assert_one_clear_error(run, "option index must be one of")


@pytest.mark.parametrize(("extra", "message"), [
    ("&index=ivf_pq&num_sub_vectors=3", "num_sub_vectors must divide the vectors' 16 dimensions, not 3"),
    ("&index=ivf_pq&num_sub_vectors=0", "num_sub_vectors must be at least 1"),
    ("&num_partitions=-1", "num_partitions must be at least 1"),
])
def test_index_options_are_checked_before_any_row_is_written(tmp_path, extra, message):
    vecfmt.write_dump(str(tmp_path / "d"), make_table(100, 16))
    assert_one_clear_error(vecfmt_cli("import", str(tmp_path / "d"), lance(tmp_path, extra=extra)), message)
    assert "items" not in vecfmt.stores.lancedb._table_names(lancedb.connect(str(tmp_path / "db")))


def test_an_index_build_that_fails_says_the_rows_are_in_without_a_resume_that_cannot_work(tmp_path, monkeypatch):
    vecfmt.write_dump(str(tmp_path / "d"), make_table(300, 16))

    def refuse(*args, **kwargs):
        raise RuntimeError("out of memory while training")

    monkeypatch.setattr(lancedb.table.LanceTable, "create_index", refuse)
    with pytest.raises(StoreError, match="holds every row of the import, but building its IVF_PQ index failed: "
                                         "out of memory") as caught:
        transfer.import_dump(str(tmp_path / "d"), lance(tmp_path, extra="&index=ivf_pq"))
    assert "--resume" not in str(caught.value)
    assert lancedb.connect(str(tmp_path / "db")).open_table("items").count_rows() == 300


@pytest.mark.parametrize(("columns", "message"), [
    ({"id": pa.array([1], pa.int64())}, r"column 'id' is int64, the dump's is string"),
    ({"vector": pa.array([[0.0] * 8], pa.list_(pa.float64(), 8))}, r"column 'vector' is fixed_size_list<item: double>"),
    ({"extra": pa.array(["x"])}, r"has columns the dump does not \('extra'\)"),
])
def test_append_into_a_table_of_another_shape_is_refused_before_writing(tmp_path, columns, message):
    base = {"id": pa.array(["x"]), "vector": vectors_array(np.zeros((1, 8), np.float32)), "metadata": pa.array([None],
            pa.string())}  # fmt: skip
    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("items", pa.table({**base, **columns}))
    vecfmt.write_dump(str(tmp_path / "a"), make_table(50, 8))
    for if_exists in ("append", "upsert"):
        with pytest.raises(StoreError, match=message):
            transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), if_exists=if_exists)
    assert _count(tmp_path) == 1


def test_append_reorders_columns_and_refuses_nulls_the_table_does_not_accept(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(50, 8))
    db = lancedb.connect(str(tmp_path / "db"))
    schema = pa.schema([pa.field("metadata", pa.string()), pa.field("vector", pa.list_(pa.float32(), 8)),
                        pa.field("id", pa.string(), nullable=False)])  # fmt: skip
    db.create_table("items", schema=schema)
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path), if_exists="append")
    assert _count(tmp_path) == 50
    strict = schema.set(0, pa.field("metadata", pa.string(), nullable=False))
    db.create_table("strict", schema=strict)
    with pytest.raises(StoreError, match="rows of the dump do not fit LanceDB table 'strict'"):
        transfer.import_dump(str(tmp_path / "a"), lance(tmp_path, "strict"), if_exists="append")


@pytest.mark.parametrize("spelling", ["{path}", "file://{path}"])
def test_export_from_a_missing_database_folder_creates_nothing(tmp_path, spelling):
    missing = tmp_path / "no" / "such-db"
    run = vecfmt_cli("export", f"lancedb://{spelling.format(path=missing)}?table=t", str(tmp_path / "dump"))
    assert_one_clear_error(run, "does not exist")
    assert not (tmp_path / "no").exists() and not (tmp_path / "dump").exists()
