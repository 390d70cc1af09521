import hashlib
import json
import subprocess
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecfmt
from tests.helpers import make_table, write_raw_dump
from vecfmt.errors import DumpError, InvalidDataError
from vecfmt.schema import vectors_array
from vecfmt.storage import resolve
from vecfmt.writer import ParquetOptions, PartWriter, commit_manifest


def test_round_trip_is_bit_identical_with_every_column(tmp_path, identical):
    table = make_table(1000, 16, document=True, sparse=True, named={"title": 5})
    vecfmt.write_dump(str(tmp_path / "d"), table)
    dump = vecfmt.open_dump(str(tmp_path / "d"))
    back = dump.table("")
    identical(back, table.select(back.column_names))
    assert dump.manifest.vectors[1].name == "title" and dump.manifest.vectors[1].column == "values_title"


def test_special_floats_survive_bit_for_bit(tmp_path, identical):
    tiny = np.float32(1e-45)  # a denormal
    matrix = np.array([[0.0, -0.0, tiny, np.finfo(np.float32).max]], np.float32)
    table = pa.table({"id": ["a"], "values": vectors_array(matrix), "metadata": pa.nulls(1, pa.string())})
    vecfmt.write_dump(str(tmp_path / "d"), table)
    back = vecfmt.open_dump(str(tmp_path / "d")).table()
    assert back.column("values").combine_chunks().values.to_numpy().view(np.uint32).tolist() == \
        matrix.view(np.uint32).ravel().tolist()


def test_files_roll_and_row_groups_gather_small_batches(tmp_path, identical):
    table = make_table(5000, 8)
    options = ParquetOptions(row_group_bytes=40_000, max_file_rows=1800)
    with vecfmt.DumpWriter(str(tmp_path / "d"), options=options) as writer:
        for batch in table.to_batches(max_chunksize=37):  # a store paging 37 rows at a time
            writer.write_batch(batch)
    files = writer.manifest.files
    assert [f.rows for f in files] == [1800, 1800, 1400]
    for f in files:
        meta = pq.ParquetFile(tmp_path / "d" / f.path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert min(sizes[:-1] or [999]) > 300, sizes  # not one row group per 37-row batch
    identical(vecfmt.open_dump(str(tmp_path / "d")).table(), table)


def test_checksums_are_the_files_sha256(tmp_path):
    manifest = vecfmt.write_dump(str(tmp_path / "d"), make_table(3000, 8),
                                 options=ParquetOptions(max_file_rows=1000))
    assert len(manifest.files) == 3
    for f in manifest.files:
        data = (tmp_path / "d" / f.path).read_bytes()
        assert f.sha256 == hashlib.sha256(data).hexdigest() and f.bytes == len(data)


def test_namespaces_go_to_their_own_folders(tmp_path):
    with vecfmt.DumpWriter(str(tmp_path / "d")) as writer:
        writer.write(make_table(10, 4, prefix="a-"), namespace="")
        writer.write(make_table(20, 4, prefix="b-"), namespace="tenant/7")
    folders = sorted(p.name for p in (tmp_path / "d").iterdir() if p.is_dir())
    assert folders == ["__default__", "tenant%2F7"]
    dump = vecfmt.open_dump(str(tmp_path / "d"))
    assert dump.namespaces == ["", "tenant/7"]
    assert dump.table("tenant/7").num_rows == 20
    assert [ns for ns, _ in dump.scan()] == ["", "tenant/7"]


def test_reader_hands_out_vectors_without_copying(tmp_path):
    vecfmt.write_dump(str(tmp_path / "d"), make_table(100, 8))
    dump = vecfmt.open_dump(str(tmp_path / "d"))
    batch = next(dump.batches(""))
    matrix = dump.vectors(batch)
    assert matrix.shape == (100, 8) and matrix.dtype == np.float32
    buffer = batch.column("values").values.buffers()[1]
    assert matrix.__array_interface__["data"][0] == buffer.address


def test_dataset_for_users(tmp_path):
    vecfmt.write_dump(str(tmp_path / "d"), make_table(100, 8))
    ds = vecfmt.open_dump(str(tmp_path / "d")).dataset()
    assert ds.count_rows() == 100
    assert ds.to_table(columns=["id"]).column("id")[0].as_py() == "id-0"


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.__setitem__(0, np.nan), "NaN or inf"),
    (lambda m: m.__setitem__(0, np.inf), "NaN or inf"),
])
def test_writer_refuses_non_finite_vectors(tmp_path, mutate, message):
    table = make_table(10, 4)
    matrix = table.column("values").combine_chunks().values.to_numpy().reshape(10, 4).copy()
    mutate(matrix[7])
    table = table.set_column(1, "values", vectors_array(matrix))
    with pytest.raises(InvalidDataError, match=f"{message} for id 'id-7'"):
        vecfmt.write_dump(str(tmp_path / "d"), table)
    assert not (tmp_path / "d" / "manifest.json").exists()
    assert list((tmp_path / "d").rglob("*.parquet")) == []  # nothing half-written is left


