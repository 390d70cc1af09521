"""Pinecone through the real ``pinecone`` SDK (10.2) against the strict local Pinecone API server of
tests/servers/pinecone (fixtures ``pinecone_server``, ``pinecone_index``, ``make_pinecone_index``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlencode

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import (
    assert_one_clear_error,
    assert_tables_identical,
    make_table,
    vecfmt_cli,
    write_namespaced,
)
from vecfmt import transfer
from vecfmt.errors import DumpError, StoreError
from vecfmt.ops import validate_dump
from vecfmt.schema import vectors_array

API_KEY_ENV = "PINECONE_API_KEY"


@pytest.fixture(autouse=True)
def _environment(pinecone_server, monkeypatch, tmp_path):
    monkeypatch.setenv(API_KEY_ENV, pinecone_server.api_key)
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", pinecone_server.url)
    monkeypatch.setenv("VECFMT_STATE_DIR", str(tmp_path / "state"))


def pc_uri(name: str, **options: object) -> str:
    query = urlencode({k: str(v) for k, v in options.items()})
    return f"pinecone://{name}" + (f"?{query}" if query else "")


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def assert_identical(got: pa.Table, want: pa.Table) -> None:
    """Same columns; ids, float32 bits, sparse vectors, metadata text and documents identical."""
    assert_tables_identical(by_id(got), by_id(want))


def flat_table(n: int, dim: int, *, seed: int = 0, prefix: str = "id-", **kwargs) -> pa.Table:
    """``make_table`` rows with metadata Pinecone can hold (strings, numbers, booleans, string lists)."""
    table = make_table(n, dim, seed=seed, prefix=prefix, **kwargs)
    metadata = [None if i % 7 == 3 else json.dumps(
        {"i": i, "tag": ["α", "β"][i % 2], "score": i / 8, "ok": i % 2 == 0, "tags": ["x", "y"]},
        ensure_ascii=False) for i in range(n)]  # fmt: skip
    return table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(metadata, pa.string()))


def namespaced(n: int, dim: int, **kwargs) -> dict[str, pa.Table]:
    return {ns: flat_table(n, dim, seed=seed, prefix=f"{ns or 'd'}-", **kwargs)
            for seed, ns in enumerate(["", "tenant-a", "tenant_b"])}


# --- round trips -------------------------------------------------------------------------------------


def test_dump_to_vector_index_and_back_is_bit_identical(tmp_path, make_pinecone_index):
    index = make_pinecone_index(dimension=16, metric="dotproduct", sparse=True)
    tables = namespaced(350, 16, sparse=True)
    write_namespaced(str(tmp_path / "a"), tables, metric="dot")
    result = transfer.import_dump(str(tmp_path / "a"), pc_uri(index.name), batch_size=100)
    assert result.rows == 1050
    manifest = transfer.export(pc_uri(index.name), str(tmp_path / "b"), batch_size=128)
    assert manifest.primary.metric == "dot" and manifest.sparse_values
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    assert sorted(dump.namespaces) == ["", "tenant-a", "tenant_b"]
    for ns, table in tables.items():
        assert_identical(dump.table(ns), table)


def test_dump_to_document_index_and_back_is_bit_identical(tmp_path, pinecone_server):
    """Named vectors, sparse values, documents and metadata through the Documents API, several namespaces
    (the default one is ``__default__`` there); the index is created from the dump."""
    name = f"doc-{os.urandom(4).hex()}"
    tables = namespaced(120, 8, sparse=True, document=True, named={"title": 4})
    write_namespaced(str(tmp_path / "a"), tables, metric="cosine")
    try:
        transfer.import_dump(str(tmp_path / "a"), pc_uri(name, create="true", kind="document"), batch_size=50)
        assert "__default__" in pinecone_server.namespaces(name)
        manifest = transfer.export(pc_uri(name), str(tmp_path / "b"), batch_size=64)
        assert manifest.extra["pinecone"]["kind"] == "document"
        assert [(v.column, v.dimension) for v in manifest.vectors] == [("values", 8), ("values_title", 4)]
        dump = vecfmt.open_dump(str(tmp_path / "b"))
        for ns, table in tables.items():
            assert_identical(dump.table(ns), table)
        # and back into a new document index recreated from that dump's schema
        transfer.import_dump(str(tmp_path / "b"), pc_uri(name + "-2", create="true"))
        transfer.export(pc_uri(name + "-2"), str(tmp_path / "c"))
        assert_identical(vecfmt.open_dump(str(tmp_path / "c")).table("tenant-a"), tables["tenant-a"])
    finally:
        pinecone_server.delete_index(name)
        pinecone_server.delete_index(name + "-2")


def test_options_that_do_not_apply_are_refused(tmp_path, pinecone_index, make_pinecone_index):
    vecfmt.write_dump(str(tmp_path / "a"), flat_table(5, 8, document=True))
    with pytest.raises(StoreError, match="no place for the dump's document column: pass document_key="):
        transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name))
    with pytest.raises(StoreError, match="document= is for document indexes"):
        transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name, document="text"))
    with pytest.raises(StoreError, match="unknown option 'tabel'"):
        transfer.export(pc_uri(pinecone_index.name, tabel="x"), str(tmp_path / "b"))
    # a document kept in a vector index's metadata under document_key, and taken back out on export
    transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name, document_key="text"))
    transfer.export(pc_uri(pinecone_index.name, document_key="text"), str(tmp_path / "b"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), flat_table(5, 8, document=True))


def test_existing_index_dimension_and_metric_are_checked_before_writing(tmp_path, pinecone_server, pinecone_index):
    vecfmt.write_dump(str(tmp_path / "a"), flat_table(5, 4))
    with pytest.raises(StoreError, match="has dimension 8, the dump 4; nothing was written"):
        transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name))
    vecfmt.write_dump(str(tmp_path / "b"), flat_table(5, 8), metric="euclidean")
    with pytest.raises(StoreError, match="uses metric cosine, the dump euclidean"):
        transfer.import_dump(str(tmp_path / "b"), pc_uri(pinecone_index.name))
    with pytest.raises(StoreError, match="does not exist: pass create=true"):
        transfer.import_dump(str(tmp_path / "b"), pc_uri("no-such-index"))
    assert not [r for r in pinecone_server.request_log if "upsert" in r.path]


def test_if_exists_fail_upsert_replace(tmp_path, pinecone_server, pinecone_index):
    vecfmt.write_dump(str(tmp_path / "a"), flat_table(30, 8))
    uri = pc_uri(pinecone_index.name)
    transfer.import_dump(str(tmp_path / "a"), uri)
    with pytest.raises(StoreError, match=r"already holds records in namespace\(s\) \[''\]"):
        transfer.import_dump(str(tmp_path / "a"), uri)
    transfer.import_dump(str(tmp_path / "a"), uri, if_exists="upsert")
    assert len(pinecone_server.records(pinecone_index.name)) == 30
    vecfmt.write_dump(str(tmp_path / "b"), flat_table(10, 8, prefix="new-"))
    # Pinecone cannot load beside and swap: replace deletes first, so it needs the user's explicit consent.
    with pytest.raises(StoreError, match="replace_deletes_first=true"):
        transfer.import_dump(str(tmp_path / "b"), uri, if_exists="replace")
    assert len(pinecone_server.records(pinecone_index.name)) == 30
    transfer.import_dump(str(tmp_path / "b"), pc_uri(pinecone_index.name, replace_deletes_first="true"),
                         if_exists="replace")  # fmt: skip
    assert sorted(pinecone_server.records(pinecone_index.name)) == sorted(f"new-{i}" for i in range(10))


# --- copies with pgvector ------------------------------------------------------------------------------


def test_copy_pinecone_to_pgvector_and_back(tmp_path, pg_db, pinecone_server, make_pinecone_index):
    from tests.stores.test_pgvector import pg

    source = make_pinecone_index(dimension=8)
    tables = namespaced(200, 8)
    write_namespaced(str(tmp_path / "a"), tables)
    transfer.import_dump(str(tmp_path / "a"), pc_uri(source.name))
    run = vecfmt_cli("copy", pc_uri(source.name), pg(pg_db, namespace_column="namespace"))
    assert run.code == 0, run.stderr
    target = make_pinecone_index(dimension=8)
    run = vecfmt_cli("copy", pg(pg_db), pc_uri(target.name))
    assert run.code == 0, run.stderr
    transfer.export(pc_uri(target.name), str(tmp_path / "b"))
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    for ns, table in tables.items():  # pgvector's jsonb normalises metadata: compare it as JSON
        got = by_id(dump.table(ns))
        assert got.column("id").to_pylist() == by_id(table).column("id").to_pylist()
        assert_identical(got.select(["id", "values"]), table.select(["id", "values"]))
        assert [json.loads(m) if m else None for m in got.column("metadata").to_pylist()] == \
               [json.loads(m) if m else None for m in by_id(table).column("metadata").to_pylist()]


def test_copy_refuses_its_own_source(pinecone_index):
    run = vecfmt_cli("copy", pc_uri(pinecone_index.name), pc_uri(pinecone_index.name, create="true"))
    assert_one_clear_error(run, "same table")


# --- faults, retries, resume ----------------------------------------------------------------------------


def exact_records(server, index: str, tables: dict[str, pa.Table]) -> None:
    """The index holds exactly the tables' records (no loss, no duplicates), vectors bit for bit."""
    for ns, table in tables.items():
        records = server.records(index, ns)
        table = by_id(table)
        assert sorted(records) == table.column("id").to_pylist()
        stored = np.stack([records[i].values for i in table.column("id").to_pylist()])
        want = table.column("values").combine_chunks().values.to_numpy().reshape(stored.shape)
        np.testing.assert_array_equal(stored.view(np.uint32), want.view(np.uint32))


