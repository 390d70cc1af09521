"""pgvector hardening on real servers (both, fresh database each): one import per target at a time, progress
rows keyed by target and dump, long table names keep their index and key names, a failed replace says
the old table is unchanged, writes through query= are one clear line, NUL bytes named before COPY."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli, write_raw_dump
from tests.stores.test_pgvector import PASSWORD, assert_same_rows, pg, run_sql
from vecfmt import transfer
from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.stores.base import IfExists, open_importer
from vecfmt.stores.pgvector import PROGRESS_TABLE

STAGED = "items__vecfmt_replace"


def _dumps(tmp_path, old_rows: int = 1000, new_rows: int = 500) -> tuple[str, str]:
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    vecfmt.write_dump(old, make_table(old_rows, 4, seed=1))
    vecfmt.write_dump(new, make_table(new_rows, 4, seed=2, prefix="new-"))
    return old, new


def _export(dsn: str, tmp_path, name: str, table: str = "items") -> pa.Table:
    transfer.export(pg(dsn, table), str(tmp_path / name))
    return vecfmt.open_dump(str(tmp_path / name)).table("")


# --- 1: one import per target at a time -------------------------------------------------------------------


def test_a_second_import_into_the_same_table_is_refused_at_once(tmp_path, pg_db):
    old, new = _dumps(tmp_path)
    transfer.import_dump(old, pg(pg_db))
    first = open_importer(pg(pg_db, parallel=1))
    try:
        first.prepare(vecfmt.open_dump(new).manifest, if_exists=IfExists.REPLACE)
        batches = vecfmt.open_dump(new).table("").to_batches(max_chunksize=100)
        first.write("", batches[0], rows_done=100)
        for if_exists in IfExists:
            for resume in (False, True):
                started = time.monotonic()
                with pytest.raises(StoreError, match=r"another vecfmt import into public\.items is running") as caught:
                    transfer.import_dump(new if if_exists != IfExists.FAIL else old, pg(pg_db, lock_timeout="30s"),
                                         if_exists=if_exists, resume=resume)
                assert time.monotonic() - started < 5  # at once, not after a lock timeout
                assert "\n" not in str(caught.value)
        run = vecfmt_cli("import", old, pg(pg_db), "--if-exists", "replace", timeout=60)
        assert run.code == 1
        assert_one_clear_error(run, "error: pgvector ", "another vecfmt import into public.items is running")
        assert PASSWORD not in run.stderr
        other = str(tmp_path / "other")  # another table of the same database: not held up
        vecfmt.write_dump(other, make_table(10, 4))
        transfer.import_dump(other, pg(pg_db, "items2"))
        rows_done = 100
        for batch in batches[1:]:
            rows_done += batch.num_rows
            first.write("", batch, rows_done=rows_done)
        first.finish()
    finally:
        first.close()
    assert_same_rows(_export(pg_db, tmp_path, "back"), vecfmt.open_dump(new).table(""))
    transfer.import_dump(old, pg(pg_db), if_exists="replace")  # the lock went with the first import
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(1000,)]


def test_two_replaces_at_once_never_mix(tmp_path, pg_db):
    """The review's repro in small: a replace loading in the background, another started meanwhile."""
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    vecfmt.write_dump(old, make_table(1000, 64, seed=1))
    vecfmt.write_dump(new, make_table(200_000, 64, seed=2, prefix="new-"))
    transfer.import_dump(old, pg(pg_db))
    uri = pg(pg_db, index="none")
    script = f"from vecfmt import transfer; transfer.import_dump({new!r}, {uri!r}, if_exists='replace', batch_size=500)"
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not run_sql(pg_db, f"SELECT to_regclass('{STAGED}') IS NOT NULL")[0][0]:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        with pytest.raises(StoreError, match=r"another vecfmt import into public\.items is running"):
            transfer.import_dump(old, uri, if_exists="replace")
    finally:
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert_same_rows(_export(pg_db, tmp_path, "back"), vecfmt.open_dump(new).table(""))


# --- 2: progress rows are keyed by target and dump -----------------------------------------------------