def test_writer_refuses_duplicate_ids_and_leaves_no_dump(tmp_path):
    table = pa.concat_tables([make_table(10, 4), make_table(3, 4)])
    with pytest.raises(InvalidDataError, match="duplicate ids in namespace '': 'id-0', 'id-1', 'id-2'"):
        vecfmt.write_dump(str(tmp_path / "d"), table)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_same_id_in_two_namespaces_is_fine(tmp_path):
    with vecfmt.DumpWriter(str(tmp_path / "d")) as writer:
        writer.write(make_table(5, 4), namespace="a")
        writer.write(make_table(5, 4), namespace="b")
    assert writer.manifest.total_rows == 10


def test_writer_refuses_null_ids(tmp_path):
    table = make_table(3, 4)
    table = table.set_column(0, "id", pa.array(["a", None, "c"]))
    with pytest.raises(InvalidDataError, match="id is null in row 1"):
        vecfmt.write_dump(str(tmp_path / "d"), table)


def test_writer_refuses_to_overwrite_unless_asked(tmp_path):
    uri = str(tmp_path / "d")
    vecfmt.write_dump(uri, make_table(5, 4))
    with pytest.raises(DumpError, match="already holds a dump"):
        vecfmt.write_dump(uri, make_table(6, 4))
    manifest = vecfmt.write_dump(uri, make_table(6, 4, prefix="new-"), overwrite=True)
    assert manifest.total_rows == 6
    assert vecfmt.open_dump(uri).table().column("id")[0].as_py() == "new-0"


def test_leftovers_of_an_interrupted_write_are_not_a_dump(tmp_path):
    uri = str(tmp_path / "d")
    vecfmt.write_dump(uri, make_table(5, 4))
    (tmp_path / "d" / "manifest.json").unlink()
    with pytest.raises(DumpError, match=r"has no manifest\.json: not a complete vecfmt dump"):
        vecfmt.open_dump(uri)
    with pytest.raises(DumpError, match="files but no manifest"):
        vecfmt.write_dump(uri, make_table(5, 4))


def test_an_error_mid_stream_leaves_no_manifest(tmp_path):
    uri = str(tmp_path / "d")

    def batches():
        yield from make_table(100, 4).to_batches(max_chunksize=10)
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"), vecfmt.DumpWriter(uri) as writer:
        writer.write(batches())
    assert [p for p in (tmp_path / "d").rglob("*") if p.is_file()] == []


def test_files_encoded_on_two_threads_are_listed_in_order_and_exact(tmp_path, identical):
    """Row groups of different files are encoded at once (writer.ENCODING_THREADS); the manifest still
    lists the files in the order their rows came, each checksum right."""
    uri = str(tmp_path / "d")
    table = make_table(3000, 16)
    options = ParquetOptions(row_group_bytes=4096, max_file_bytes=8192)
    manifest = vecfmt.write_dump(uri, table, options=options)
    paths = [f.path for f in manifest.files]
    assert len(paths) > 20 and paths == sorted(paths)
    dump = vecfmt.open_dump(uri)
    assert dump.table().column("id").to_pylist() == table.column("id").to_pylist()
    identical(dump.table(), table.cast(dump.manifest.arrow_schema()))
    for entry in manifest.files:
        assert hashlib.sha256((tmp_path / "d" / entry.path).read_bytes()).hexdigest() == entry.sha256


def test_an_error_on_the_encoding_thread_is_raised_and_leaves_no_files(tmp_path):
    uri = str(tmp_path / "d")
    with pytest.raises(Exception, match=r"(?i)compression|codec"):
        vecfmt.write_dump(uri, make_table(500, 8), options=ParquetOptions(compression="no-such-codec",
                                                                          row_group_bytes=4096))
    assert [p for p in (tmp_path / "d").rglob("*") if p.is_file()] == []


