"""``vecfmt adopt``: foreign Parquet/Arrow datasets and vector-io's real VDF dumps become valid dumps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import vecfmt
from tests.helpers import assert_one_clear_error, vecfmt_cli
from vecfmt.errors import InvalidDataError
from vecfmt.ops.adopt import adopt, adopt_vdf
from vecfmt.ops.validate import validate_dump

VDF = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vdf-io"


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def _matrix(table: pa.Table, column: str = "values") -> np.ndarray:
    col = table.column(column).combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)


def _metadata(table: pa.Table) -> list:
    return [json.loads(m) for m in table.column("metadata").to_pylist()]


@pytest.fixture(scope="module")
def expected() -> pa.Table:
    return _sorted(pq.read_table(VDF / "expected.parquet"))


def test_vector_io_lancedb_export_is_adopted_bit_for_bit(tmp_path, expected):
    run = vecfmt_cli("adopt", str(VDF / "lancedb-export"), str(tmp_path / "d"), "--json")
    assert run.code == 0, run
    manifest = json.loads(run.stdout)
    assert manifest["embedding_model"]["name"] == "all-MiniLM-L6-v2"
    assert manifest["vectors"][0]["dimension"] == 384 and manifest["vectors"][0]["metric"] == "cosine"
    assert manifest["source"]["kind"] == "vdf:lancedb"
    assert validate_dump(str(tmp_path / "d")) == []
    got = _sorted(vecfmt.open_dump(str(tmp_path / "d")).table())
    assert got.column("id").to_pylist() == expected.column("id").to_pylist()
    np.testing.assert_array_equal(_matrix(got).view(np.uint32), _matrix(expected).view(np.uint32))
    assert _metadata(got) == expected.select(["page", "source"]).to_pylist()


def test_vector_io_chroma_export_keeps_documents_and_chromas_own_rounding(tmp_path, expected):
    manifest = adopt_vdf(str(VDF / "chroma-export"), str(tmp_path / "d"))
    assert manifest.document and manifest.total_rows == 300
    got = _sorted(vecfmt.open_dump(str(tmp_path / "d")).table())
    assert got.column("document").to_pylist() == [
        f"Document number {i} about {s}" for i, s in zip(
            [int(x.split("-")[1]) for x in expected.column("id").to_pylist()],
            expected.column("source").to_pylist(), strict=True)]
    a, b = _matrix(got), _matrix(expected)
    exact = (a.view(np.uint32) == b.view(np.uint32)).all(axis=1)
    # what the fixture's README observed of Chroma's cosine space: 214 of 300 bit for bit, the rest within 1.5e-8
    assert exact.sum() == 214 and np.abs(a - b).max() <= 1.5e-8
    assert _metadata(got) == expected.select(["page", "source"]).to_pylist()


def test_a_hugging_face_style_parquet_with_double_lists_and_int_ids(tmp_path):
    rng = np.random.default_rng(3)
    doubles = rng.standard_normal((1_000, 12))
    table = pa.table({
        "doc_id": pa.array(np.arange(1_000) * 7, pa.int64()),
        "embedding": pa.array(list(doubles), pa.list_(pa.float64())),
        "text": pa.array([f"text {i} é" for i in range(1_000)]),
        "label": pa.array([i % 3 for i in range(1_000)]),
        "title": pa.array([None if i % 5 == 0 else f"t{i}" for i in range(1_000)]),
    })
    (tmp_path / "ds").mkdir()
    pq.write_table(table.slice(0, 600), tmp_path / "ds" / "train-0.parquet")
    pq.write_table(table.slice(600), tmp_path / "ds" / "train-1.parquet")
    run = vecfmt_cli("adopt", str(tmp_path / "ds"), str(tmp_path / "d"), "--id", "doc_id", "--vector", "embedding",
                     "--document", "text", "--metric", "dot", "--model", "my-model", "--namespace", "books")
    assert run.code == 0, run
    dump = vecfmt.open_dump(str(tmp_path / "d"))
    assert dump.namespaces == ["books"] and dump.manifest.primary.metric == "dot"
    got = dump.table("books")
    assert got.column("id").to_pylist() == [str(i * 7) for i in range(1_000)]
    np.testing.assert_array_equal(_matrix(got), doubles.astype(np.float32))  # rounded to float32 once
    assert got.column("document").to_pylist() == table.column("text").to_pylist()
    meta = [json.loads(m) for m in got.column("metadata").to_pylist()]
    assert meta[0] == {"label": 0} and meta[1] == {"label": 1, "title": "t1"}  # nulls are left out
    assert dump.manifest.extra["folded_columns"] == {"label": "int64", "title": "string"}
    # only the metadata columns asked for
    adopt(str(tmp_path / "ds"), str(tmp_path / "d2"), id_column="doc_id", metadata_columns=["title"])
    assert json.loads(vecfmt.open_dump(str(tmp_path / "d2")).table().column("metadata")[1].as_py()) == {"title": "t1"}


def test_arrow_ipc_fixed_size_float16(tmp_path):
    halves = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float16)
    table = pa.table({"id": [f"r{i}" for i in range(50)],
                      "vec": pa.FixedSizeListArray.from_arrays(pa.array(halves.ravel(), pa.float16()), 8)})
    feather.write_feather(table, tmp_path / "v.arrow")
    adopt(str(tmp_path / "v.arrow"), str(tmp_path / "d"))
    np.testing.assert_array_equal(_matrix(vecfmt.open_dump(str(tmp_path / "d")).table()), halves.astype(np.float32))


@pytest.mark.parametrize(("vectors", "message"), [
    ([[1.0, 2.0], [1.0, 2.0, 3.0]], "vector of id 'b' has 3 dimensions, the first's have 2 (ragged vectors)"),
    ([[1.0, 2.0], None], "vector of id 'b' is null"),
    ([[1.0, 2.0], [1.0, None]], "vector of id 'b' has a null component"),
    ([[1.0, 2.0], [1e39, 0.0]], "vector of id 'b' has a value beyond float32's range"),
    ([[1.0, 2.0], [float("nan"), 0.0]], "NaN"),
])
def test_bad_vectors_are_refused_and_nothing_is_left_as_a_dump(tmp_path, vectors, message):
    pq.write_table(pa.table({"id": ["a", "b"], "v": pa.array(vectors, pa.list_(pa.float64()))}), tmp_path / "x.parquet")
    run = vecfmt_cli("adopt", str(tmp_path / "x.parquet"), str(tmp_path / "d"))
    assert_one_clear_error(run, message)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_unclear_mappings_are_one_clear_error(tmp_path):
    two = pa.table({"id": ["a"], "v1": pa.array([[1.0]], pa.list_(pa.float32())),
                    "v2": pa.array([[1.0]], pa.list_(pa.float32())), "values": [1]})
    pq.write_table(two, tmp_path / "two.parquet")
    assert_one_clear_error(vecfmt_cli("adopt", str(tmp_path / "two.parquet"), str(tmp_path / "d")),
                           "name the vector column", "v1", "v2")
    assert_one_clear_error(vecfmt_cli("adopt", str(tmp_path / "two.parquet"), str(tmp_path / "d"), "--vector", "v1"),
                           "column 'values' would take the place of the dump's own 'values' column")
    assert_one_clear_error(vecfmt_cli("adopt", str(tmp_path / "two.parquet"), str(tmp_path / "d"), "--vector", "vx"),
                           "has no vector column 'vx'")
    assert_one_clear_error(vecfmt_cli("adopt", str(tmp_path / "nothing"), str(tmp_path / "d")), "does not exist")
    with pytest.raises(InvalidDataError, match="has no index 'nope'"):
        adopt_vdf(str(VDF / "lancedb-export"), str(tmp_path / "e"), index="nope")


# --- what a hostile review found ---------------------------------------------------------------------


def test_files_with_different_columns_keep_every_column(tmp_path):
    (tmp_path / "mixed").mkdir()
    v = pa.list_(pa.float32())
    pq.write_table(pa.table({"id": ["a"], "v": pa.array([[1.0, 2.0]], v)}), tmp_path / "mixed" / "a.parquet")
    pq.write_table(pa.table({"id": ["b"], "v": pa.array([[3.0, 4.0]], v), "extra": [7]}),
                   tmp_path / "mixed" / "b.parquet")
    adopt(str(tmp_path / "mixed"), str(tmp_path / "d"))
    got = _sorted(vecfmt.open_dump(str(tmp_path / "d")).table())
    assert got.column("metadata").to_pylist() == ['{}', '{"extra": 7}']  # the column the first file lacked
    (tmp_path / "empty").mkdir()
    assert_one_clear_error(vecfmt_cli("adopt", str(tmp_path / "empty"), str(tmp_path / "e")), "holds no Parquet files")


def _vdf_copy(tmp_path, change) -> str:
    import shutil

    folder = tmp_path / "vdf"
    shutil.copytree(VDF / "lancedb-export", folder)
    meta = json.loads((folder / "VDF_META.json").read_text())
    change(meta)
    (folder / "VDF_META.json").write_text(json.dumps(meta))
    return str(folder)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["indexes"]["articles"][0].update(exported_vector_count=900),
     "holds 300 rows, but VDF_META.json says 900 were exported"),
    (lambda m: m["indexes"]["articles"][0].update(data_path="../../etc"), "names data outside the dump"),
    (lambda m: m.update(indexes=[]), "is not a vector-io manifest"),
    (lambda m: m["indexes"].update(articles=["x"]), "is not a vector-io manifest"),
    (lambda m: m["indexes"]["articles"][0].update(dimensions="384"), "is not a vector-io manifest"),
])
def test_a_broken_or_truncated_vdf_dump_is_refused(tmp_path, change, message):
    run = vecfmt_cli("adopt", _vdf_copy(tmp_path, change), str(tmp_path / "d"))
    assert_one_clear_error(run, message)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_a_document_column_that_is_not_text_is_refused(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "v": pa.array([[1.0]], pa.list_(pa.float32())),
                             "document": pa.array([["x"]])}), tmp_path / "x.parquet")
    assert_one_clear_error(vecfmt_cli("adopt", str(tmp_path / "x.parquet"), str(tmp_path / "d")),
                           "document column 'document' is list<", "not text")
