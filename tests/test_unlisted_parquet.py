"""Unlisted .parquet files in a dump's namespace folders: vecfmt readers ignore them (spec 2), Pinecone's bulk
import would read them. ``validate`` reports them, and no vecfmt writer leaves one behind."""

from __future__ import annotations

import shutil

import vecfmt
from tests.helpers import make_table, vecfmt_cli
from vecfmt.manifest import VectorSpec
from vecfmt.ops import validate_dump
from vecfmt.storage import resolve
from vecfmt.writer import DumpWriter, ParquetOptions


def test_validate_names_unlisted_parquet_files_in_namespace_folders(tmp_path):
    dump = tmp_path / "d"
    vecfmt.write_dump(str(dump), make_table(20, 4))
    shutil.copy(dump / "__default__" / "part-00000.parquet", dump / "__default__" / "part-00007.parquet")
    (dump / "__default__" / "notes.txt").write_text("not parquet: ignored by everyone")
    problems = validate_dump(str(dump))
    assert [p.file for p in problems] == ["__default__/part-00007.parquet"]
    assert "does not list" in problems[0].message and "Pinecone" in problems[0].message
    run = vecfmt_cli("validate", str(dump))
    assert run.code == 1 and "__default__/part-00007.parquet" in run.stdout + run.stderr


def test_overwriting_an_interrupted_export_leaves_no_part_file_behind(tmp_path):
    """Files a resumable export finished after its last checkpoint are listed nowhere; overwrite removes
    them as resume does, so the new dump holds only what its manifest lists."""
    uri = str(tmp_path / "d")
    table = make_table(40, 4)
    spec = [VectorSpec("default", "values", 4, "cosine")]
    options = ParquetOptions(max_file_rows=10)
    writer = DumpWriter(uri, vectors=spec, resumable=True, options=options)
    batches = table.to_batches(max_chunksize=10)
    writer.write_batch(batches[0])
    writer.checkpoint({"namespaces": [""], "namespace": 0, "slice": 0, "token": "t"})
    for batch in batches[1:]:
        writer.write_batch(batch)
    writer.abort()  # interrupted: the files after the checkpoint stay on disk
    assert len([p for p in resolve(uri).listdir() if p.endswith(".parquet")]) >= 3
    with DumpWriter(uri, vectors=spec, overwrite=True, options=options) as fresh:
        fresh.write_batch(batches[0])
    assert [p for p in resolve(uri).listdir() if p.endswith(".parquet")] == ["__default__/part-00000.parquet"]
    assert validate_dump(uri) == []