def test_faults_on_import_and_export_end_with_exactly_the_records(tmp_path, pinecone_server, pinecone_index):
    tables = namespaced(600, 8)
    write_namespaced(str(tmp_path / "a"), tables)
    faults = [
        pinecone_server.inject(429, 3, path_contains="upsert", retry_after=0.2),
        pinecone_server.inject(500, 2, path_contains="upsert"),
        pinecone_server.inject(503, 2, path_contains="upsert"),
        pinecone_server.inject("drop", 2, path_contains="upsert"),
        pinecone_server.inject("slow", 2, path_contains="upsert", delay=0.3),
    ]
    transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name, concurrency=4), batch_size=100)
    assert all(f.hits == f.times for f in faults), [(f.kind, f.hits) for f in faults]
    exact_records(pinecone_server, pinecone_index.name, tables)
    faults = [
        pinecone_server.inject(429, 3, path_contains="fetch", retry_after=0.1),
        pinecone_server.inject(500, 2, path_contains="list"),
        pinecone_server.inject("drop", 3, path_contains="fetch"),
        pinecone_server.inject(503, 2, path_contains="describe_index_stats"),
    ]
    transfer.export(pc_uri(pinecone_index.name), str(tmp_path / "b"), batch_size=128)
    assert all(f.hits == f.times for f in faults), [(f.kind, f.hits) for f in faults]
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    for ns, table in tables.items():
        assert_identical(dump.table(ns), table)