def test_a_source_failing_with_files_in_flight_leaves_no_files(tmp_path):
    uri = str(tmp_path / "d")
    options = ParquetOptions(row_group_bytes=64 * 1024, max_file_bytes=64 * 1024)

    def batches():
        yield from make_table(4000, 64).to_batches(max_chunksize=500)
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"), vecfmt.DumpWriter(uri, options=options) as writer:
        writer.write(batches())
    assert [p for p in (tmp_path / "d").rglob("*") if p.is_file()] == []


def test_parallel_part_writers_commit_one_dump(tmp_path, identical):
    """The shape of a distributed export: independent writers, then one commit of their results."""
    uri = str(tmp_path / "d")
    location = resolve(uri)
    location.makedirs()
    schema = vecfmt.Manifest(vectors=[vecfmt.VectorSpec("default", "values", 8, "cosine")]).arrow_schema()
    tables = [make_table(500, 8, seed=s, prefix=f"w{s}-") for s in range(4)]
    results: dict[int, list] = {}

    def work(slot: int) -> None:
        part = PartWriter(location, "", schema, prefix=f"part-w{slot}")
        for batch in tables[slot].cast(schema).to_batches(max_chunksize=100):
            part.write(batch)
        results[slot] = part.close()

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    template = vecfmt.Manifest(vectors=[vecfmt.VectorSpec("default", "values", 8, "cosine")])
    files = [f for s in range(4) for f in results[s]]
    manifest = commit_manifest(location, template, files, check_ids=True)
    assert manifest.total_rows == 2000
    identical(vecfmt.open_dump(uri).table(), pa.concat_tables(tables).cast(schema))


def test_commit_with_check_ids_catches_duplicates_across_parts(tmp_path):
    location = resolve(str(tmp_path / "d"))
    location.makedirs()
    template = vecfmt.Manifest(vectors=[vecfmt.VectorSpec("default", "values", 4, "cosine")])
    files = []
    for slot in range(2):
        part = PartWriter(location, "", template.arrow_schema(), prefix=f"part-w{slot}")
        for batch in make_table(5, 4).cast(template.arrow_schema()).to_batches():
            part.write(batch)
        files.extend(part.close())
    with pytest.raises(InvalidDataError, match="duplicate ids"):
        commit_manifest(location, template, files, check_ids=True)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_reader_catches_a_flipped_byte_before_handing_out_rows(tmp_path):
    uri = str(tmp_path / "d")
    manifest = vecfmt.write_dump(uri, make_table(200, 8))
    path = tmp_path / "d" / manifest.files[0].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    dump = vecfmt.open_dump(uri)  # sizes still match
    with pytest.raises(DumpError, match="SHA-256 differs"):
        next(dump.batches(""))


def test_reader_catches_truncation_when_opening(tmp_path):
    uri = str(tmp_path / "d")
    manifest = vecfmt.write_dump(uri, make_table(200, 8))
    path = tmp_path / "d" / manifest.files[0].path
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DumpError, match="truncated or altered"):
        vecfmt.open_dump(uri)


def test_reader_catches_a_dimension_mismatch_between_manifest_and_file(tmp_path):
    uri = str(tmp_path / "d")
    vecfmt.write_dump(uri, make_table(20, 8))
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    m["vectors"][0]["dimension"] = 9
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DumpError, match="column 'values' has 8 dimensions, the manifest says 9"):
        next(vecfmt.open_dump(uri).batches(""))


def test_raw_dumps_with_bad_rows_are_readable_but_import_refuses_them(tmp_path):
    table = make_table(10, 4)
    matrix = table.column("values").combine_chunks().values.to_numpy().reshape(10, 4).copy()
    matrix[2, 1] = np.nan
    write_raw_dump(str(tmp_path / "d"), {"": table.set_column(1, "values", vectors_array(matrix))})
    rows = vecfmt.open_dump(str(tmp_path / "d")).table()
    assert np.isnan(rows.column("values").combine_chunks().values.to_numpy()[9])


def test_an_empty_table_makes_an_empty_but_complete_dump(tmp_path):
    manifest = vecfmt.write_dump(str(tmp_path / "d"), make_table(0, 8))
    assert manifest.total_rows == 0 and manifest.vectors[0].dimension == 8
    assert vecfmt.open_dump(str(tmp_path / "d")).manifest.vectors[0].dimension == 8


