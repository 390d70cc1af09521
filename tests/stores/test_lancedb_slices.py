"""LanceDB exports split into slices (ranges of row addresses at the version planned on): a partitioned
export with two worker processes equals a single-process one, rows written after planning are not read,
namespaces keep to their column, and a single-process export resumes in the slice it stopped in."""

from __future__ import annotations

import itertools
import json

import lancedb
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli
from vecfmt import transfer
from vecfmt.errors import StoreError
from vecfmt.ops.diff import diff_dumps
from vecfmt.ops.validate import validate_dump
from vecfmt.parallel import export_partitioned
from vecfmt.stores.base import Slice, open_exporter
from vecfmt.stores.lancedb import LanceDBExporter

DIM = 16


def lance(tmp_path, table="items"):
    return f"lancedb://{tmp_path}/db?table={table}"


def chunk(n: int, start: int, namespaces: list[str | None] | None = None) -> pa.Table:
    """``n`` rows as a LanceDB table holds them (``vector``; ``namespace`` when given, cycled)."""
    rows = make_table(n, DIM, seed=start, prefix=f"id-{start}-").rename_columns(["id", "vector", "metadata"])
    if namespaces is not None:
        rows = rows.append_column("namespace", pa.array([namespaces[i % len(namespaces)] for i in range(n)],
                                                        pa.string()))
    return rows


def fragments(tmp_path, chunks: list[pa.Table]):
    """A table made by one create and an ``add`` per further chunk: a fragment each."""
    table = lancedb.connect(str(tmp_path / "db")).create_table("items", chunks[0])
    for more in chunks[1:]:
        table.add(more)
    return table


@pytest.fixture
def small_slices(monkeypatch):
    """Slices of about 1,000 rows (the planning happens in this process: workers only read their keys)."""
    monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 1_000)


def plan(uri: str) -> dict[str, list[Slice]]:
    exporter = open_exporter(uri)
    try:
        return {ns: exporter.slices(ns) for ns in exporter.describe().namespaces}
    finally:
        exporter.close()


def test_slices_read_every_row_once_in_table_order_cutting_inside_fragments(tmp_path, small_slices):
    fragments(tmp_path, [chunk(2_500, 0), chunk(1_200, 1), chunk(3_300, 2)])
    parts = plan(lance(tmp_path))[""]
    keys = [part.key for part in parts]
    assert len(parts) == 7 and keys[0]["from"] is None and keys[-1]["to"] is None
    assert all(a["to"] == b["from"] for a, b in itertools.pairwise(keys))  # no gap, no overlap
    assert any(k["from"] is not None and k["from"][1] != 0 for k in keys)  # a cut inside a fragment
    exporter = open_exporter(lance(tmp_path))
    try:
        read = [[chunk.batch for chunk in exporter.batches(part, batch_size=400)] for part in parts]
        whole = [chunk.batch for chunk in exporter.batches(Slice(""), batch_size=400)]
    finally:
        exporter.close()
    sizes = [sum(batch.num_rows for batch in batches) for batches in read]
    assert max(sizes) - min(sizes) <= 2, sizes  # even slices
    assert pa.Table.from_batches([b for batches in read for b in batches]).equals(pa.Table.from_batches(whole))
    assert sum(sizes) == 7_000


def test_slices_of_a_table_with_deleted_and_updated_rows_read_each_row_once(tmp_path, small_slices):
    table = fragments(tmp_path, [chunk(2_500, 0), chunk(1_200, 1), chunk(3_300, 2)])
    table.delete("id LIKE 'id-1-1%' OR id LIKE 'id-2-2%'")  # gaps in the row offsets of two fragments
    table.update(where="id LIKE 'id-0-3%'", values={"metadata": '{"updated": true}'})  # rows move to a new fragment
    parts = plan(lance(tmp_path))[""]
    assert len(parts) > 3
    exporter = open_exporter(lance(tmp_path))
    try:
        read = [chunk.batch for part in parts for chunk in exporter.batches(part, batch_size=400)]
        whole = [chunk.batch for chunk in exporter.batches(Slice(""), batch_size=400)]
    finally:
        exporter.close()
    assert pa.Table.from_batches(read).equals(pa.Table.from_batches(whole))
    assert pa.Table.from_batches(read).num_rows == table.count_rows() == 7_000 - 311 - 1_111


