import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecfmt
from tests.helpers import make_table
from vecfmt.errors import InvalidDataError
from vecfmt.ops import diff_dumps
from vecfmt.schema import vectors_array


@pytest.fixture
def pair(tmp_path):
    a = make_table(1000, 16, document=True)
    matrix = a.column("values").combine_chunks().values.to_numpy().reshape(1000, 16).copy()
    matrix[3] += 1e-7  # within a tolerance of 1e-6
    matrix[5, 0] += 0.5  # beyond it
    metadata = a.column("metadata").to_pylist()
    metadata[8] = json.dumps(json.loads(metadata[8]), indent=1)  # same JSON, other text: not a change
    metadata[9] = json.dumps({"changed": True})
    documents = a.column("document").to_pylist()
    documents[11] = "rewritten"
    b = a.set_column(1, "values", vectors_array(matrix))
    b = b.set_column(2, "metadata", pa.array(metadata)).set_column(3, "document", pa.array(documents))
    b = pa.concat_tables([b.slice(0, 990).slice(1), make_table(2, 16, prefix="new-", document=True)])
    vecfmt.write_dump(str(tmp_path / "a"), a)
    with vecfmt.DumpWriter(str(tmp_path / "b")) as w:
        w.write(b.slice(0, 400))
        w.write(b.slice(400))  # several batches and files need not line up with A's
    return str(tmp_path / "a"), str(tmp_path / "b")


def test_diff_finds_every_kind_of_change(pair, tmp_path):
    result = diff_dumps(*pair, tolerance=1e-6, output=str(tmp_path / "diff.parquet"))
    ns = result.namespaces[""]
    assert (ns.rows_a, ns.rows_b) == (1000, 991)
    assert ns.only_in_a == 11 and ns.examples["only_in_a"][0] == "id-0"
    assert ns.only_in_b == 2 and ns.examples["only_in_b"] == ["new-0", "new-1"]
    assert ns.vectors_changed == 1 and ns.examples["vectors_changed"] == ["id-5"]
    assert ns.metadata_changed == 1 and ns.examples["metadata_changed"] == ["id-9"]
    assert ns.documents_changed == 1 and ns.examples["documents_changed"] == ["id-11"]
    assert ns.max_abs_diff == pytest.approx(0.5)
    assert ns.min_cosine_similarity < 1.0
    assert not result.identical
    rows = pq.read_table(tmp_path / "diff.parquet").to_pylist()
    kinds = {(r["id"], r["change"]) for r in rows}
    assert ("id-0", "only_in_a") in kinds and ("new-1", "only_in_b") in kinds and ("id-5", "changed") in kinds
    assert len(rows) == 11 + 2 + 3


def test_zero_tolerance_counts_the_tiny_change(pair):
    assert diff_dumps(*pair).namespaces[""].vectors_changed == 2


def test_identical_dumps(pair):
    a, _ = pair
    result = diff_dumps(a, a)
    assert result.identical and result.to_dict()["totals"]["max_abs_diff"] == 0.0


def test_namespaces_only_on_one_side(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4), namespace="x")
    vecfmt.write_dump(str(tmp_path / "b"), make_table(5, 4), namespace="y")
    result = diff_dumps(str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.namespaces["x"].only_in_a == 5 and result.namespaces["y"].only_in_b == 5


def test_dimension_mismatch_is_one_clear_error(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4))
    vecfmt.write_dump(str(tmp_path / "b"), make_table(5, 8))
    with pytest.raises(InvalidDataError, match="A's 'default' has 4 dims, B's 'default' 8"):
        diff_dumps(str(tmp_path / "a"), str(tmp_path / "b"))


def test_cosine_drift_is_reported(tmp_path):
    a = make_table(10, 4)
    matrix = a.column("values").combine_chunks().values.to_numpy().reshape(10, 4)
    rotated = np.roll(matrix, 1, axis=1)
    vecfmt.write_dump(str(tmp_path / "a"), a)
    vecfmt.write_dump(str(tmp_path / "b"), a.set_column(1, "values", vectors_array(rotated)))
    result = diff_dumps(str(tmp_path / "a"), str(tmp_path / "b"))
    expected = min(float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(matrix, rotated, strict=True))
    assert result.namespaces[""].min_cosine_similarity == pytest.approx(expected, rel=1e-6)


def test_a_column_missing_on_one_side_is_a_difference(tmp_path):
    a = make_table(20, 4, document=True, sparse=True)
    vecfmt.write_dump(str(tmp_path / "a"), a)
    vecfmt.write_dump(str(tmp_path / "b"), a.drop_columns(["document"]))
    result = diff_dumps(str(tmp_path / "a"), str(tmp_path / "b"))
    assert not result.identical
    assert result.columns_only_in_a == ["document"] and result.columns_only_in_b == []
    assert result.namespaces[""].documents_changed == 20  # every text was lost
    assert result.to_dict()["columns_only_in_a"] == ["document"]
    vecfmt.write_dump(str(tmp_path / "c"), a.drop_columns(["sparse_values"]))
    assert diff_dumps(str(tmp_path / "a"), str(tmp_path / "c")).columns_only_in_a == ["sparse_values"]
    named = make_table(20, 4, document=True, sparse=True, named={"title": 3})
    vecfmt.write_dump(str(tmp_path / "n"), named.select([*a.column_names, "values_title"]))
    other = diff_dumps(str(tmp_path / "a"), str(tmp_path / "n"))
    assert other.columns_only_in_b == ["values_title"] and not other.identical


def test_metadata_equality_keeps_json_types(tmp_path):
    pairs = [  # (A, B, changed?)
        ('{"n": 1}', '{"n": 1.0}', True),
        ('{"b": true}', '{"b": 1}', True),
        ('{"z": 0}', '{"z": -0.0}', True),
        ('{"z": 0.0}', '{"z": -0.0}', True),
        ('{"f": false}', '{"f": 0}', True),
        ('{"x": 1, "y": [1.5, "s"]}', '{"y": [1.50, "s"], "x": 1}', False),  # key order, spelling
        ('{"n": 1.0}', '{"n": 1e0}', False),
        ('{"u": "\\u00fc"}', '{"u": "ü"}', False),
        ('{"a": 1}', None, True),
    ]
    table = make_table(len(pairs), 4)
    vecfmt.write_dump(str(tmp_path / "a"), table.set_column(2, "metadata", pa.array([p[0] for p in pairs])))
    vecfmt.write_dump(str(tmp_path / "b"), table.set_column(2, "metadata", pa.array([p[1] for p in pairs])))
    ns = diff_dumps(str(tmp_path / "a"), str(tmp_path / "b")).namespaces[""]
    assert ns.examples["metadata_changed"] == [f"id-{i}" for i, p in enumerate(pairs) if p[2]][:5]
    assert ns.metadata_changed == sum(p[2] for p in pairs)