def test_named_vectors_may_be_null_but_not_nan(tmp_path, identical):
    table = make_table(6, 4, named={"title": 3})
    title = pa.array([[1, 2, 3], None, [4, 5, 6], None, [7, 8, 9], [0, 0, 0]], pa.list_(pa.float32(), 3))
    table = table.set_column(table.schema.get_field_index("values_title"), "values_title", title)
    vecfmt.write_dump(str(tmp_path / "d"), table)
    back = vecfmt.open_dump(str(tmp_path / "d")).table()
    assert back.column("values_title").to_pylist() == title.to_pylist()
    broken = table.set_column(table.schema.get_field_index("values_title"), "values_title",
                              pa.array([[1, 2, 3], None, [4, np.nan, 6], None, [7, 8, 9], [0, 0, 0]],
                                       pa.list_(pa.float32(), 3)))
    with pytest.raises(InvalidDataError, match="vector 'title' holds NaN or inf for id 'id-2'"):
        vecfmt.write_dump(str(tmp_path / "e"), broken)


def test_a_null_component_inside_a_vector_is_refused(tmp_path):
    table = make_table(3, 3).set_column(1, "values", pa.array([[1, 2, 3], [4, None, 6], [7, 8, 9]],
                                                              pa.list_(pa.float32(), 3)))
    with pytest.raises(InvalidDataError, match="vector 'default' has a null component for id 'id-1'"):
        vecfmt.write_dump(str(tmp_path / "d"), table)


@pytest.mark.parametrize("sparse, problem", [
    ({"indices": [1, 5], "values": [0.5]}, "lengths"),
    ({"indices": [5, 1], "values": [0.5, 0.25]}, "order"),
    ({"indices": [5, 5], "values": [0.5, 0.25]}, "repeat"),
    ({"indices": [1, 5], "values": [0.5, float("nan")]}, "nan"),
])
def test_malformed_sparse_vectors_are_refused(tmp_path, sparse, problem):
    from vecfmt.schema import SPARSE_TYPE

    good = {"indices": [0, 2], "values": [1.0, 2.0]}
    table = make_table(3, 4).append_column("sparse_values", pa.array([good, sparse, None], SPARSE_TYPE))
    with pytest.raises(InvalidDataError, match="sparse_values malformed for id 'id-1'"):
        vecfmt.write_dump(str(tmp_path / "d"), table)


def test_named_vectors_need_a_primary_one(tmp_path):
    table = make_table(3, 4, named={"title": 2}).drop_columns(["values"])
    with pytest.raises(InvalidDataError, match="need a primary vector in 'values'"):
        vecfmt.write_dump(str(tmp_path / "d"), table)


@pytest.mark.parametrize("change", ["extra", "reordered"])
def test_reader_refuses_extra_or_reordered_columns(tmp_path, change):
    """Spec 7.2: a file holds exactly the manifest's columns, in its order (here size and SHA-256 were
    fixed up in the manifest, so only the schema check can catch it)."""
    from tests.helpers import rewrite_part
    from vecfmt.ops import validate_dump

    uri = str(tmp_path / "d")
    table = make_table(20, 4, document=True)
    vecfmt.write_dump(uri, table)
    if change == "extra":
        table = table.append_column("secret_extra", pa.array(["x"] * 20))
        message = "has a column 'secret_extra' the manifest does not list"
    else:
        table = table.select(["id", "metadata", "values", "document"])
        message = "has its columns in another order than the manifest's: id, metadata, values, document"
    path = rewrite_part(uri, 0, table)
    [problem] = validate_dump(uri)
    assert problem.file == path and message in problem.message
    with pytest.raises(DumpError, match=f"{path} {message}"):
        vecfmt.open_dump(uri).table()


def test_reader_gives_the_manifests_schema_whatever_the_files_nullability(tmp_path):
    """A file written by another tool (nullable id, nullable vector child called ``item``) reads as the
    manifest's schema; a null id in it is refused with the file and row."""
    from tests.helpers import rewrite_part

    uri = str(tmp_path / "d")
    table = make_table(5, 4)
    vecfmt.write_dump(uri, table)
    loose = pa.schema([pa.field("id", pa.string()), pa.field("values", pa.list_(pa.float32(), 4)),
                       pa.field("metadata", pa.string())])
    rewrite_part(uri, 0, table.cast(loose))
    dump = vecfmt.open_dump(uri)
    assert dump.table().schema == dump.schema
    path = rewrite_part(uri, 0, table.cast(loose).set_column(0, "id", pa.array(["a", None, "c", "d", "e"])))
    with pytest.raises(DumpError, match=f"{path} row 1: id is null"):
        vecfmt.open_dump(uri).table()


