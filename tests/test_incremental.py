"""Incremental dumps (issue 13): export --since, restore and compact of a chain, against real stores.

The main test: an index changed between exports (adds, vector-only and metadata-only updates, deletes, a
namespace added and one dropped); the chain full + deltas, restored into another store or compacted, equals a
fresh full export exactly (``diff`` finds nothing)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import vecfmt
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli
from vecfmt import transfer
from vecfmt.errors import DumpError, InvalidDataError, StoreError
from vecfmt.manifest import MANIFEST_NAME
from vecfmt.ops import incremental
from vecfmt.ops.diff import diff_dumps
from vecfmt.ops.incremental import compact, export_delta, open_chain, restore, row_digests
from vecfmt.ops.inspect import inspect_dump
from vecfmt.ops.validate import validate_chain, validate_dump, validate_dumps
from vecfmt.schema import vectors_array
from vecfmt.writer import ParquetOptions

DIM = 8


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Import progress files (Qdrant's) in the test's folder."""
    monkeypatch.setenv("VECFMT_STATE_DIR", str(tmp_path / "state"))


def lance(path, table: str = "items", extra: str = "") -> str:
    return f"lancedb://{path}?table={table}{extra}"


def listed(ids) -> str:
    return ", ".join("'" + str(i).replace("'", "''") + "'" for i in ids)


def assert_identical(a: str, b: str) -> None:
    result = diff_dumps(a, b)
    assert result.identical, result.to_dict()["totals"]


# --- LanceDB: the index and its changes -------------------------------------------------------------------


def seed_lancedb(tmp_path) -> str:
    """A LanceDB table of three namespaces: "" (2,000 rows), "gone" (300) and "kept" (400)."""
    seed = str(tmp_path / "seed")
    with vecfmt.DumpWriter(seed, metric="dot") as writer:
        writer.write(make_table(2_000, DIM, prefix="a-", document=True), namespace="")
        writer.write(make_table(300, DIM, prefix="g-", seed=1, document=True), namespace="gone")
        writer.write(make_table(400, DIM, prefix="k-", seed=2, document=True), namespace="kept")
    uri = lance(tmp_path / "db")
    transfer.import_dump(seed, uri)
    return uri


def lance_rows(table, ids: list[str], namespace: str, seed: int, metadata: str | None = '{"new": 1}') -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": pa.array(ids),
        "vector": vectors_array(rng.standard_normal((len(ids), DIM)).astype(np.float32)),
        "metadata": pa.array([metadata] * len(ids), pa.string()),
        "document": pa.array([f"text of {i}" for i in ids]),
        "namespace": pa.array([namespace] * len(ids)),
    }).select(table.schema.names).cast(table.schema)


def change_lancedb(path, round_: int) -> None:
    """Change the index through LanceDB's own API: adds, vector-only updates, metadata-only updates,
    deletes, a namespace dropped ("gone", first round) and one added ("new", first round)."""
    table = lancedb.connect(str(path)).open_table("items")
    start = 100 * round_
    vector_only = [f"a-{i}" for i in range(start, start + 20)]
    old = table.search().where(f"id IN ({listed(vector_only)})").limit(None).to_arrow()
    rng = np.random.default_rng(round_)
    moved = vectors_numpy_of(old) + rng.standard_normal((len(old), DIM)).astype(np.float32)
    updated = old.set_column(old.schema.get_field_index("vector"), "vector",
                             vectors_array(moved).cast(table.schema.field("vector").type))
    table.delete(f"id IN ({listed(vector_only)})")
    table.add(updated.select(table.schema.names))
    table.update(where=f"id IN ({listed(f'a-{i}' for i in range(start + 20, start + 45))})",
                 values={"metadata": json.dumps({"round": round_, "tag": "β"})})
    table.delete(f"id IN ({listed(f'a-{i}' for i in range(start + 50, start + 80))})")
    table.add(lance_rows(table, [f"a-new-{round_}-{i}" for i in range(60)], "", seed=10 + round_))
    if round_ == 1:
        table.delete("namespace = 'gone'")
        table.add(lance_rows(table, [f"n-{i}" for i in range(150)], "new", seed=99, metadata=None))


def vectors_numpy_of(table: pa.Table) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    return column.values.to_numpy().reshape(len(column), DIM).copy()


