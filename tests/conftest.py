import numpy as np
import pyarrow as pa
import pytest

pytest_plugins = ["tests.servers.postgres", "tests.servers.s3", "tests.servers.pinecone", "tests.servers.weaviate",
                  "tests.servers.chroma", "tests.servers.openai_embeddings"]


def assert_tables_identical(a: pa.Table, b: pa.Table) -> None:
    """Bit-identical rows, whatever the list child names: ids, vectors (as raw float32 bits), the rest."""
    assert a.column_names == b.column_names
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        ca, cb = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(ca.type):
            va = ca.values.to_numpy(zero_copy_only=False).view(np.uint32)
            vb = cb.values.to_numpy(zero_copy_only=False).view(np.uint32)
            np.testing.assert_array_equal(va, vb, err_msg=f"column {name}")
            assert ca.is_valid().equals(cb.is_valid()), name
        else:
            assert ca.to_pylist() == cb.to_pylist(), name


@pytest.fixture
def identical():
    return assert_tables_identical