def test_retries_run_out_with_one_clear_error(tmp_path, pinecone_server, pinecone_index):
    vecfmt.write_dump(str(tmp_path / "a"), flat_table(5, 8))
    pinecone_server.inject(503, None, path_contains="upsert")
    run = vecfmt_cli("import", str(tmp_path / "a"), pc_uri(pinecone_index.name, retries=1))
    assert_one_clear_error(run, "upsert failed", "HTTP 503")
    assert pinecone_server.api_key not in run.stderr


def _state_rows(state_dir) -> int:
    for path in state_dir.glob("import-*.json"):
        try:
            return json.loads(path.read_text())["rows_done"]
        except (ValueError, OSError):
            return 0
    return 0


def test_import_killed_with_sigkill_resumes_exactly(tmp_path, pinecone_server, pinecone_index):
    tables = {"": flat_table(6_000, 8), "ns": flat_table(2_000, 8, seed=3, prefix="n-")}
    dump = str(tmp_path / "a")
    write_namespaced(dump, tables, options=vecfmt.ParquetOptions(max_file_rows=1_000))
    pinecone_server.inject("slow", None, path_contains="upsert", delay=0.05)
    uri = pc_uri(pinecone_index.name, concurrency=2)
    script = f"from vecfmt import transfer; transfer.import_dump({dump!r}, {uri!r}, batch_size=200)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    state = tmp_path / "state" / "pinecone"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _state_rows(state) >= 1_500:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the import finished before it could be killed"
    committed = _state_rows(state)
    assert 1_500 <= committed < 8_000
    pinecone_server.clear_faults()
    result = transfer.import_dump(dump, uri, resume=True, batch_size=500)
    assert (result.rows_skipped, result.rows) == (committed, 8_000 - committed)
    exact_records(pinecone_server, pinecone_index.name, tables)
    assert not list(state.glob("import-*.json"))  # finished: nothing left to resume


