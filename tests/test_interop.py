"""A dump is plain Parquet: tools that know nothing of vecfmt read it and get the same rows."""

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecfmt
from tests.helpers import make_table


@pytest.fixture
def dump(tmp_path):
    table = make_table(2000, 16, document=True)
    with vecfmt.DumpWriter(str(tmp_path / "d"), options=vecfmt.ParquetOptions(max_file_rows=700)) as w:
        w.write(table)
    return tmp_path / "d", table


def expected_vectors(table: pa.Table) -> np.ndarray:
    return table.column("values").combine_chunks().values.to_numpy().reshape(table.num_rows, -1)


def test_duckdb_reads_ids_and_vectors(dump):
    root, table = dump
    rows = duckdb.sql(f"SELECT id, \"values\" FROM read_parquet('{root}/__default__/*.parquet')").to_arrow_table()
    got = dict(zip(rows.column("id").to_pylist(), rows.column("values").to_pylist(), strict=True))
    assert sorted(got) == sorted(table.column("id").to_pylist())
    want = expected_vectors(table)
    for i, ident in enumerate(table.column("id").to_pylist()):
        np.testing.assert_array_equal(np.asarray(got[ident], np.float32), want[i])


def test_duckdb_sees_a_float_array_and_can_search_with_it(dump):
    root, table = dump
    query = expected_vectors(table)[42].tolist()
    nearest = duckdb.sql(
        f"SELECT id FROM read_parquet('{root}/__default__/*.parquet') "
        f"ORDER BY array_distance(\"values\"::FLOAT[16], {query}::FLOAT[16]) LIMIT 1"
    ).fetchall()
    assert nearest == [("id-42",)]


def test_polars_reads_ids_vectors_metadata(dump):
    root, table = dump
    frame = pl.read_parquet(f"{root}/__default__/*.parquet")
    assert frame.columns == ["id", "values", "metadata", "document"]
    assert frame["id"].to_list() == table.column("id").to_pylist()
    got = np.stack(frame["values"].to_numpy()).astype(np.float32)
    np.testing.assert_array_equal(got, expected_vectors(table))
    assert frame["metadata"].to_list() == table.column("metadata").to_pylist()


def test_parquet_view_is_a_plain_list_of_float(dump):
    """Readers that ignore Arrow's stored schema (Pinecone's importer, Spark) see LIST<FLOAT>."""
    root, _ = dump
    path = next((root / "__default__").glob("*.parquet"))
    parquet_schema = pq.ParquetFile(path).schema
    column = parquet_schema.column(1)
    assert column.path == "values.list.element"
    assert column.physical_type == "FLOAT" and column.max_repetition_level == 1
    assert "required group field_id=-1 values (List)" in str(parquet_schema)
    assert "required float field_id=-1 element" in str(parquet_schema)
    # DuckDB does not read Arrow's stored schema: it sees a variable-length FLOAT list
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
    assert ("values", "FLOAT[]") in [(row[0], row[1]) for row in described]


def test_arrow_view_is_a_fixed_size_list(dump):
    root, _ = dump
    path = next((root / "__default__").glob("*.parquet"))
    field = pq.read_schema(path).field("values")
    assert pa.types.is_fixed_size_list(field.type) and field.type.list_size == 16
    assert field.type.value_type == pa.float32()


def test_pinecone_import_layout(dump):
    """Pinecone's bulk import reads <root>/<namespace>/*.parquet with id and values columns."""
    root, _ = dump
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["__default__/part-00000.parquet", "__default__/part-00001.parquet",
                     "__default__/part-00002.parquet", "manifest.json"]
    schema = pq.read_schema(root / files[0])
    assert schema.field("id").type == pa.string() and not schema.field("id").nullable