def test_lancedb_chain_restored_into_qdrant_and_compacted_equals_a_fresh_export(tmp_path):
    uri = seed_lancedb(tmp_path)
    f0, d1, d2, fresh = (str(tmp_path / name) for name in ("f0", "d1", "d2", "fresh"))
    transfer.export(uri, f0)
    change_lancedb(tmp_path / "db", 1)
    manifest = export_delta(uri, d1, f0)

    # only what changed: 20 + 25 updated and 60 added rows, 30 + 300 deleted ids, 150 rows of a new namespace
    assert manifest.is_delta and manifest.format_version == "1.1"
    assert manifest.base.uri == f0 and manifest.base.kind == "full"
    counts = {ns.name: (ns.rows, ns.deleted, ns.rows_after) for ns in manifest.namespaces}
    assert counts == {"": (105, 30, 2_030), "gone": (0, 300, 0), "kept": (0, 0, 400), "new": (150, 0, 150)}
    assert [f.path for f in manifest.deletes] == ["__default__/deletes-00000.parquet", "gone/deletes-00000.parquet"]
    assert validate_dump(d1) == []
    # the digests d1 records of its state are those of the chain's rows: the next delta reads them instead
    links = open_chain([f0, d1])
    for namespace in incremental.resolve_chain(links):
        stored = incremental._stored_digests(links[-1], namespace)
        computed = incremental._base_digests(links[0], namespace)  # f0 has none: computed from the rows
        assert stored is not None and namespace.name != "gone"
        order_stored, order_computed = np.argsort(stored[0].to_numpy(False)), np.argsort(computed[0].to_numpy(False))
        assert np.array_equal(stored[1][order_stored], computed[1][order_computed])
    # a second delta, made against the first (its chain followed through the recorded base) and without
    # reading the chain's rows
    change_lancedb(tmp_path / "db", 2)
    real = incremental._resolved_batches
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(incremental, "_resolved_batches", lambda *a, **k: pytest.fail("rows read"))
        second = export_delta(uri, d2, d1)
    assert incremental._resolved_batches is real
    assert {ns.name: (ns.rows, ns.deleted) for ns in second.namespaces} == {
        "": (105, 30), "kept": (0, 0), "new": (0, 0)}
    transfer.export(uri, fresh)

    compact([f0, d1, d2], str(tmp_path / "compact"))
    assert validate_dump(str(tmp_path / "compact")) == []
    assert vecfmt.open_dump(str(tmp_path / "compact")).manifest.format_version == "1.0"
    assert_identical(str(tmp_path / "compact"), fresh)

    target = f"qdrant://{tmp_path / 'qdrant'}?collection=docs"
    result = restore([f0, d1, d2], target)
    assert result.rows == vecfmt.open_dump(fresh).manifest.total_rows
    transfer.export(target, str(tmp_path / "restored"))
    assert_identical(str(tmp_path / "restored"), fresh)


def test_an_unchanged_index_gives_an_empty_delta_and_the_checks_of_a_full_export_hold(tmp_path):
    uri = seed_lancedb(tmp_path)
    transfer.export(uri, str(tmp_path / "f0"))
    manifest = export_delta(uri, str(tmp_path / "d"), str(tmp_path / "f0"))
    assert manifest.files == [] and manifest.deletes == [] and manifest.total_rows == 0
    assert {ns.name: ns.rows_after for ns in manifest.namespaces} == {"": 2_000, "gone": 300, "kept": 400}
    compact([str(tmp_path / "f0"), str(tmp_path / "d")], str(tmp_path / "c"))
    assert_identical(str(tmp_path / "c"), str(tmp_path / "f0"))

    table = lancedb.connect(str(tmp_path / "db")).open_table("items")
    table.add(lance_rows(table, ["a-7"], "", seed=3))  # a duplicate id
    with pytest.raises(InvalidDataError, match="duplicate ids in namespace ''"):
        export_delta(uri, str(tmp_path / "dup"), str(tmp_path / "f0"))
    table.delete("id = 'a-7'")
    table.update(where="id = 'a-8'", values={"metadata": '{"x": NaN}'})  # LanceDB itself refuses NaN vectors
    with pytest.raises(InvalidDataError, match="metadata of id 'a-8' holds NaN or Infinity"):
        export_delta(uri, str(tmp_path / "nan"), str(tmp_path / "f0"))
    assert not (tmp_path / "nan" / MANIFEST_NAME).exists() and not (tmp_path / "dup" / MANIFEST_NAME).exists()


def test_a_source_of_other_vectors_is_refused(tmp_path):
    uri = seed_lancedb(tmp_path)
    transfer.export(uri, str(tmp_path / "f0"))
    vecfmt.write_dump(str(tmp_path / "other"), make_table(10, DIM + 1), metric="dot")
    transfer.import_dump(str(tmp_path / "other"), lance(tmp_path / "db2"))
    with pytest.raises(InvalidDataError, match=r"differ from those of .*f0 \(vector 'default' has dimension 9 "
                                               r"here, 8 in the base\): a delta cannot change them"):
        export_delta(lance(tmp_path / "db2"), str(tmp_path / "d"), str(tmp_path / "f0"))