def _project(tmp_path):
    """A folder that is not a dump: what --overwrite must never wipe."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# my project\n")
    (root / "src" / "main.py").write_text("print('hi')\n")
    return root


def test_overwrite_refuses_a_folder_that_is_not_a_dump(tmp_path):
    root = _project(tmp_path)
    with pytest.raises(DumpError, match=r"holds files but no manifest.*not deleting them"):
        vecfmt.write_dump(str(root), make_table(5, 4), overwrite=True)
    assert (root / "README.md").exists() and (root / "src" / "main.py").exists()
    assert not (root / "__default__").exists()


def test_overwrite_deletes_only_what_the_old_manifest_lists(tmp_path):
    root = tmp_path / "project"
    old = vecfmt.write_dump(str(root), make_table(50, 4), namespace="a", options=ParquetOptions(max_file_rows=20))
    _project(tmp_path)
    stray = root / "a" / "notes.parquet"  # in a namespace folder, but not the dump's
    stray.write_bytes(b"mine")
    new = vecfmt.write_dump(str(root), make_table(5, 4, prefix="new-"), overwrite=True)
    assert (root / "README.md").exists() and (root / "src" / "main.py").exists() and stray.exists()
    assert not any((root / f.path).exists() for f in old.files)
    assert vecfmt.open_dump(str(root)).table().column("id")[0].as_py() == "new-0"
    assert [f.path for f in new.files] == ["__default__/part-00000.parquet"]


def test_overwrite_of_an_interrupted_resumable_export_deletes_what_its_state_lists(tmp_path):
    from vecfmt.writer import EXPORT_STATE

    root = tmp_path / "project"
    vectors = [vecfmt.VectorSpec("default", "values", 4, "cosine")]
    writer = vecfmt.DumpWriter(str(root), vectors=vectors, resumable=True, options=ParquetOptions(max_file_rows=10))
    writer.write_batch(make_table(10, 4).to_batches()[0])
    writer.checkpoint({"at": 10})
    writer._unlock()  # and then the process dies (the OS frees its lock): no manifest
    _project(tmp_path)
    # a resume deletes the files written after the checkpoint, never anything it did not write
    vecfmt.DumpWriter(str(root), vectors=vectors, resumable=True).abort()
    assert (root / "README.md").exists() and (root / "src" / "main.py").exists()
    vecfmt.write_dump(str(root), make_table(3, 4, prefix="new-"), overwrite=True)
    assert (root / "README.md").exists() and (root / "src" / "main.py").exists()
    assert not (root / EXPORT_STATE).exists()
    assert vecfmt.open_dump(str(root)).manifest.total_rows == 3


def test_a_local_write_is_durable_before_the_manifest_appears(tmp_path, monkeypatch):
    """Spec 7.1: every part file, then the namespace folders and the root, are fsynced before the
    manifest's rename; the root again after it."""
    import os

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    root = tmp_path / "d"
    with vecfmt.DumpWriter(str(root), options=ParquetOptions(max_file_rows=10)) as writer:
        writer.write(make_table(25, 4, prefix="a-"), namespace="a")
        writer.write(make_table(5, 4, prefix="b-"), namespace="b")
    manifest = writer.manifest
    commit = events.index(("rename", str(root / "manifest.json")))
    before = {path for kind, path in events[:commit] if kind == "fsync"}
    expected = {str(root / f.path) for f in manifest.files} | {str(root / "a"), str(root / "b"), str(root)}
    assert len(manifest.files) == 4 and expected <= before, (expected - before, events)
    last_dir_sync = max(i for i, (kind, path) in enumerate(events[:commit]) if path in {str(root / "a"), str(root)})
    first_part_sync = min(i for i, (kind, path) in enumerate(events) if path.endswith(".parquet"))
    assert first_part_sync < last_dir_sync  # folders are synced after the files they hold
    assert ("fsync", str(root)) in events[commit + 1:]  # and the rename itself is made durable


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_writer_refuses_metadata_with_nan_or_infinity(tmp_path, constant):
    texts = ['{"a": "NaN is fine in a string"}', '{"score": ' + constant + "}", None]
    table = make_table(3, 4).set_column(2, "metadata", pa.array(texts))
    with pytest.raises(InvalidDataError, match=r"metadata of id 'id-1' holds NaN or Infinity.*RFC 8259"):
        vecfmt.write_dump(str(tmp_path / "d"), table)
    assert not (tmp_path / "d" / "manifest.json").exists()
    vecfmt.write_dump(str(tmp_path / "ok"), table.slice(0, 1))  # the word in a string is no number