def test_progress_updates_touch_only_this_dumps_row(tmp_path, pg_db):
    _, new = _dumps(tmp_path)
    importer = open_importer(pg(pg_db, parallel=1, index="none"))
    batches = vecfmt.open_dump(new).table("").to_batches(max_chunksize=100)
    try:
        importer.prepare(vecfmt.open_dump(new).manifest, if_exists=IfExists.FAIL)
        importer.write("", batches[0], rows_done=100)
        deadline = time.monotonic() + 30
        while run_sql(pg_db, f"SELECT rows_done FROM {PROGRESS_TABLE}") != [(100,)]:  # committed
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Another run took the row over for its dump (as a concurrent import of old code would).
        run_sql(pg_db, f"UPDATE {PROGRESS_TABLE} SET dump = 'another dump', rows_done = 7")
        with pytest.raises(StoreError, match="progress"):
            importer.write("", batches[1], rows_done=200)
            importer.finish()
    finally:
        importer.close()
    assert run_sql(pg_db, f"SELECT dump, rows_done FROM {PROGRESS_TABLE}") == [("another dump", 7)]
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(100,)]  # the second batch rolled back


# --- 5: long names keep the index and the primary key ------------------------------------------------------

LONG = {"60 chars": "t" * 60, "63 bytes": "é" * 31 + "x"}


def _indexes(dsn: str, table: str) -> list[tuple[str, str, bool]]:
    return run_sql(dsn, f"SELECT c.relname, am.amname, i.indisprimary FROM pg_index i JOIN pg_class c ON "
                        f"c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = "
                        f"'public.\"{table}\"'::regclass ORDER BY 2")  # fmt: skip


@pytest.mark.parametrize("name", list(LONG))
def test_long_table_names_keep_their_index_and_key_through_a_replace(tmp_path, pg_db, name):
    table = LONG[name]
    old, new = _dumps(tmp_path, 300, 200)
    transfer.import_dump(old, pg(pg_db, table))
    fresh = _indexes(pg_db, table)
    assert [(am, primary) for _, am, primary in fresh] == [("btree", True), ("hnsw", False)], fresh
    assert all(len(n.encode()) <= 63 and n != table for n, _, _ in fresh)
    transfer.import_dump(new, pg(pg_db, table), if_exists="replace")
    assert _indexes(pg_db, table) == fresh  # the names a table created as it gets
    assert run_sql(pg_db, "SELECT count(*) FROM pg_class WHERE relname LIKE '%vecfmt_replace%'") == [(0,)]
    assert run_sql(pg_db, "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%vecfmt_replace%'") == [(0,)]
    assert_same_rows(_export(pg_db, tmp_path, "back", table), vecfmt.open_dump(new).table(""))


# --- 7: a replace that fails on a bad row says the old table is unchanged ---------------------------------


def _with_nan(table: pa.Table, row: int, where: str) -> pa.Table:
    if where == "vector":
        values = np.array(table.column("values").combine_chunks().values.to_numpy(zero_copy_only=False))
        dim = table.schema.field("values").type.list_size
        values[row * dim] = np.nan
        column = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), dim)
        return table.set_column(table.schema.get_field_index("values"), "values", column)
    metadata = table.column("metadata").to_pylist()
    metadata[row] = '{"score": NaN}'
    return table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(metadata, pa.string()))


@pytest.mark.parametrize("where", ["vector", "metadata"])
def test_a_failed_replace_says_nothing_was_changed(tmp_path, pg_db, where):
    old, _ = _dumps(tmp_path)
    transfer.import_dump(old, pg(pg_db))
    bad = str(tmp_path / "bad")
    write_raw_dump(bad, {"": _with_nan(make_table(1000, 4, seed=3, prefix="bad-"), 550, where)})
    run = vecfmt_cli("import", bad, pg(pg_db), "--if-exists", "replace", "--batch-size", "100", timeout=60)
    assert_one_clear_error(run, "nothing was changed", "the old table is as it was")
    assert "incomplete" not in run.stderr and "rows are in the target" not in run.stderr
    assert_same_rows(_export(pg_db, tmp_path, "back"), vecfmt.open_dump(old).table(""))
    # A new table: what it says is true (the batches committed before the bad one, or none and no table).
    with pytest.raises(InvalidDataError) as caught:
        transfer.import_dump(bad, pg(pg_db, "fresh"), batch_size=100)
    kept = re.search(r"the first ([\d,]+) rows are in the target, which is incomplete", str(caught.value))
    if kept is None:
        assert "nothing was changed: the target is as it was" in str(caught.value)
        assert run_sql(pg_db, "SELECT to_regclass('fresh') IS NULL") == [(True,)]
    else:
        assert run_sql(pg_db, "SELECT count(*) FROM fresh") == [(int(kept[1].replace(",", "")),)]