def test_a_partitioned_export_with_two_workers_equals_a_single_process_export(tmp_path, identical):
    chunks = [chunk(12_000, 0), chunk(7_000, 1), chunk(11_000, 2)]  # 30,000 rows: 3 slices by default
    fragments(tmp_path, chunks)
    assert len(plan(lance(tmp_path))[""]) == 3
    single, parted = str(tmp_path / "single"), str(tmp_path / "parted")
    transfer.export(lance(tmp_path), single)
    manifest = export_partitioned(lance(tmp_path), parted, workers=2)
    assert manifest.total_rows == 30_000 and len(manifest.files) == 3
    assert validate_dump(parted) == []
    assert diff_dumps(single, parted).identical
    identical(vecfmt.open_dump(parted).table("").rename_columns(["id", "vector", "metadata"]),
              pa.concat_tables(chunks))


@pytest.mark.parametrize("workers", [None, 2])  # transfer.export; export_partitioned on two processes
def test_rows_written_after_planning_are_not_exported(tmp_path, small_slices, monkeypatch, workers):
    """Another add (and a delete) between describe() and the reading: every slice reads the planned version."""
    table = fragments(tmp_path, [chunk(2_000, 0), chunk(2_000, 1)])
    before, out = str(tmp_path / "before"), str(tmp_path / "out")
    transfer.export(lance(tmp_path), before)
    planned = LanceDBExporter.slices

    def then_written(self, namespace):
        parts = planned(self, namespace)
        table.add(chunk(500, 7))
        table.delete("id LIKE 'id-0-1%'")  # 1,111 rows of the first fragment
        return parts

    monkeypatch.setattr(LanceDBExporter, "slices", then_written)
    version = table.version
    if workers is None:
        manifest = transfer.export(lance(tmp_path), out)
    else:
        manifest = export_partitioned(lance(tmp_path), out, workers=workers)
        assert len(manifest.files) == 4  # one per slice
    assert table.version == version + 2  # written to during the export
    assert manifest.total_rows == 4_000
    assert diff_dumps(before, out).identical
    monkeypatch.undo()
    transfer.export(lance(tmp_path), str(tmp_path / "now"))
    assert vecfmt.open_dump(str(tmp_path / "now")).manifest.total_rows == 4_000 + 500 - 1_111  # it did change


def test_a_namespace_too_small_to_split_is_read_at_the_planned_version_too(tmp_path, small_slices, monkeypatch):
    """Hostile review: a namespace of one slice had no key, so a worker read the latest version of it while the
    split namespaces read the planned one (rc 0, a dump of two versions). Now every slice names the version."""
    table = fragments(tmp_path, [chunk(4_000, 0, ["big"]), chunk(300, 1, ["small"])])
    before, out = str(tmp_path / "before"), str(tmp_path / "out")
    transfer.export(lance(tmp_path), before)
    planned = LanceDBExporter.slices

    def then_changed(self, namespace):
        parts = planned(self, namespace)
        if namespace == "small":  # the last namespace planned: change both after planning, counts kept
            table.update(where="id = 'id-1-0'", values={"metadata": '{"changed": true}'})
            table.update(where="id = 'id-0-0'", values={"metadata": '{"changed": true}'})
        return parts

    monkeypatch.setattr(LanceDBExporter, "slices", then_changed)
    manifest = export_partitioned(lance(tmp_path), out, workers=2)
    assert {ns.name: ns.rows for ns in manifest.namespaces} == {"big": 4_000, "small": 300}
    assert diff_dumps(before, out).identical  # neither change is in it


