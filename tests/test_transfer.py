"""The pipes' own checks (transfer.py), against real stores: a resumed export must read the same
source, a copy must not read and write one table, and a store without resume tokens refuses resume."""

import json
import os
from urllib.parse import urlencode

import lancedb
import pytest

import vecfmt
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli
from vecfmt import transfer
from vecfmt.errors import StoreError


def lance(path, table="items") -> str:
    return f"lancedb://{path}?table={table}"


def _dying_exports(monkeypatch, after: int) -> None:
    """Make LanceDB exports stop with a connection error after ``after`` batches."""
    cls = vecfmt.stores.lancedb.LanceDBExporter
    original = cls.batches

    def dying(self, part, *, batch_size, resume=None):
        for i, chunk in enumerate(original(self, part, batch_size=batch_size, resume=resume)):
            if i == after:
                raise ConnectionError("store went away")
            yield chunk

    monkeypatch.setattr(cls, "batches", dying)


def test_resumed_export_refuses_another_source(tmp_path, monkeypatch):
    db = tmp_path / "db"
    vecfmt.write_dump(str(tmp_path / "s"), make_table(1000, 4, prefix="staging-"))
    vecfmt.write_dump(str(tmp_path / "p"), make_table(1000, 4, prefix="prod-"))
    transfer.import_dump(str(tmp_path / "s"), lance(db, "staging"))
    transfer.import_dump(str(tmp_path / "p"), lance(db, "prod"))
    out = str(tmp_path / "out")
    options = vecfmt.ParquetOptions(max_file_rows=200)
    _dying_exports(monkeypatch, 5)
    with pytest.raises(ConnectionError):
        transfer.export(lance(db, "staging"), out, batch_size=100, options=options, resume=True)
    monkeypatch.undo()
    files = sorted(p.name for p in (tmp_path / "out" / "__default__").iterdir())
    with pytest.raises(vecfmt.DumpError, match=r"lancedb 'staging'.*this one lancedb 'prod'"):
        transfer.export(lance(db, "prod"), out, batch_size=100, options=options, resume=True)
    assert sorted(p.name for p in (tmp_path / "out" / "__default__").iterdir()) == files  # nothing touched
    run = vecfmt_cli("export", lance(db, "prod"), out, "--resume")
    assert_one_clear_error(run, "resume")
    manifest = transfer.export(lance(db, "staging"), out, batch_size=100, options=options, resume=True)
    assert manifest.total_rows == 1000
    ids = vecfmt.open_dump(out).table("").column("id").to_pylist()
    assert all(i.startswith("staging-") for i in ids)


def test_resumed_export_refuses_a_source_whose_counts_changed(tmp_path, monkeypatch):
    db = tmp_path / "db"
    vecfmt.write_dump(str(tmp_path / "s"), make_table(1000, 4))
    transfer.import_dump(str(tmp_path / "s"), lance(db))
    out = str(tmp_path / "out")
    options = vecfmt.ParquetOptions(max_file_rows=200)
    _dying_exports(monkeypatch, 5)
    with pytest.raises(ConnectionError):
        transfer.export(lance(db), out, batch_size=100, options=options, resume=True)
    monkeypatch.undo()
    vecfmt.write_dump(str(tmp_path / "more"), make_table(10, 4, prefix="more-"))
    transfer.import_dump(str(tmp_path / "more"), lance(db), if_exists="append")
    with pytest.raises(vecfmt.DumpError, match="changed since the interrupted export"):
        transfer.export(lance(db), out, batch_size=100, options=options, resume=True)


@pytest.mark.parametrize("if_exists", ["replace", "append", "upsert"])
def test_copy_onto_its_own_source_is_refused(tmp_path, if_exists):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(100, 4))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path / "db"))
    os.chdir(tmp_path)  # the same folder spelled another way
    with pytest.raises(StoreError, match="same table"):
        transfer.copy(lance(tmp_path / "db"), "lancedb://./db/../db?table=items", if_exists=if_exists)
    assert lancedb.connect(str(tmp_path / "db")).open_table("items").count_rows() == 100


def test_copy_onto_its_own_source_is_one_clear_error(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(100, 4))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path / "db"))
    run = vecfmt_cli("copy", lance(tmp_path / "db"), lance(tmp_path / "db"), "--if-exists", "replace")
    assert_one_clear_error(run, "same table")
    assert lancedb.connect(str(tmp_path / "db")).open_table("items").count_rows() == 100


def test_copy_to_another_table_of_the_same_database_works(tmp_path):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(100, 4))
    transfer.import_dump(str(tmp_path / "a"), lance(tmp_path / "db"))
    assert transfer.copy(lance(tmp_path / "db"), lance(tmp_path / "db", "other")).rows == 100


def test_export_resume_is_refused_for_a_store_without_resume_tokens(tmp_path, pg_db):
    vecfmt.write_dump(str(tmp_path / "a"), make_table(20, 4))
    target = f"pgvector://{pg_db.split('://', 1)[1]}?{urlencode({'table': 'items'})}"
    transfer.import_dump(str(tmp_path / "a"), target)
    with pytest.raises(StoreError, match="cannot resume an export"):
        transfer.export(target, str(tmp_path / "out"), resume=True)
    assert not (tmp_path / "out").exists()
    assert json.loads(json.dumps(transfer.export(target, str(tmp_path / "out")).total_rows)) == 20