def test_export_killed_with_sigkill_resumes_exactly(tmp_path, pinecone_server, pinecone_index):
    tables = namespaced(1_500, 8)
    write_namespaced(str(tmp_path / "a"), tables)
    transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name))
    pinecone_server.inject("slow", None, path_contains="fetch", delay=0.03)
    out = str(tmp_path / "b")
    options = "vecfmt.ParquetOptions(max_file_rows=300)"
    script = (f"import vecfmt; from vecfmt import transfer; transfer.export({pc_uri(pinecone_index.name)!r}, "
              f"{out!r}, batch_size=100, resume=True, options={options})")
    proc = subprocess.Popen([sys.executable, "-c", script])
    state = tmp_path / "b" / "vecfmt-export-state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and len(json.loads(state.read_text())["files"]) >= 4:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the export finished before it could be killed"
    pinecone_server.clear_faults()
    transfer.export(pc_uri(pinecone_index.name), out, batch_size=100, resume=True,
                    options=vecfmt.ParquetOptions(max_file_rows=300))
    dump = vecfmt.open_dump(out)
    for ns, table in tables.items():
        assert_identical(dump.table(ns), table)
    assert validate_dump(out) == []  # no part file left over from the killed run


# --- completeness ---------------------------------------------------------------------------------------


def test_counts_are_checked_against_stats_and_strict_refuses(tmp_path, pinecone_server, pinecone_index, caplog):
    vecfmt.write_dump(str(tmp_path / "a"), flat_table(50, 8))
    pinecone_server.lag_stats(True)  # stats frozen before the upsert: eventually consistent
    transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name))
    with caplog.at_level(logging.WARNING, logger="vecfmt.pinecone"):
        transfer.export(pc_uri(pinecone_index.name), str(tmp_path / "b"))
    assert "exported 50 records, describe_index_stats reported 0" in caplog.text
    run = vecfmt_cli("export", pc_uri(pinecone_index.name, strict="true"), str(tmp_path / "c"))
    assert_one_clear_error(run, "exported 50 records", "strict=true refuses the dump")
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_slices_by_id_prefix(tmp_path, pinecone_index):
    table = pa.concat_tables([flat_table(120, 8, prefix="a-"), flat_table(80, 8, seed=1, prefix="b-")])
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name))
    from vecfmt.stores.base import open_exporter

    exporter = open_exporter(pc_uri(pinecone_index.name, prefixes="a-,b-"))
    try:
        parts = exporter.slices("")
        assert [p.key for p in parts] == ["a-", "b-"]
        got = [c.batch for p in parts for c in exporter.batches(p, batch_size=50)]
    finally:
        exporter.close()
    assert_identical(pa.Table.from_batches(got), table)
    with pytest.raises(StoreError, match="overlap"):
        open_exporter(pc_uri(pinecone_index.name, prefixes="a,a-"))


def test_search_finds_the_vector_itself(tmp_path, pinecone_index):
    table = flat_table(50, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name))
    from vecfmt.stores.base import open_exporter

    exporter = open_exporter(pc_uri(pinecone_index.name))
    try:
        vector = table.column("values").combine_chunks()[7].values.to_numpy()
        hits = exporter.search(vector, 3)
    finally:
        exporter.close()
    assert hits[0][0] == "id-7" and len(hits) == 3


# --- limits and errors ------------------------------------------------------------------------------------


def _one_bad(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    kind = table.schema.field(column).type
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values, kind))