def test_an_interrupted_delta_export_leaves_no_valid_looking_dump(tmp_path, monkeypatch):
    uri = seed_lancedb(tmp_path)
    transfer.export(uri, str(tmp_path / "f0"))
    change_lancedb(tmp_path / "db", 1)
    calls = {"n": 0}
    real = incremental.row_digests

    def interrupted(batch):
        calls["n"] += 1
        if calls["n"] == 8:  # the store's rows of the second namespace, after the first one's files
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(incremental, "row_digests", interrupted)
    delta = tmp_path / "d1"
    with pytest.raises(KeyboardInterrupt):
        export_delta(uri, str(delta), str(tmp_path / "f0"), batch_size=500)
    assert calls["n"] == 8
    assert not (delta / MANIFEST_NAME).exists() and not list(delta.rglob("*.parquet"))
    with pytest.raises(DumpError, match=r"no manifest\.json"):
        open_chain([str(tmp_path / "f0"), str(delta)])
    assert [p.message for p in validate_dump(str(delta))] == [
        f"{delta} has no manifest.json: not a complete vecfmt dump (an interrupted write leaves none)"]
    monkeypatch.setattr(incremental, "row_digests", real)
    export_delta(uri, str(delta), str(tmp_path / "f0"))  # the folder is free for the next run
    assert validate_dump(str(delta)) == []


KILLED_EXPORT = """
import os, signal, sys
from vecfmt.ops import incremental
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # every file written and closed, then a power cut: no cleanup at all
incremental.commit_manifest = killed
incremental.export_delta(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=500)
"""


