import numpy as np
import pyarrow as pa
import pytest

from vecfmt.errors import InvalidDataError
from vecfmt.schema import (
    canonical_schema,
    conform,
    namespace_dir,
    namespace_from_dir,
    same_type,
    vector_type,
    vectors_array,
    vectors_numpy,
)


@pytest.mark.parametrize(
    "namespace",
    ["", "docs", "__default__", "_private", ".", "..", ".hidden", "a/b", "über", "a b%c", "日本語", "x" * 200],
)
def test_namespace_folders_are_single_safe_segments_and_reversible(namespace):
    folder = namespace_dir(namespace)
    assert "/" not in folder and folder not in (".", "..") and not folder.startswith(".")
    assert namespace_from_dir(folder) == namespace
    if namespace != "":
        assert folder != "__default__"


def test_default_namespace_is_pinecones_folder():
    assert namespace_dir("") == "__default__"


def test_vectors_numpy_shares_the_arrow_buffer_even_when_sliced():
    matrix = np.arange(40, dtype=np.float32).reshape(10, 4)
    column = vectors_array(matrix)
    assert np.shares_memory(vectors_numpy(column), matrix)
    part = column.slice(3, 4)
    view = vectors_numpy(part)
    np.testing.assert_array_equal(view, matrix[3:7])
    assert np.shares_memory(view, matrix)


def test_conform_casts_variable_lists_of_doubles_to_fixed_float32():
    schema = canonical_schema([("values", 3)])
    batch = pa.record_batch({"id": ["a", "b"], "values": pa.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]],
                                                                  pa.list_(pa.float64()))})
    out = conform(batch, schema)
    assert out.schema.field("values").type == vector_type(3)
    assert out.column("metadata").null_count == 2
    np.testing.assert_array_equal(vectors_numpy(out.column("values"))[1], [4.0, 5.0, 6.5])


def test_conform_names_the_row_with_wrong_dimensions():
    schema = canonical_schema([("values", 3)])
    batch = pa.record_batch({"id": ["a", "b"], "values": pa.array([[1.0, 2.0, 3.0], [4.0, 5.0]])})
    with pytest.raises(InvalidDataError, match="row 1 has dimension 2, expected 3"):
        conform(batch, schema)


def test_conform_refuses_fixed_lists_of_another_dimension():
    schema = canonical_schema([("values", 3)])
    batch = pa.record_batch({"id": ["a"], "values": vectors_array(np.zeros((1, 4), np.float32))})
    with pytest.raises(InvalidDataError, match="dimension 4, expected 3"):
        conform(batch, schema)


def test_same_type_ignores_list_child_names():
    item = pa.list_(pa.field("item", pa.float32()), 4)
    element = pa.list_(pa.field("element", pa.float32()), 4)
    assert same_type(item, element)
    assert not same_type(item, pa.list_(pa.float32(), 5))
    assert not same_type(item, pa.list_(pa.float32()))