@pytest.mark.parametrize(("column", "value", "needles"), [
    ("id", "x" * 513, ["longer than Pinecone's 512 characters"]),
    ("id", "café-1", ["'café-1'", "not ASCII"]),
    ("metadata", json.dumps({"blob": "y" * 41_000}), ["'id-5'", "larger than Pinecone's 40 KB"]),
    ("metadata", json.dumps({"nested": {"a": 1}}), ["'id-5'", "metadata key 'nested'"]),
    ("metadata", json.dumps({"gone": None}), ["'id-5'", "metadata key 'gone'"]),
])  # fmt: skip
def test_every_limit_violation_is_one_clear_error_naming_the_record(tmp_path, pinecone_server, pinecone_index,
                                                                    column, value, needles):
    table = _one_bad(flat_table(20, 8), column, 5, value)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    pinecone_server.clear_log()
    run = vecfmt_cli("import", str(tmp_path / "a"), pc_uri(pinecone_index.name))
    assert_one_clear_error(run, "record", *needles)
    assert not [r for r in pinecone_server.request_log if "upsert" in r.path]  # refused before sending


def test_a_zero_vector_and_too_many_dimensions_are_refused(tmp_path, pinecone_index):
    table = flat_table(10, 8)
    matrix = table.column("values").combine_chunks().values.to_numpy().reshape(10, 8).copy()
    matrix[2] = 0
    table = table.set_column(1, "values", vectors_array(matrix))
    vecfmt.write_dump(str(tmp_path / "a"), table)
    run = vecfmt_cli("import", str(tmp_path / "a"), pc_uri(pinecone_index.name))
    assert_one_clear_error(run, "'id-2'", "all zeros")
    vecfmt.write_dump(str(tmp_path / "b"), flat_table(2, 20_001))
    run = vecfmt_cli("import", str(tmp_path / "b"), pc_uri("fresh-index", create="true"))
    assert_one_clear_error(run, "20,001 dimensions", "at most 20,000")


def test_requests_stay_within_1000_records_and_2_mb(tmp_path, pinecone_server, make_pinecone_index):
    index = make_pinecone_index(dimension=1536)
    vecfmt.write_dump(str(tmp_path / "a"), flat_table(1_500, 1536))
    transfer.import_dump(str(tmp_path / "a"), pc_uri(index.name), batch_size=1_500)
    assert len(pinecone_server.records(index.name)) == 1_500
    assert all(r.status == 200 for r in pinecone_server.request_log if "upsert" in r.path)


def test_the_api_key_is_never_shown(tmp_path, pinecone_server, pinecone_index, monkeypatch, caplog):
    monkeypatch.delenv(API_KEY_ENV)
    run = vecfmt_cli("export", pc_uri(pinecone_index.name), str(tmp_path / "x"))
    assert_one_clear_error(run, "no API key")
    secret = "pcsk_wrong_" + "k" * 20
    run = vecfmt_cli("export", pc_uri(pinecone_index.name, api_key=secret), str(tmp_path / "x"))
    assert_one_clear_error(run)
    assert secret not in run.stderr
    vecfmt.write_dump(str(tmp_path / "a"), flat_table(5, 8))
    good = pc_uri(pinecone_index.name, api_key=pinecone_server.api_key)
    with caplog.at_level(logging.DEBUG):
        transfer.import_dump(str(tmp_path / "a"), good)
        transfer.export(good, str(tmp_path / "b"))
    text = (tmp_path / "b" / "manifest.json").read_text()
    assert pinecone_server.api_key not in text and pinecone_server.api_key not in caplog.text


def test_pod_based_indexes_point_to_ids_file(tmp_path, pinecone_index):
    from vecfmt.stores.pinecone.catalog import _info

    info = _info("p", "http://h", {"fields": {"_values": {"type": "dense_vector", "dimension": 8,
                                                          "metric": "cosine"}}}, {"deployment_type": "pod"})
    assert info.pod and info.kind == "vector"
    # the ids_file route itself, on the serverless test index
    vecfmt.write_dump(str(tmp_path / "a"), flat_table(30, 8))
    transfer.import_dump(str(tmp_path / "a"), pc_uri(pinecone_index.name))
    (tmp_path / "ids.txt").write_text("\n".join(f"id-{i}" for i in range(0, 30, 3)) + "\n")
    manifest = transfer.export(pc_uri(pinecone_index.name, ids_file=tmp_path / "ids.txt"), str(tmp_path / "b"))
    assert manifest.total_rows == 10


