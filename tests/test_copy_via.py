"""``vecfmt copy --via DUMP``: one read of the source, a backup dump, then the import; resumable."""

from __future__ import annotations

import functools

import lancedb
import pytest

import vecfmt
import vecfmt.stores.lancedb as lance_store
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli
from vecfmt import transfer
from vecfmt.errors import DumpError, StoreError
from vecfmt.ops.diff import diff_dumps
from vecfmt.writer import EXPORT_STATE, ParquetOptions


def lance(tmp_path, table):
    return f"lancedb://{tmp_path}/db?table={table}"


@pytest.fixture
def source(tmp_path):
    vecfmt.write_dump(str(tmp_path / "seed"), make_table(5_000, 8, document=True))
    transfer.import_dump(str(tmp_path / "seed"), lance(tmp_path, "src"))
    return lance(tmp_path, "src")


def _rows(tmp_path, table):
    return lancedb.connect(str(tmp_path / "db")).open_table(table).count_rows()


def test_copy_via_writes_the_backup_and_the_target(tmp_path, source):
    run = vecfmt_cli("copy", source, lance(tmp_path, "dst"), "--via", str(tmp_path / "backup"), "--json")
    assert run.code == 0, run
    assert diff_dumps(str(tmp_path / "seed"), str(tmp_path / "backup")).identical
    transfer.export(lance(tmp_path, "dst"), str(tmp_path / "out"))
    assert diff_dumps(str(tmp_path / "seed"), str(tmp_path / "out")).identical


def test_an_interrupted_import_resumes_from_the_backup(tmp_path, source, monkeypatch):
    monkeypatch.setattr(lance_store, "COMMIT_ROWS", 1_000)
    original = lance_store.LanceDBImporter.write
    calls = {"n": 0}

    def failing(self, namespace, batch, *, rows_done):
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreError("the connection dropped")
        original(self, namespace, batch, rows_done=rows_done)

    monkeypatch.setattr(lance_store.LanceDBImporter, "write", failing)
    with pytest.raises(StoreError, match="--resume"):
        transfer.copy(source, lance(tmp_path, "dst"), via=str(tmp_path / "backup"), batch_size=1_000)
    assert (tmp_path / "backup" / "manifest.json").exists() and _rows(tmp_path, "dst") == 2_000
    monkeypatch.setattr(lance_store.LanceDBImporter, "write", original)
    again = vecfmt_cli("copy", source, lance(tmp_path, "dst"), "--via", str(tmp_path / "backup"))
    assert_one_clear_error(again, "holds a dump already: resume")
    result = transfer.copy(source, lance(tmp_path, "dst"), via=str(tmp_path / "backup"), resume=True,
                           batch_size=1_000)
    assert (result.rows, result.rows_skipped) == (3_000, 2_000)
    transfer.export(lance(tmp_path, "dst"), str(tmp_path / "out"))
    assert diff_dumps(str(tmp_path / "seed"), str(tmp_path / "out")).identical


def test_an_interrupted_export_resumes_and_the_target_is_untouched_until_the_backup_is_complete(
        tmp_path, source, monkeypatch):
    original = lance_store.LanceDBExporter.batches

    def stops(self, part, *, batch_size, resume=None):
        for n, chunk in enumerate(original(self, part, batch_size=batch_size, resume=resume)):
            if n == 3 and resume is None:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(lance_store.LanceDBExporter, "batches", stops)
    small = functools.partial(ParquetOptions, max_file_bytes=20_000, row_group_bytes=20_000)
    monkeypatch.setattr("vecfmt.writer.ParquetOptions", small)  # part files (and checkpoints) every few batches
    with pytest.raises(KeyboardInterrupt):
        transfer.copy(source, lance(tmp_path, "dst"), via=str(tmp_path / "backup"), batch_size=500)
    assert not (tmp_path / "backup" / "manifest.json").exists()
    assert (tmp_path / "backup" / EXPORT_STATE).exists()  # checkpointed: the export continues, not restarts
    assert "dst" not in lance_store._table_names(lancedb.connect(str(tmp_path / "db")))
    with pytest.raises(DumpError, match="partial dump of an interrupted copy"):
        transfer.copy(source, lance(tmp_path, "dst"), via=str(tmp_path / "backup"))
    transfer.copy(source, lance(tmp_path, "dst"), via=str(tmp_path / "backup"), resume=True, batch_size=500)
    assert diff_dumps(str(tmp_path / "seed"), str(tmp_path / "backup")).identical
    assert _rows(tmp_path, "dst") == 5_000


def test_a_backup_of_another_source_is_refused_and_plain_copies_do_not_resume(tmp_path, source):
    vecfmt.write_dump(str(tmp_path / "other-seed"), make_table(10, 8))
    transfer.import_dump(str(tmp_path / "other-seed"), lance(tmp_path, "other"))
    transfer.export(lance(tmp_path, "other"), str(tmp_path / "exported"))
    with pytest.raises(DumpError, match="is a complete dump, not the backup of an interrupted copy"):
        transfer.copy(source, lance(tmp_path, "dst"), via=str(tmp_path / "exported"), resume=True)
    # the backup of an interrupted copy from a table of the same name in another database
    vecfmt.write_dump(str(tmp_path / "b-seed"), make_table(10, 8, prefix="b-"))
    other_db = f"lancedb://{tmp_path}/other-db?table=src"
    transfer.import_dump(str(tmp_path / "b-seed"), other_db)
    transfer.import_dump(str(tmp_path / "b-seed"), lance(tmp_path, "taken"))
    with pytest.raises(StoreError, match="already exists"):
        transfer.copy(other_db, lance(tmp_path, "taken"), via=str(tmp_path / "bk"))
    with pytest.raises(DumpError, match="is the backup of a copy from lancedb 'src'"):
        transfer.copy(source, lance(tmp_path, "taken"), via=str(tmp_path / "bk"), resume=True)
    assert_one_clear_error(vecfmt_cli("copy", source, lance(tmp_path, "dst"), "--resume"),
                           "a copy can only resume through a dump")


def test_a_failed_import_can_be_taken_up_with_another_if_exists(tmp_path, source):
    """The backup finished and the import refused (the target exists): --resume with if_exists replace
    imports it, since no import of it began."""
    vecfmt.write_dump(str(tmp_path / "b-seed"), make_table(10, 8, prefix="b-"))
    transfer.import_dump(str(tmp_path / "b-seed"), lance(tmp_path, "taken"))
    with pytest.raises(StoreError, match="already exists"):
        transfer.copy(source, lance(tmp_path, "taken"), via=str(tmp_path / "bk"))
    run = vecfmt_cli("copy", source, lance(tmp_path, "taken"), "--via", str(tmp_path / "bk"), "--resume",
                     "--if-exists", "replace")
    assert run.code == 0, run
    assert _rows(tmp_path, "taken") == 5_000 and not (tmp_path / "bk" / "vecfmt-copy.json").exists()


def test_a_copy_via_onto_its_own_source_is_refused(tmp_path, source):
    same = f"lancedb://{tmp_path}/./db/?table=src"
    assert_one_clear_error(vecfmt_cli("copy", source, same, "--via", str(tmp_path / "bk"), "--if-exists", "append"),
                           "are the same table")
    assert _rows(tmp_path, "src") == 5_000 and not (tmp_path / "bk").exists()