def test_writer_refuses_columns_it_does_not_know(tmp_path):
    table = make_table(3, 4).append_column("text", pa.array(["a", "b", "c"])).append_column(
        "title", pa.array(["A", None, "C"]))
    with pytest.raises(InvalidDataError, match=r"columns 'text', 'title' are not part of this dump.*"
                                               r"fold_columns=True"):
        vecfmt.write_dump(str(tmp_path / "d"), table)
    assert not (tmp_path / "d" / "manifest.json").exists()
    with (pytest.raises(InvalidDataError, match="column 'document' is not part of this dump"),
          vecfmt.DumpWriter(str(tmp_path / "e"), document=False) as writer):
        writer.write(make_table(3, 4, document=True))


def test_writer_folds_unknown_columns_into_metadata_when_asked(tmp_path):
    table = make_table(8, 4).append_column("text", pa.array([f"t{i}" for i in range(8)])).append_column(
        "page", pa.array([1, None, 3, 4, 5, 6, 7, 8], pa.int64()))
    manifest = vecfmt.write_dump(str(tmp_path / "d"), table, fold_columns=True)
    assert manifest.extra["folded_columns"] == {"text": "string", "page": "int64"}
    back = vecfmt.open_dump(str(tmp_path / "d")).table()
    assert back.column_names == ["id", "values", "metadata"]
    rows = [json.loads(m) for m in back.column("metadata").to_pylist()]
    original = [json.loads(m) if m else {} for m in table.column("metadata").to_pylist()]
    assert rows[0] == {**original[0], "text": "t0", "page": 1}
    assert rows[1] == {**original[1], "text": "t1"}  # spec 3.4.1: null values are left out
    assert rows[3] == {"text": "t3", "page": 4}  # a row without metadata gets an object
    clash = table.append_column("i", pa.array([10 * i for i in range(8)]))
    vecfmt.write_dump(str(tmp_path / "e"), clash, fold_columns=True)  # a folded key wins (spec 3.4.1)
    assert json.loads(vecfmt.open_dump(str(tmp_path / "e")).table().column("metadata")[2].as_py())["i"] == 20
    nan = table.append_column("score", pa.array([0.5, float("nan")] + [1.0] * 6))
    with pytest.raises(InvalidDataError, match="column 'score' of row 'id-1' holds NaN or Infinity"):
        vecfmt.write_dump(str(tmp_path / "f"), nan, fold_columns=True)


def test_ids_kept_for_the_duplicate_check_do_not_hold_their_batch():
    """DumpWriter keeps every batch's ids until close: they must be a copy, or a batch from a store's reader
    that is released as one (Lance's) stays alive with all its vectors (an export's memory grew with N)."""
    from vecfmt.writer import kept_ids

    batch = make_table(100, 64).to_batches()[0]
    kept = kept_ids(batch)
    assert kept.to_pylist() == batch.column("id").to_pylist()
    original = {b.address for b in batch.column("id").buffers() if b is not None}
    assert original.isdisjoint(b.address for b in kept.buffers() if b is not None)


def test_a_second_writer_of_one_dump_folder_is_refused_until_the_first_ends(tmp_path):
    """Hostile review: two runs writing one folder (two --resume of one interrupted export) deleted each other's
    files and committed a manifest over files that were gone. One writer at a time; a killed one frees it."""
    uri = str(tmp_path / "d")
    first = vecfmt.DumpWriter(uri)
    first.write_batch(make_table(10, 4).to_batches()[0])
    with pytest.raises(DumpError, match="another vecfmt run is writing this dump"):
        vecfmt.DumpWriter(uri, overwrite=True)
    first.close()
    vecfmt.write_dump(uri, make_table(5, 4), overwrite=True)  # free again once the first closed
    assert vecfmt.open_dump(uri).manifest.total_rows == 5
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, vecfmt; w = vecfmt.DumpWriter(sys.argv[1], "
                               "overwrite=True); print('held', flush=True); time.sleep(60)", uri],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DumpError, match="another vecfmt run"):
            vecfmt.write_dump(uri, make_table(5, 4), overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    vecfmt.write_dump(uri, make_table(7, 4), overwrite=True)  # the OS released the killed writer's lock
    assert vecfmt.open_dump(uri).manifest.total_rows == 7