# --- the bulk route ---------------------------------------------------------------------------------------


def test_bulk_import_from_a_local_folder_and_from_s3(tmp_path, s3_uri, pinecone_server, make_pinecone_index):
    tables = namespaced(300, 8, sparse=True)
    for where in (str(tmp_path / "a"), s3_uri):
        index = make_pinecone_index(dimension=8, metric="dotproduct", sparse=True)
        write_namespaced(where, tables, metric="dot")
        result = transfer.import_dump(where, pc_uri(index.name, bulk="true"))
        assert (result.rows_skipped, result.rows) == (900, 0)  # Pinecone loaded everything itself
        exact_records(pinecone_server, index.name, tables)
        assert [r for r in pinecone_server.request_log if "bulk/imports" in r.path]
        assert not [r for r in pinecone_server.request_log if r.index == index.name and "upsert" in r.path]


def test_bulk_replace_deletes_first_only_when_told(tmp_path, pinecone_server, pinecone_index):
    vecfmt.write_dump(str(tmp_path / "old"), flat_table(20, 8, prefix="old-"))
    transfer.import_dump(str(tmp_path / "old"), pc_uri(pinecone_index.name))
    vecfmt.write_dump(str(tmp_path / "new"), flat_table(10, 8, prefix="new-"))
    run = vecfmt_cli("import", str(tmp_path / "new"), pc_uri(pinecone_index.name, bulk="true"),
                     "--if-exists", "replace")  # fmt: skip
    assert_one_clear_error(run, "replace_deletes_first=true")
    assert len(pinecone_server.records(pinecone_index.name)) == 20  # nothing deleted
    transfer.import_dump(str(tmp_path / "new"), pc_uri(pinecone_index.name, bulk="true", replace_deletes_first="true"),
                         if_exists="replace")  # fmt: skip
    assert sorted(pinecone_server.records(pinecone_index.name)) == sorted(f"new-{i}" for i in range(10))


def test_bulk_refuses_what_pinecone_would_import_differently(tmp_path, pinecone_index):
    dump = tmp_path / "a"
    write_namespaced(str(dump), {"": flat_table(10, 8), "tenant/7": flat_table(5, 8, prefix="t-")})
    with pytest.raises(DumpError, match=r"folders differ from their names .*\['tenant/7'\].*upsert route"):
        transfer.import_dump(str(dump), pc_uri(pinecone_index.name, bulk="true"))
    vecfmt.write_dump(str(tmp_path / "b"), flat_table(10, 8))
    (tmp_path / "b" / "__default__" / "part-00009.parquet").write_bytes(
        (tmp_path / "b" / "__default__" / "part-00000.parquet").read_bytes())
    run = vecfmt_cli("import", str(tmp_path / "b"), pc_uri(pinecone_index.name, bulk="true"))
    assert_one_clear_error(run, "__default__/part-00009.parquet", "upsert route")


def test_every_parquet_file_matches_pinecones_import_schema(tmp_path, pinecone_index):
    """What a non-Arrow reader sees (DuckDB DESCRIBE) is Pinecone's documented import schema: id STRING,
    values LIST<FLOAT>, sparse_values STRUCT<indices LIST<UINT32>, values LIST<FLOAT>>, metadata STRING;
    one folder per namespace, named as Pinecone names it."""
    tables = namespaced(2_000, 8, sparse=True)
    write_namespaced(str(tmp_path / "a"), tables, options=vecfmt.ParquetOptions(max_file_rows=700))
    files = sorted((tmp_path / "a").glob("*/*.parquet"))
    assert len(files) >= 9
    assert sorted({f.parent.name for f in files}) == ["__default__", "tenant-a", "tenant_b"]
    for path in files:
        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
        types = {row[0]: row[1] for row in described}
        assert types == {"id": "VARCHAR", "values": "FLOAT[]",
                         "sparse_values": 'STRUCT(indices UINTEGER[], "values" FLOAT[])', "metadata": "VARCHAR"}