def test_a_failed_lancedb_replace_says_nothing_was_changed(tmp_path):
    pytest.importorskip("lancedb")
    old, _ = _dumps(tmp_path)
    uri = f"lancedb://{tmp_path / 'db'}?table=items"
    transfer.import_dump(old, uri)
    bad = str(tmp_path / "bad")
    write_raw_dump(bad, {"": _with_nan(make_table(1000, 4, seed=3, prefix="bad-"), 550, "vector")})
    with pytest.raises(InvalidDataError, match="nothing was changed: the old table is as it was") as caught:
        transfer.import_dump(bad, uri, if_exists="replace", batch_size=100)
    assert "incomplete" not in str(caught.value)

# --- query= that tries to write: refused, one line with the store prefix, exit 1 -------------------------

WRITES = {
    "evil": "SELECT id, v FROM t WHERE evil() > 0",
    "nextval": "SELECT id, v FROM t WHERE nextval('s1') > 0",
    "set_config": "SELECT id, v FROM t WHERE set_config('transaction_read_only', 'off', true) IS NOT NULL",
    "commit": "SELECT id, v FROM t WHERE commits() > 0",
    "cancel": "SELECT id, v FROM t WHERE pg_cancel_backend(pg_backend_pid())",
}


@pytest.mark.parametrize("what", list(WRITES))
def test_a_write_through_query_is_one_clear_line(tmp_path, pg_db, what):
    run_sql(pg_db, "CREATE EXTENSION vector", "CREATE TABLE t (id int PRIMARY KEY, v vector(2))",
            "INSERT INTO t VALUES (1, '[1,2]'), (2, '[3,4]')", "CREATE TABLE victim (x int)",
            "CREATE SEQUENCE s1",
            "CREATE FUNCTION evil() RETURNS int LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO victim VALUES (1); RETURN 1; END $$",
            "CREATE FUNCTION commits() RETURNS int LANGUAGE plpgsql AS $$ BEGIN COMMIT; RETURN 1; END $$")
    run = vecfmt_cli("export", pg(pg_db, None, query=WRITES[what]), str(tmp_path / "d"))
    assert run.code == 1, run
    assert_one_clear_error(run, "error: pgvector ")
    assert "Arrow" not in run.stderr and "VECFMT_DEBUG" not in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1, repr(run.stderr)
    assert run_sql(pg_db, "SELECT count(*) FROM victim") == [(0,)]


# --- 10: resume right after a kill during the index build; NUL bytes --------------------------------------


def _building_index(dsn: str) -> bool:
    """An HNSW build (not the primary key's btree, which commits and lets its backend go right after)."""
    return run_sql(dsn, "SELECT count(*) FROM pg_stat_progress_create_index p JOIN pg_stat_activity a "
                        "ON a.pid = p.pid WHERE a.datname = current_database() AND a.query LIKE '%hnsw%'"
                   )[0][0] > 0  # fmt: skip


def test_resume_right_after_a_kill_during_the_index_build_says_why_it_waits(tmp_path, pg_db):
    dump = str(tmp_path / "a")
    vecfmt.write_dump(dump, make_table(40_000, 128))
    uri = pg(pg_db, workers=0)
    script = f"from vecfmt import transfer; transfer.import_dump({dump!r}, {uri!r}, batch_size=2000)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while proc.poll() is None and not _building_index(pg_db):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the import finished before its index build"
    run = vecfmt_cli("import", dump, uri, "--resume", timeout=60)
    assert run.code == 1
    assert_one_clear_error(run, "public.items", "index")
    deadline = time.monotonic() + 300
    while _building_index(pg_db) or run_sql(pg_db, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                                    "current_database() AND application_name = 'vecfmt'")[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    result = transfer.import_dump(dump, uri, resume=True)
    assert result.rows_skipped == 40_000
    assert run_sql(pg_db, "SELECT count(*) FROM pg_indexes WHERE tablename = 'items'") == [(2,)]


@pytest.mark.parametrize("column", ["id", "document", "metadata"])
def test_a_nul_byte_is_named_before_the_copy(tmp_path, pg_db, column):
    table = make_table(1000, 4, document=True)
    values = table.column(column).to_pylist()
    values[550] = {"id": "bad\x00id", "document": "a\x00b", "metadata": '{"a": "x\x00y"}'}[column]
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
    dump = str(tmp_path / "a")
    write_raw_dump(dump, {"": table})
    run = vecfmt_cli("import", dump, pg(pg_db), "--batch-size", "100", timeout=60)
    assert_one_clear_error(run, repr(table.column("id")[550].as_py()), *(("NUL", "row 550", column)
                           if column != "metadata" else ()))  # metadata: the core finds it is not JSON
    assert "invalid byte sequence" not in run.stderr