def test_namespaces_split_by_the_namespace_column(tmp_path, monkeypatch, identical):
    monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 500)
    chunks = [chunk(2_400, 0, ["a", "b"]), chunk(1_500, 1, ["c"]), chunk(2_600, 2, ["b", "a", None, "a"])]
    fragments(tmp_path, chunks)
    slices = plan(lance(tmp_path))
    assert {ns: len(parts) for ns, parts in slices.items()} == {"": 1, "a": 5, "b": 3, "c": 3}
    single, parted = str(tmp_path / "single"), str(tmp_path / "parted")
    transfer.export(lance(tmp_path), single)
    manifest = export_partitioned(lance(tmp_path), parted, workers=2)
    assert {ns.name: ns.rows for ns in manifest.namespaces} == {"": 650, "a": 2500, "b": 1850, "c": 1500}
    assert validate_dump(parted) == []
    assert diff_dumps(single, parted).identical
    source = pa.concat_tables(chunks)
    spaces = source.column("namespace").fill_null("")
    dump = vecfmt.open_dump(parted)
    for ns in slices:
        expected = source.filter(pa.compute.equal(spaces, ns)).drop_columns(["namespace"])
        identical(dump.table(ns).rename_columns(["id", "vector", "metadata"]), expected)


def test_an_interrupted_export_resumes_in_its_slice_at_the_version_it_read(tmp_path, small_slices, monkeypatch,
                                                                            identical):
    chunks = [chunk(2_000, 0), chunk(2_000, 1)]
    table = fragments(tmp_path, chunks)
    out = str(tmp_path / "out")
    options = vecfmt.ParquetOptions(max_file_rows=300)
    original = LanceDBExporter.batches

    def dying(self, part, *, batch_size, resume=None):
        for i, chunk in enumerate(original(self, part, batch_size=batch_size, resume=resume)):
            if part.key["from"] is not None and i == 4:  # in the second slice, after a checkpoint in it
                raise ConnectionError("store went away")
            yield chunk

    monkeypatch.setattr(LanceDBExporter, "batches", dying)
    with pytest.raises(ConnectionError):
        transfer.export(lance(tmp_path), out, batch_size=100, options=options, resume=True)
    state = json.loads((tmp_path / "out" / "vecfmt-export-state.json").read_text())
    token = json.loads(state["cursor"]["token"])
    assert state["cursor"]["slice"] == 1 and token["offset"] == 200 and token["from"] is not None
    monkeypatch.setattr(LanceDBExporter, "batches", original)

    table.create_index("id", config=lancedb.index.BTree())  # a new version with the same rows in the same places
    assert table.version > token["version"]
    manifest = transfer.export(lance(tmp_path), out, batch_size=100, options=options, resume=True)
    assert manifest.total_rows == 4_000 and validate_dump(out) == []
    identical(vecfmt.open_dump(out).table("").rename_columns(["id", "vector", "metadata"]), pa.concat_tables(chunks))


def test_a_resume_after_the_rows_moved_is_one_clear_line(tmp_path, monkeypatch):
    table = fragments(tmp_path, [chunk(12_500, 0), chunk(12_500, 1)])  # 2 slices by default (also for the CLI)
    out = str(tmp_path / "out")
    original = LanceDBExporter.batches

    def dying(self, part, *, batch_size, resume=None):
        for i, chunk in enumerate(original(self, part, batch_size=batch_size, resume=resume)):
            if i == 4:
                raise ConnectionError("store went away")
            yield chunk

    monkeypatch.setattr(LanceDBExporter, "batches", dying)
    with pytest.raises(ConnectionError):
        transfer.export(lance(tmp_path), out, batch_size=100, options=vecfmt.ParquetOptions(max_file_rows=300),
                        resume=True)
    monkeypatch.setattr(LanceDBExporter, "batches", original)
    table.delete("id IN ('id-0-5', 'id-0-6')")  # as many rows as before, split otherwise
    table.add(chunk(2, 9))
    run = vecfmt_cli("export", lance(tmp_path), out, "--resume")
    assert_one_clear_error(run, "splits namespace '' otherwise than when the export was interrupted")
    with pytest.raises(StoreError, match="export again without resume"):
        transfer.export(lance(tmp_path), out, resume=True)
