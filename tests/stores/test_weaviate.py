"""Weaviate against a real server built from source (tests/servers/weaviate.py): round trips, copies with
pgvector, a server killed mid-import and resumed, per-object errors, bad inputs, auth, search."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid

import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import (
    assert_one_clear_error,
    assert_split_export_is_the_whole,
    assert_tables_identical,
    make_table,
    vecfmt_cli,
    write_namespaced,
)
from tests.servers.weaviate import WEAVIATE_TEST_KEY
from vecfmt import transfer
from vecfmt.errors import StoreError
from vecfmt.ops.diff import diff_dumps
from vecfmt.parallel import export_partitioned
from vecfmt.stores.base import Slice, open_exporter, open_importer
from vecfmt.stores.weaviate.catalog import ID_NAMESPACE, object_uuid


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def assert_identical(got: pa.Table, want: pa.Table) -> None:
    assert_tables_identical(by_id(got), by_id(want))


def rich_table(n: int, dim: int, *, seed: int = 0, prefix: str = "id-") -> pa.Table:
    """make_table's rows (nested objects, unicode, null metadata, documents) plus a named vector with some
    null rows, and metadata of every JSON type a Weaviate property holds."""
    table = make_table(n, dim, seed=seed, prefix=prefix, document=True, named={"title": 4})
    title = table.column("values_title").combine_chunks()
    mask = pa.array([i % 5 == 2 for i in range(n)])
    title = pa.FixedSizeListArray.from_arrays(title.values, 4, mask=mask)
    table = table.set_column(table.schema.get_field_index("values_title"), "values_title", title)
    metadata = [None if i % 7 == 3 else json.dumps(
        {"i": i, "tag": ["α", "β"][i % 2], "score": i / 8, "ok": i % 2 == 0, "tags": ["x", "y"],
         "counts": [i, i + 1], "weights": [0.5, i / 3], "nested": {"page": i % 5, "tags": ["x", "y"]},
         "parts": [{"n": 1, "s": "a"}, {"n": 2, "s": "b"}]}, ensure_ascii=False) for i in range(n)]  # fmt: skip
    return table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(metadata, pa.string()))


# --- round trips -------------------------------------------------------------------------------------


def test_dump_to_weaviate_and_back_is_bit_identical(tmp_path, weaviate_server, collection_name):
    table = rich_table(1_200, 16)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    uri = weaviate_server.uri(collection_name)
    result = transfer.import_dump(str(tmp_path / "a"), uri, batch_size=500)
    assert result.rows == 1_200
    manifest = transfer.export(uri, str(tmp_path / "b"), batch_size=300)
    assert [(v.name, v.column, v.dimension, v.metric) for v in manifest.vectors] == \
        [("default", "values", 16, "cosine"), ("title", "values_title", 4, "cosine")]
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)
    assert diff_dumps(str(tmp_path / "a"), str(tmp_path / "b")).identical
    saved = manifest.extra["weaviate"]
    assert saved["collection"]["class"] == collection_name
    types = {p["name"]: p["dataType"][0] for p in saved["collection"]["properties"]}
    assert types["i"] == "int" and types["score"] == "number" and types["counts"] == "int[]"
    assert types["nested"] == "object" and types["parts"] == "object[]" and types["document"] == "text"

    # the manifest's definition recreates the collection: a second import and export give the same dump
    again = weaviate_server.uri(collection_name + "x")
    transfer.import_dump(str(tmp_path / "b"), again)
    transfer.export(again, str(tmp_path / "c"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "c")).table(""), table)


def test_multi_tenant_round_trip(tmp_path, weaviate_server, collection_name):
    tables = {ns: make_table(300, 8, seed=s, prefix=f"{ns or 'd'}-") for s, ns in enumerate(["", "acme", "glob-ex"])}
    write_namespaced(str(tmp_path / "a"), tables, metric="dot")
    uri = weaviate_server.uri(collection_name)
    transfer.import_dump(str(tmp_path / "a"), uri, batch_size=128)
    manifest = transfer.export(uri, str(tmp_path / "b"))
    assert sorted(n.name for n in manifest.namespaces) == ["", "acme", "glob-ex"]
    assert manifest.primary.metric == "dot"
    dump = vecfmt.open_dump(str(tmp_path / "b"))
    for ns, table in tables.items():
        assert_identical(dump.table(ns), table)
    # only some tenants
    transfer.export(uri, str(tmp_path / "c"), namespaces=["acme"])
    assert vecfmt.open_dump(str(tmp_path / "c")).manifest.namespace_names() == ["acme"]


def test_uuid_ids_stay_object_ids_and_other_ids_map_by_uuid5(tmp_path, weaviate_server, collection_name):
    ids = [str(uuid.UUID(int=i + 1)) for i in range(20)] + ["plain", "550E8400-E29B-41D4-A716-446655440000"]
    table = make_table(len(ids), 4).set_column(0, "id", pa.array(ids, pa.string()))
    vecfmt.write_dump(str(tmp_path / "a"), table)
    uri = weaviate_server.uri(collection_name)
    transfer.import_dump(str(tmp_path / "a"), uri)
    exporter = open_exporter(uri)
    try:
        page = exporter._page("", None, 100)
        held = {r.metadata.id: dict(r.properties.non_ref_props.fields) for r in page.results}
    finally:
        exporter.close()
    assert set(held) == {*ids[:20], str(uuid.uuid5(ID_NAMESPACE, "plain")), str(uuid.uuid5(ID_NAMESPACE, ids[-1]))}
    assert object_uuid(ids[0]) == (ids[0], False)
    assert held[str(uuid.uuid5(ID_NAMESPACE, "plain"))]["vecfmt_id"].text_value == "plain"
    assert "vecfmt_id" not in held[ids[0]] or held[ids[0]]["vecfmt_id"].WhichOneof("kind") in (None, "null_value")
    transfer.export(uri, str(tmp_path / "b"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


def test_import_is_idempotent_and_replace_starts_over(tmp_path, weaviate_server, collection_name):
    table = make_table(200, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    uri = weaviate_server.uri(collection_name)
    transfer.import_dump(str(tmp_path / "a"), uri)
    run = vecfmt_cli("import", str(tmp_path / "a"), uri)
    assert_one_clear_error(run, "already holds objects", "upsert")
    transfer.import_dump(str(tmp_path / "a"), uri, if_exists="upsert")  # same UUIDs: same objects
    transfer.export(uri, str(tmp_path / "b"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)
    vecfmt.write_dump(str(tmp_path / "c"), make_table(10, 8, prefix="new-"))
    transfer.import_dump(str(tmp_path / "c"), uri, if_exists="replace")
    transfer.export(uri, str(tmp_path / "d"), overwrite=True)
    assert sorted(vecfmt.open_dump(str(tmp_path / "d")).table("").column("id").to_pylist()) == \
        sorted(f"new-{i}" for i in range(10))


def test_export_resumes_from_its_token(tmp_path, weaviate_server, collection_name):
    table = make_table(1_000, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    uri = weaviate_server.uri(collection_name, page=100)
    transfer.import_dump(str(tmp_path / "a"), uri)
    exporter = open_exporter(uri)
    try:
        exporter.describe()
        chunks = list(exporter.batches(exporter.slices("")[0], batch_size=100))
        rest = list(exporter.batches(exporter.slices("")[0], batch_size=100, resume=chunks[3].resume_token))
    finally:
        exporter.close()
    first = [i for c in chunks for i in c.batch.column("id").to_pylist()]
    assert len(first) == 1_000 and len(set(first)) == 1_000
    assert [i for c in rest for i in c.batch.column("id").to_pylist()] == first[400:]


def test_search_finds_each_vector_itself(tmp_path, weaviate_server, collection_name):
    table = make_table(300, 16)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    uri = weaviate_server.uri(collection_name)
    transfer.import_dump(str(tmp_path / "a"), uri)
    exporter = open_exporter(uri)
    try:
        for row in (0, 17, 299):
            vector = table.column("values")[row].values.to_numpy()
            hits = exporter.search(vector, 3)
            assert hits[0][0] == f"id-{row}" and abs(hits[0][1]) < 1e-5
    finally:
        exporter.close()


# --- copies with pgvector ------------------------------------------------------------------------------


def test_copy_weaviate_to_pgvector_and_back(tmp_path, pg_db, weaviate_server, collection_name):
    from tests.stores.test_pgvector import pg

    table = make_table(400, 8)
    vecfmt.write_dump(str(tmp_path / "a"), table)
    source = weaviate_server.uri(collection_name)
    transfer.import_dump(str(tmp_path / "a"), source)
    run = vecfmt_cli("copy", source, pg(pg_db))
    assert run.code == 0, run.stderr
    target = weaviate_server.uri(collection_name + "back")
    run = vecfmt_cli("copy", pg(pg_db), target)
    assert run.code == 0, run.stderr
    transfer.export(target, str(tmp_path / "b"))
    got = by_id(vecfmt.open_dump(str(tmp_path / "b")).table(""))
    assert got.column("id").to_pylist() == by_id(table).column("id").to_pylist()
    assert_identical(got.select(["id", "values"]), table.select(["id", "values"]))
    # pgvector's jsonb normalises metadata text: compare as JSON
    assert [json.loads(m) if m else None for m in got.column("metadata").to_pylist()] == \
           [json.loads(m) if m else None for m in by_id(table).column("metadata").to_pylist()]


def test_copy_refuses_its_own_source(weaviate_server, collection_name, tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4))
    uri = weaviate_server.uri(collection_name)
    transfer.import_dump(str(tmp_path / "a"), uri)
    run = vecfmt_cli("copy", uri, weaviate_server.uri(collection_name[0].lower() + collection_name[1:]))
    assert_one_clear_error(run, "same table")


# --- a server killed mid-import ------------------------------------------------------------------------


def _count(server, collection: str) -> int:
    import urllib.request

    query = {"query": f"{{Aggregate {{ {collection} {{ meta {{ count }} }} }} }}"}
    request = urllib.request.Request(f"http://127.0.0.1:{server.http}/v1/graphql", data=json.dumps(query).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.loads(response.read())
        return int(body["data"]["Aggregate"][collection][0]["meta"]["count"])
    except (OSError, KeyError, TypeError, ValueError):
        return 0


def test_server_killed_mid_import_then_resume_ends_exact(tmp_path, weaviate_factory, collection_name):
    server = weaviate_factory()
    table = make_table(20_000, 32)
    dump = str(tmp_path / "a")
    vecfmt.write_dump(dump, table, options=vecfmt.ParquetOptions(max_file_rows=4_000))
    uri = server.uri(collection_name, batch=100, retries=0)
    proc = subprocess.Popen([sys.executable, "-m", "vecfmt.cli", "import", dump, uri, "--batch-size", "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _count(server, collection_name) < 4_000:
        time.sleep(0.05)
    assert proc.poll() is None, "the import finished before the server could be killed"
    server.kill()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"weaviate 127.0.0.1:{server.http}" in lines[0] and "--resume" in lines[0], lines[0]

    server.start()  # same ports, same data: Weaviate recovers its write-ahead logs
    run = vecfmt_cli("import", dump, uri, "--resume", "--quiet", timeout=300)
    assert run.code == 0, run
    assert _count(server, collection_name) == 20_000
    transfer.export(uri, str(tmp_path / "b"))
    assert_identical(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)


# --- errors ----------------------------------------------------------------------------------------------


def test_per_object_errors_are_surfaced_with_ids_and_reasons(tmp_path, weaviate_server, collection_name):
    from weaviate.classes.config import Configure, DataType, Property

    from vecfmt.stores.weaviate.connect import sdk

    client = sdk().connect_to_local(port=weaviate_server.http, grpc_port=weaviate_server.grpc, skip_init_checks=True)
    try:  # a date property: Weaviate parses each value, and refuses text that is no date, object by object
        client.collections.create(collection_name, properties=[Property(name="when", data_type=DataType.DATE)],
                                  vector_config=Configure.Vectors.self_provided(name="default"))  # fmt: skip
    finally:
        client.close()
    table = make_table(10, 4)
    when = [None if i in (3, 7) else "2026-11-30T00:00:00Z" for i in range(10)]
    when[3], when[7] = "not a date", "yesterday"
    metadata = [json.dumps({"when": w}) for w in when]
    table = table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(metadata))
    vecfmt.write_dump(str(tmp_path / "a"), table)
    run = vecfmt_cli("import", str(tmp_path / "a"), weaviate_server.uri(collection_name))
    assert_one_clear_error(run, "2 object(s) refused", "'id-3'", "'id-7'", "not a date")


def test_dimension_mismatch_within_a_collection_is_one_line(tmp_path, weaviate_server, collection_name):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(20, 8))
    vecfmt.write_dump(str(tmp_path / "b"), make_table(20, 16, prefix="other-"))
    uri = weaviate_server.uri(collection_name)
    assert vecfmt_cli("import", str(tmp_path / "a"), uri).code == 0
    run = vecfmt_cli("import", str(tmp_path / "b"), uri, "--if-exists", "append")
    assert_one_clear_error(run, "8-dimensional", "16", "nothing was written")


def test_invalid_collection_name_is_one_line(tmp_path, weaviate_server):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4))
    run = vecfmt_cli("import", str(tmp_path / "a"), weaviate_server.uri("my-docs"))
    assert_one_clear_error(run, "'my-docs' is not a valid collection name")


@pytest.mark.parametrize(("value", "needle"), [
    ([[1, 2], [3]], "a list of lists"),
    ([1, "a"], "a list mixing int, str"),
    (["a", None], "a list holding null"),
])  # fmt: skip
def test_property_types_weaviate_refuses_are_one_line(tmp_path, weaviate_server, collection_name, value, needle):
    table = make_table(5, 4)
    metadata = [json.dumps({"ok": 1, "bad": value} if i == 2 else {"ok": 1}) for i in range(5)]
    table = table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(metadata))
    vecfmt.write_dump(str(tmp_path / "a"), table)
    run = vecfmt_cli("import", str(tmp_path / "a"), weaviate_server.uri(collection_name))
    assert_one_clear_error(run, "'id-2'", "'bad'", needle)


def test_unknown_option_and_sparse_dump_are_refused(tmp_path, weaviate_server, collection_name):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(5, 4, sparse=True))
    run = vecfmt_cli("import", str(tmp_path / "a"), weaviate_server.uri(collection_name))
    assert_one_clear_error(run, "dense vectors only")
    run = vecfmt_cli("import", str(tmp_path / "a"), weaviate_server.uri(collection_name, colection="x"))
    assert_one_clear_error(run, "unknown option 'colection'")


# --- auth ------------------------------------------------------------------------------------------------


def test_api_key_from_the_environment_never_shows(tmp_path, weaviate_auth_server, collection_name, monkeypatch):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(50, 8))
    uri = weaviate_auth_server.uri(collection_name)
    env = dict(os.environ)
    env.pop("WEAVIATE_API_KEY", None)
    run = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", str(tmp_path / "a"), uri],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "401" in run.stderr or "nauthori" in run.stderr, run.stderr
    wrong_env = {**env, "WEAVIATE_API_KEY": "wrong-" + WEAVIATE_TEST_KEY}
    wrong = subprocess.run([sys.executable, "-m", "vecfmt.cli", "import", str(tmp_path / "a"), uri],
                           capture_output=True, text=True, env=wrong_env, timeout=120)  # fmt: skip
    assert wrong.returncode == 1 and WEAVIATE_TEST_KEY not in wrong.stderr + wrong.stdout, wrong.stderr
    monkeypatch.setenv("WEAVIATE_API_KEY", WEAVIATE_TEST_KEY)
    transfer.import_dump(str(tmp_path / "a"), uri)
    manifest = transfer.export(uri, str(tmp_path / "b"))
    assert manifest.total_rows == 50
    assert WEAVIATE_TEST_KEY not in (tmp_path / "b" / "manifest.json").read_text()


def test_importer_without_a_collection_option_is_one_line():
    with pytest.raises(StoreError, match="needs the option collection"):
        open_importer("weaviate://127.0.0.1:1")


# --- slices: ranges of the UUID space ------------------------------------------------------------------

UUID_SPACE = 1 << 128


def spread_uuids(n: int, cuts: int, *, seed: int = 5) -> list[str]:
    """``n`` UUIDs over the whole space: the smallest and largest, each cut between ``cuts`` equal ranges and
    its two neighbours, the rest at random."""
    edges = {0, UUID_SPACE - 1}
    for i in range(1, cuts):
        cut = UUID_SPACE * i // cuts
        edges |= {cut - 1, cut, cut + 1}
    rng = random.Random(seed)
    values = sorted(edges) + [rng.getrandbits(128) for _ in range(n - len(edges))]
    return [str(uuid.UUID(int=v)) for v in values]


def read_slice(exporter, part: Slice, *, batch_size: int = 100, resume: str | None = None) -> list:
    return list(exporter.batches(part, batch_size=batch_size, resume=resume))


def table_of(chunks: list) -> pa.Table:
    return pa.Table.from_batches([c.batch for c in chunks])


def test_slices_split_the_uuid_space_and_cover_every_object_once(tmp_path, weaviate_server, collection_name,
                                                                 monkeypatch):  # fmt: skip
    ids = [*spread_uuids(320, 16), "plain", "über id"]  # the last two map to UUIDv5 objects
    table = make_table(len(ids), 8).set_column(0, "id", pa.array(ids, pa.string()))
    vecfmt.write_dump(str(tmp_path / "a"), table)
    uri = weaviate_server.uri(collection_name, page=7)  # small pages: slice ends fall inside pages
    transfer.import_dump(str(tmp_path / "a"), uri)
    exporter = open_exporter(uri)
    try:
        exporter.describe()
        assert exporter.slices("") == [Slice("")]  # 322 objects: one slice
        whole = table_of(read_slice(exporter, Slice("")))
        monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 20)
        parts = exporter.slices("")
        assert [json.loads(json.dumps(p.key)) for p in parts] == [p.key for p in parts]  # job state keeps them
        starts = [p.key["uuids"][0] for p in parts]
        assert starts == [None, *(f"{i:x}0000000-0000-0000-0000-000000000000" for i in range(1, 16))]
        assert [p.key["uuids"][1] for p in parts] == [*starts[1:], None]
        tables = [table_of(read_slice(exporter, p, batch_size=7)) for p in parts]
        # each object in its own slice, by its object UUID (ids that are not UUIDs are found by theirs)
        for part, got in zip(parts, tables, strict=True):
            low, high = (uuid.UUID(b).int if b else None for b in part.key["uuids"])
            for record_id in got.column("id").to_pylist():
                held = uuid.UUID(object_uuid(record_id)[0]).int
                assert (low is None or held >= low) and (high is None or held < high), (record_id, part.key)
        assert [t.num_rows for t in tables].count(0) == 0 and sum(t.num_rows for t in tables) == len(ids)
        assert_identical(pa.concat_tables(tables), whole)
        assert_identical(whole, table)
        # a resume token continues inside its slice and stops at the slice's end
        part = parts[5]
        chunks = read_slice(exporter, part, batch_size=7)
        assert len(chunks) >= 3
        rest = read_slice(exporter, part, batch_size=7, resume=chunks[1].resume_token)
        assert table_of(rest).column("id").to_pylist() == table_of(chunks[2:]).column("id").to_pylist()
    finally:
        exporter.close()
    assert_split_export_is_the_whole(uri, tmp_path, monkeypatch)
    assert_identical(vecfmt.open_dump(str(tmp_path / "split")).table(""), table)


def test_partitioned_export_of_split_tenants_equals_a_single_process_one(tmp_path, weaviate_server, collection_name,
                                                                        monkeypatch):  # fmt: skip
    tables = {}
    for seed, ns in enumerate(["", "acme"]):
        ids = spread_uuids(160, 4, seed=seed)
        tables[ns] = make_table(len(ids), 8, seed=seed).set_column(0, "id", pa.array(ids, pa.string()))
    write_namespaced(str(tmp_path / "a"), tables)
    uri = weaviate_server.uri(collection_name, page=25)
    transfer.import_dump(str(tmp_path / "a"), uri)
    transfer.export(uri, str(tmp_path / "single"))
    # 160 objects a tenant, 40 a slice: four slices each (the workers read the keys the plan gives them)
    monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 40)
    manifest = export_partitioned(uri, str(tmp_path / "parts"), workers=2)
    assert len(manifest.files) >= 8  # every partition wrote its own part files
    assert diff_dumps(str(tmp_path / "single"), str(tmp_path / "parts")).identical
    dump = vecfmt.open_dump(str(tmp_path / "parts"))
    for ns, table in tables.items():
        assert_identical(dump.table(ns), table)