def test_a_killed_delta_export_leaves_no_manifest(tmp_path):
    uri = seed_lancedb(tmp_path)
    transfer.export(uri, str(tmp_path / "f0"))
    change_lancedb(tmp_path / "db", 1)
    delta = tmp_path / "d1"
    done = subprocess.run([sys.executable, "-c", KILLED_EXPORT, uri, str(delta), str(tmp_path / "f0")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert list(delta.rglob("deletes-*.parquet")) and not (delta / MANIFEST_NAME).exists()  # files, no manifest
    for operation in (lambda: open_chain([str(tmp_path / "f0"), str(delta)]),
                      lambda: restore([str(tmp_path / "f0"), str(delta)], lance(tmp_path / "target"))):
        with pytest.raises(DumpError, match=r"has no manifest\.json: not a complete vecfmt dump"):
            operation()
    assert len(validate_dump(str(delta))) == 1
    with pytest.raises(DumpError, match="holds files but no manifest"):  # not taken for a dump to replace
        export_delta(uri, str(delta), str(tmp_path / "f0"), overwrite=True)


def test_overwrite_replaces_a_delta_with_its_deletes_files(tmp_path):
    uri = seed_lancedb(tmp_path)
    transfer.export(uri, str(tmp_path / "f0"))
    change_lancedb(tmp_path / "db", 1)
    export_delta(uri, str(tmp_path / "d"), str(tmp_path / "f0"))
    with pytest.raises(DumpError, match="already holds a dump; pass overwrite"):
        export_delta(uri, str(tmp_path / "d"), str(tmp_path / "f0"))
    with pytest.raises(DumpError, match="a dump of the chain: write the delta elsewhere"):
        export_delta(uri, str(tmp_path / "f0"), str(tmp_path / "f0"), overwrite=True)
    table = lancedb.connect(str(tmp_path / "db")).open_table("items")
    table.add(lance_rows(table, [f"g-{i}" for i in range(5)], "gone", seed=5))  # "gone" is back, in part
    manifest = export_delta(uri, str(tmp_path / "d"), str(tmp_path / "f0"), overwrite=True)
    on_disk = sorted(str(p.relative_to(tmp_path / "d")) for p in (tmp_path / "d").rglob("*.parquet"))
    assert on_disk == sorted(f.path for f in [*manifest.files, *manifest.deletes, *manifest.digest_files])
    assert validate_dump(str(tmp_path / "d")) == []
    # a full export over the delta removes its deletes and digests files too (Pinecone would read them as rows)
    full = transfer.export(uri, str(tmp_path / "d"), overwrite=True)
    on_disk = sorted(str(p.relative_to(tmp_path / "d")) for p in (tmp_path / "d").rglob("*.parquet"))
    assert on_disk == sorted(f.path for f in full.files)
    assert validate_dump(str(tmp_path / "d")) == []


# --- broken chains ---------------------------------------------------------------------------------------


@pytest.fixture
def chain(tmp_path):
    uri = seed_lancedb(tmp_path)
    paths = [str(tmp_path / name) for name in ("f0", "d1", "d2")]
    transfer.export(uri, paths[0])
    change_lancedb(tmp_path / "db", 1)
    export_delta(uri, paths[1], paths[0])
    change_lancedb(tmp_path / "db", 2)
    export_delta(uri, paths[2], paths[1])
    return uri, paths


@pytest.mark.parametrize("order, message", [
    ([0, 2], r"a missing link: .*d2 is based on .*d1 \(made .*\), which is not .*f0 given before it"),
    ([1, 2], r"d1 is a delta given without its base \(.*f0, made .*\): a chain starts with its full dump"),
    ([2], r"d2 is a delta given without its base"),
    ([0, 2, 1], r"deltas out of order: .*d2 is based on .*d1, which is given after it"),
    ([2, 0, 1], r"deltas out of order: .*d2 is based on .*d1, which is given after it"),
    ([1, 0], r"deltas out of order: .*d1 is based on .*f0, which is given after it"),
    ([0, 1, 0], r"f0 is given twice \(as dump 1 and 3 of the chain\)"),
    ([0, 1, 1], r"d1 is given twice \(as dump 2 and 3 of the chain\)"),
])
def test_broken_chains_are_refused_with_one_line(tmp_path, chain, order, message):
    _, paths = chain
    given = [paths[n] for n in order]
    for operation in (lambda: restore(given, lance(tmp_path / "target")),
                      lambda: compact(given, str(tmp_path / "c"))):
        with pytest.raises(DumpError, match=message):
            operation()
    assert not (tmp_path / "target").exists() and not (tmp_path / "c").exists()
    assert_one_clear_error(vecfmt_cli("restore", *given, lance(tmp_path / "target")), "error: ")


def test_a_base_changed_since_the_delta_is_refused(tmp_path, chain):
    uri, (f0, d1, _) = chain
    transfer.export(uri, f0, overwrite=True)  # another dump where the base was
    for operation in (lambda: restore([f0, d1], lance(tmp_path / "target")),
                      lambda: compact([f0, d1], str(tmp_path / "c")),
                      lambda: export_delta(uri, str(tmp_path / "d3"), d1)):
        with pytest.raises(DumpError, match=r"d1 was made against a base at .*f0 whose manifest's SHA-256 was "
                                            r"\w{12}\.\.\., and the dump there now is another .*: the chain is broken"):
            operation()
    assert validate_chain([f0, d1])[0].message.endswith("the chain is broken")


def test_a_corrupt_link_is_refused_before_anything_is_written(tmp_path, chain):
    _, (f0, d1, d2) = chain
    deletes = next((tmp_path / "d1").rglob("deletes-*.parquet"))
    data = bytearray(deletes.read_bytes())
    data[len(data) // 2] ^= 0xFF
    deletes.write_bytes(bytes(data))
    with pytest.raises(DumpError, match=r"d1: \S*deletes-00000\.parquet is corrupt: its SHA-256 differs"):
        compact([f0, d1, d2], str(tmp_path / "c"))
    assert [p.file for p in validate_dump(d1)] == [str(deletes.relative_to(tmp_path / "d1"))]


def test_a_corrupt_link_is_said_before_anything_of_the_store(tmp_path, chain):
    """export --since reads the chain's ids and deletes on a thread while it opens the store: a link found
    corrupt then is what the error says, whether the store is unreachable or answers, and nothing is written."""
    uri, (_, _, d2) = chain
    deletes = next((tmp_path / "d1").rglob("deletes-*.parquet"))
    data = bytearray(deletes.read_bytes())
    data[len(data) // 2] ^= 0xFF
    deletes.write_bytes(bytes(data))
    unreachable = "pgvector://vecfmt:s3cret@127.0.0.1:9/nowhere?table=items"
    for source in (uri, unreachable):
        with pytest.raises(DumpError, match=r"d1: \S*deletes-00000\.parquet is corrupt: its SHA-256 differs"):
            export_delta(source, str(tmp_path / "d3"), d2)
        assert not (tmp_path / "d3").exists()


def test_an_interrupt_while_the_chain_is_read_stops_at_once(tmp_path, chain, monkeypatch):
    """The chain is resolved on a thread while the store is opened: an interrupt then goes up at once, neither
    waiting for that thread nor replaced by the chain's own error, and leaves the folder free for the next run."""
    uri, (_, _, d2) = chain
    resolve = incremental.resolve_chain

    def slow(links):
        time.sleep(5)
        return resolve(links)

    def interrupted(source):
        raise KeyboardInterrupt

    monkeypatch.setattr(incremental, "resolve_chain", slow)
    monkeypatch.setattr(incremental, "open_exporter", interrupted)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        export_delta(uri, str(tmp_path / "d3"), d2)
    assert time.monotonic() - started < 3
    monkeypatch.undo()
    assert export_delta(uri, str(tmp_path / "d3"), d2).is_delta  # the writer lock was released


def test_import_of_a_delta_alone_points_to_restore(tmp_path, chain):
    _, (_, d1, _) = chain
    message = r"this is a delta dump \(the changes since .*f0, made .*\): it is not a whole index; restore it after"
    with pytest.raises(DumpError, match=message):
        transfer.import_dump(d1, lance(tmp_path / "target"))
    assert_one_clear_error(vecfmt_cli("import", d1, lance(tmp_path / "target")), "vecfmt restore FULL DELTA... TARGET")


def test_the_cli_exports_restores_compacts_inspects_and_validates_a_chain(tmp_path, chain):
    uri, (f0, d1, d2) = chain
    shutil.rmtree(d2)
    done = vecfmt_cli("export", uri, d2, "--since", d1, "--json")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["kind"] == "delta"
    done = vecfmt_cli("restore", f0, d1, d2, lance(tmp_path / "r"))
    assert done.code == 0 and "restored" in done.stdout, done.stderr
    done = vecfmt_cli("compact", f0, d1, d2, str(tmp_path / "c"))
    assert done.code == 0, done.stderr
    transfer.export(lance(tmp_path / "r"), str(tmp_path / "r-dump"))
    assert_identical(str(tmp_path / "r-dump"), str(tmp_path / "c"))
    assert_identical(str(tmp_path / "c"), (transfer.export(uri, str(tmp_path / "fresh")), str(tmp_path / "fresh"))[1])

    done = vecfmt_cli("inspect", d1)
    assert done.code == 0, done.stderr
    assert "delta of" in done.stdout and "f0" in done.stdout and "300 deleted" in done.stdout
    report = inspect_dump(d1)
    assert report["kind"] == "delta" and report["base"]["uri"] == f0
    assert {ns["name"]: (ns["rows"], ns["deleted"], ns["rows_after"]) for ns in report["namespaces"]}["gone"] == (
        0, 300, 0)
    assert vecfmt_cli("validate", f0, d1, d2).code == 0
    done = vecfmt_cli("validate", f0, d2)
    assert done.code == 1 and "a missing link" in done.stderr


# --- pgvector ----------------------------------------------------------------------------------------------


def test_pgvector_chain_restored_into_lancedb_equals_a_fresh_export(tmp_path, pg_db):
    from tests.stores.test_pgvector import pg, run_sql

    seed = str(tmp_path / "seed")
    with vecfmt.DumpWriter(seed, metric="euclidean") as writer:
        writer.write(make_table(1_500, DIM, prefix="p-"), namespace="")
        writer.write(make_table(200, DIM, prefix="g-", seed=1), namespace="gone")
    uri = pg(pg_db)
    transfer.import_dump(seed, uri)
    f0, d1, fresh = (str(tmp_path / name) for name in ("f0", "d1", "fresh"))
    transfer.export(uri, f0)
    zero = "[" + ",".join(["0"] * DIM) + "]"
    run_sql(
        pg_db,
        # vector only: each component moved by one (the metadata stays byte for byte)
        f"UPDATE items SET embedding = embedding + '{'[' + ','.join(['1'] * DIM) + ']'}'::vector "
        "WHERE namespace = '' AND id IN (" + listed(f"p-{i}" for i in range(0, 30)) + ")",
        "UPDATE items SET metadata = '{\"edited\": true}' WHERE namespace = '' AND id IN ("
        + listed(f"p-{i}" for i in range(30, 70)) + ")",
        "DELETE FROM items WHERE namespace = '' AND id IN (" + listed(f"p-{i}" for i in range(100, 140)) + ")",
        "DELETE FROM items WHERE namespace = 'gone'",
        "INSERT INTO items (namespace, id, embedding, metadata) SELECT '', 'p-new-' || i, "
        f"'{zero}'::vector + ('[' || i || repeat(',0', {DIM - 1}) || ']')::vector, NULL FROM generate_series(1, 50) i",
        "INSERT INTO items (namespace, id, embedding, metadata) SELECT 'added', 'x-' || i, "
        f"('[' || i || repeat(',1', {DIM - 1}) || ']')::vector, ('{{\"n\": ' || i || '}}')::jsonb "
        "FROM generate_series(1, 25) i",
    )
    manifest = export_delta(uri, d1, f0)
    counts = {ns.name: (ns.rows, ns.deleted, ns.rows_after) for ns in manifest.namespaces}
    assert counts == {"": (120, 40, 1_510), "gone": (0, 200, 0), "added": (25, 0, 25)}
    transfer.export(uri, fresh)
    restore([f0, d1], lance(tmp_path / "db"))
    transfer.export(lance(tmp_path / "db"), str(tmp_path / "restored"))
    assert_identical(str(tmp_path / "restored"), fresh)
    compact([f0, d1], str(tmp_path / "c"))
    assert_identical(str(tmp_path / "c"), fresh)
    restore([f0, d1], pg(pg_db, "restored"))  # and into pgvector itself, beside the original
    # run again (as after a killed restore): replace, not the importer's append/upsert/--resume advice
    with pytest.raises(StoreError, match=r"table .*restored already exists: a restore does not resume; re-run it "
                                         r"with if_exists replace") as refused:
        restore([f0, d1], pg(pg_db, "restored"))
    assert "choose" not in str(refused.value) and "--resume" not in str(refused.value)
    transfer.export(pg(pg_db, "restored"), str(tmp_path / "restored-pg"))
    assert_identical(str(tmp_path / "restored-pg"), fresh)


# --- row digests -------------------------------------------------------------------------------------------


def test_row_digests_see_every_change_and_only_changes():
    table = make_table(200, DIM, document=True, sparse=True, named={"title": 3})
    batch = table.combine_chunks().to_batches()[0]
    base = row_digests(batch)
    assert len(set(base.tolist())) == 200
    assert np.array_equal(row_digests(batch), base)
    assert np.array_equal(row_digests(batch.slice(37, 20)), base[37:57])  # sliced Arrow buffers read rightly
    assert np.array_equal(row_digests(pa.concat_tables([table.slice(100), table.slice(0, 100)]).combine_chunks()
                                      .to_batches()[0]), np.concatenate([base[100:], base[:100]]))
    vectors = batch.column("values").values.to_numpy().reshape(200, DIM).copy()
    vectors[5, 3] = -vectors[5, 3]  # a sign
    vectors[6, 0] = np.nextafter(vectors[6, 0], np.float32(np.inf))  # one ulp
    vectors[7, 1] = -0.0 if vectors[7, 1] == 0 else vectors[7, 1]
    changed = batch.set_column(1, "values", vectors_array(vectors))
    assert np.flatnonzero(row_digests(changed) != base).tolist() == [5, 6]
    metadata = batch.column("metadata").to_pylist()
    metadata[9] = metadata[9].replace("page", "pagf")
    metadata[3] = "{}"  # null before
    documents = batch.column("document").to_pylist()
    documents[11] = documents[11] + " "
    edited = batch.set_column(batch.schema.get_field_index("metadata"), "metadata", pa.array(metadata))
    edited = edited.set_column(edited.schema.get_field_index("document"), "document", pa.array(documents))
    assert np.flatnonzero(row_digests(edited) != base).tolist() == [3, 9, 11]
    sparse = batch.column("sparse_values").to_pylist()
    sparse[12]["values"][0] += 1.0
    resparsed = batch.set_column(batch.schema.get_field_index("sparse_values"), "sparse_values",
                                 pa.array(sparse, batch.schema.field("sparse_values").type))
    assert np.flatnonzero(row_digests(resparsed) != base).tolist() == [12]
    named = pc.if_else(pa.array([i == 13 for i in range(200)]), pa.nulls(200, batch.column("values_title").type),
                       batch.column("values_title"))
    assert np.flatnonzero(row_digests(batch.set_column(2, "values_title", named)) != base).tolist() == [13]


def test_validate_of_a_chain_recomputes_the_digests_the_next_export_trusts(tmp_path, chain):
    import hashlib

    import pyarrow.parquet as pq

    _, (f0, d1, d2) = chain
    assert validate_chain([f0, d1, d2]) == []
    manifest = json.loads((tmp_path / "d2" / MANIFEST_NAME).read_text())
    entry = manifest["digests"]["files"][0]
    path = tmp_path / "d2" / entry["path"]
    table = pq.read_table(path)
    digests = table.column("digest").to_numpy().copy()
    digests[7] ^= 1  # a digest that lies, in a file whose checksum the manifest then vouches for
    pq.write_table(table.set_column(1, "digest", pa.array(digests, pa.uint64())), path)
    entry["bytes"], entry["sha256"] = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "d2" / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert validate_dump(d2) == []  # the dump alone cannot tell
    [problem] = validate_chain([f0, d1, d2])
    assert problem.message.endswith(f"1 row digests of namespace {entry['namespace']!r} differ from those of the "
                                    "chain's rows")


# --- what a hostile review found (issue 13) -------------------------------------------------------------------


def dump_files(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_a_chain_member_spelled_another_way_is_never_written_over(tmp_path, chain):
    uri, (f0, d1, d2) = chain
    before = dump_files(tmp_path / "f0")
    (tmp_path / "alias").symlink_to(tmp_path / "f0")
    spellings = [str(tmp_path / "alias"), f"{tmp_path}/d1/../f0/", f"{tmp_path}//f0"]
    for out in spellings:
        with pytest.raises(DumpError, match=r"is .*f0, a dump of the chain: write the delta elsewhere"):
            export_delta(uri, out, d2, overwrite=True)
        with pytest.raises(DumpError, match=r"is .*f0, a dump of the chain: write the compacted dump elsewhere"):
            compact([f0, d1], out, overwrite=True)
    # inside a link (a namespace folder of the base) or holding one
    with pytest.raises(DumpError, match=r"kept/sub is inside .*f0, a dump of the chain"):
        export_delta(uri, f"{f0}/kept/sub", f0)
    assert not (tmp_path / "f0" / "kept" / "sub").exists()
    with pytest.raises(DumpError, match=r"contains .*f0, a dump of the chain"):
        compact([f0, d1], str(tmp_path), overwrite=True)
    assert_one_clear_error(vecfmt_cli("export", uri, str(tmp_path / "alias"), "--since", d1, "--overwrite"),
                           "a dump of the chain")
    assert dump_files(tmp_path / "f0") == before and validate_chain([f0, d1, d2]) == []


def test_object_store_paths_are_compared_normalised():
    import pyarrow.fs as pafs

    from vecfmt.storage import Location

    s3 = pafs.S3FileSystem(region="us-east-1", anonymous=True)
    spelled = Location(s3, "bucket/backups//./mon/", "s3://bucket/backups//./mon/")
    assert incremental._place(spelled) == incremental._place(Location(s3, "bucket/backups/mon", "s3://x"))
    inner = incremental._place(Location(s3, "bucket/backups/mon/kept/sub", "s3://y"))
    assert incremental._overlap(inner, incremental._place(spelled)) == "is inside"
    assert incremental._overlap(incremental._place(Location(s3, "bucket/backups/mo", "s3://z")),
                                incremental._place(spelled)) is None


def test_compact_with_out_forgotten_does_not_replace_the_last_delta(tmp_path, chain):
    _, (f0, d1, d2) = chain
    before = dump_files(tmp_path / "d2")
    with pytest.raises(DumpError, match=r"d2 holds a delta of .*d1, a dump of the chain: it is not replaced"):
        compact([f0, d1], d2, overwrite=True)
    assert_one_clear_error(vecfmt_cli("compact", f0, d1, d2, "--overwrite"), "holds a delta of")
    assert dump_files(tmp_path / "d2") == before and validate_chain([f0, d1, d2]) == []
    compact([f0, d1, d2], str(tmp_path / "c"))  # a compacted dump may still be replaced with --overwrite
    compact([f0, d1], str(tmp_path / "c"), overwrite=True)
    assert validate_dump(str(tmp_path / "c")) == []


def test_a_second_export_into_a_folder_being_written_fails_at_once(tmp_path, chain):
    from vecfmt.storage import lock_for_writing, resolve

    uri, (f0, d1, d2) = chain
    d3 = tmp_path / "d3"
    held = lock_for_writing(resolve(str(d3)))  # a first run writing d3
    try:
        with pytest.raises(DumpError, match="another vecfmt run is writing this dump; this one changed nothing"):
            export_delta(uri, str(d3), d2)
        assert_one_clear_error(vecfmt_cli("export", uri, str(d3), "--since", d2), "another vecfmt run is writing")
        with pytest.raises(DumpError, match="another vecfmt run is writing this dump"):
            compact([f0, d1, d2], str(d3))
        assert not d3.exists() or not list(d3.iterdir())
    finally:
        assert held is not None
        held.close()
    export_delta(uri, str(d3), d2)  # released: the folder is free again
    assert validate_chain([f0, d1, d2, str(d3)]) == []


def test_restore_of_a_chain_with_deletes_into_an_existing_target_is_refused(tmp_path, chain):
    _, (f0, d1, d2) = chain
    target = lance(tmp_path / "target")
    restore([f0, d1], target)
    rows = lancedb.connect(str(tmp_path / "target")).open_table("items").count_rows()
    for if_exists in ("upsert", "append"):
        with pytest.raises(InvalidDataError, match=r"d1 deletes 330 ids, which a restore with if_exists "
                                                   f"{if_exists} would leave in the target"):
            restore([f0, d1, d2], target, if_exists=if_exists)
    assert lancedb.connect(str(tmp_path / "target")).open_table("items").count_rows() == rows
    assert_one_clear_error(vecfmt_cli("restore", f0, d1, d2, target, "--if-exists", "upsert"),
                           "into a new target or with --if-exists replace")
    # an existing target: re-run with replace, never resume
    with pytest.raises(StoreError, match="re-run it with if_exists replace") as refused:
        restore([f0, d1, d2], target)
    assert "choose if_exists" not in str(refused.value) and "--resume" not in str(refused.value)
    done = vecfmt_cli("restore", f0, d1, d2, target)
    assert_one_clear_error(done, "re-run it with --if-exists replace")
    assert "resume`" not in done.stderr and "--resume" not in done.stderr
    restore([f0, d1, d2], target, if_exists="replace")
    transfer.export(target, str(tmp_path / "restored"))
    compact([f0, d1, d2], str(tmp_path / "c"))
    assert_identical(str(tmp_path / "restored"), str(tmp_path / "c"))


def test_validate_of_a_delta_alone_checks_its_bases(tmp_path, chain):
    _, (_, _, d2) = chain
    done = vecfmt_cli("validate", d2)
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == f"valid: {d2} (with the chain of its bases: {tmp_path / 'f0'} {tmp_path / 'd1'} {d2})"
    assert json.loads(vecfmt_cli("validate", d2, "--json").stdout)["chain"] == [
        str(tmp_path / "f0"), str(tmp_path / "d1"), d2]
    (tmp_path / "f0").rename(tmp_path / "f0-moved")
    [problem] = validate_dumps([d2])
    assert problem.message.startswith("base missing or changed, so this delta cannot be restored: ")
    assert "f0" in problem.message
    done = vecfmt_cli("validate", d2, "--json")
    assert done.code == 1 and not json.loads(done.stdout)["valid"]


def test_corruption_in_a_base_names_the_base(tmp_path, chain):
    import pyarrow.parquet as pq

    _, (f0, d1, _) = chain
    part = tmp_path / "f0" / "__default__" / "part-00000.parquet"
    size = part.stat().st_size
    table = pq.read_table(part)
    ids = table.column("id").to_pylist()
    ids[1] = ids[0]  # the same bytes count, another id: what a corrupt page can decode to
    table = table.set_column(0, "id", pa.array(ids, pa.string()))
    options = ParquetOptions(compression_level=19).writer_kwargs(table.schema)  # smaller, then padded

    def written(pad: int) -> int:
        pq.write_table(table.replace_schema_metadata({"pad": "x" * pad}), part, **options)
        return part.stat().st_size

    # pad the footer so the size stays what the manifest lists (only the SHA-256 differs); the pad is stored
    # twice (key-value metadata and the Arrow schema), so the length is searched for
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        if written(middle) < size:
            low = middle + 1
        else:
            high = middle
    written(low)
    assert part.stat().st_size == size
    with pytest.raises(DumpError, match=r"f0: duplicate ids in namespace '': .*this dump's files may be corrupt; "
                                        r"run `vecfmt validate` on the chain"):
        compact([f0, d1], str(tmp_path / "c"))
    assert any("SHA-256" in p.message for p in validate_chain([f0, d1]))


def test_a_loop_of_bases_is_named(tmp_path, chain):
    uri, (_, _, d2) = chain
    manifest = json.loads((tmp_path / "d1" / MANIFEST_NAME).read_text())
    manifest["base"]["uri"] = d2  # d1 now names d2 as its base, and d2 names d1
    (tmp_path / "d1" / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DumpError, match=r"the chain of bases loops at .*d2"):
        export_delta(uri, str(tmp_path / "d3"), d2)


def test_messages_name_the_flag_and_the_delta_argument(tmp_path, chain):
    uri, (f0, d1, d2) = chain
    assert_one_clear_error(vecfmt_cli("export", uri, d2, "--since", d1), "already holds a dump; pass --overwrite")
    with pytest.raises(DumpError, match=r"diff compares whole dumps, and B \(.*d1\) is a delta"):
        diff_dumps(f0, d1)
    assert_one_clear_error(vecfmt_cli("diff", d1, f0), "and A (", "is a delta")
