"""Incremental dumps by a store's own change marker (spec 6.3): pgvector's ``xmin``, against real PostgreSQL.

A full export records the marker of its snapshot; ``export --since`` then reads only the rows written since
and the table's ids, and the chain restored or compacted equals a fresh full export exactly. A marker that
cannot be proven to apply (another table, too old, other columns, no permission to read the cluster's
identity) falls back to row digests, as exact."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg import sql

import vecfmt
from tests.helpers import make_table, vecfmt_cli
from tests.stores.test_pgvector import pg, run_sql
from vecfmt import transfer
from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import MANIFEST_NAME
from vecfmt.ops import incremental
from vecfmt.ops.diff import diff_dumps
from vecfmt.ops.incremental import BY_DIGESTS, BY_MARKER, FOUND_BY, compact, export_delta, load_listed_file, restore
from vecfmt.stores.base import CHANGE_MARKER
from vecfmt.stores.pgvector import changes
from vecfmt.stores.pgvector.exporter import PgvectorExporter

DIM = 8


def listed(ids) -> str:
    return ", ".join("'" + str(i) + "'" for i in ids)


def seed(tmp_path, dsn: str) -> str:
    """A pgvector table of two namespaces: "" (1,500 rows) and "other" (200)."""
    path = str(tmp_path / "seed")
    with vecfmt.DumpWriter(path, metric="euclidean") as writer:
        writer.write(make_table(1_500, DIM, prefix="p-"), namespace="")
        writer.write(make_table(200, DIM, prefix="o-", seed=1), namespace="other")
    uri = pg(dsn)
    transfer.import_dump(path, uri)
    return uri


def change(dsn: str, round_: int) -> dict[str, set[str]]:
    """Inserts, vector-only and metadata-only updates, deletes in "", and in the first round the namespace
    "other" dropped and "added" added; returns the ids written and deleted per namespace."""
    start = 200 * round_
    vector_only = [f"p-{i}" for i in range(start, start + 30)]
    metadata_only = [f"p-{i}" for i in range(start + 30, start + 70)]
    deleted = [f"p-{i}" for i in range(start + 100, start + 140)]
    inserted = [f"p-new-{round_}-{i}" for i in range(1, 51)]
    one = "[" + ",".join(["1"] * DIM) + "]"
    statements = [
        f"UPDATE items SET embedding = embedding + '{one}'::vector WHERE namespace = '' AND id IN "
        f"({listed(vector_only)})",
        f"UPDATE items SET metadata = '{{\"round\": {round_}}}' WHERE namespace = '' "
        f"AND id IN ({listed(metadata_only)})",
        f"DELETE FROM items WHERE namespace = '' AND id IN ({listed(deleted)})",
        f"INSERT INTO items (namespace, id, embedding, metadata) SELECT '', 'p-new-{round_}-' || i, "
        f"('[' || i || repeat(',0.5', {DIM - 1}) || ']')::vector, NULL FROM generate_series(1, 50) i",
    ]
    written = {"": {*vector_only, *metadata_only, *inserted}}
    gone = {"": set(deleted)}
    if round_ == 1:
        statements += [
            "DELETE FROM items WHERE namespace = 'other'",
            "INSERT INTO items (namespace, id, embedding, metadata) SELECT 'added', 'x-' || i, "
            f"('[' || i || repeat(',1', {DIM - 1}) || ']')::vector, ('{{\"n\": ' || i || '}}')::jsonb "
            "FROM generate_series(1, 25) i",
        ]
        written["added"] = {f"x-{i}" for i in range(1, 26)}
        gone["other"] = {f"o-{i}" for i in range(200)}
    run_sql(dsn, *statements)
    return {"written": written, "deleted": gone}


def written_ids(delta: str) -> dict[str, set[str]]:
    link = incremental.open_link(delta)
    out: dict[str, set[str]] = {}
    for entry in link.manifest.files:
        table = link.dump.load_file(entry, columns=["id"])
        out.setdefault(entry.namespace, set()).update(table.column("id").to_pylist())
    return out


def deleted_ids(delta: str) -> dict[str, set[str]]:
    link = incremental.open_link(delta)
    out: dict[str, set[str]] = {}
    for entry in link.manifest.deletes:
        table = load_listed_file(link.dump, entry, incremental.DELETES_SCHEMA)
        out.setdefault(entry.namespace, set()).update(table.column("id").to_pylist())
    return out


def found_by(delta: str) -> dict:
    return incremental.open_link(delta).manifest.extra[FOUND_BY]


def assert_chain_is_a_fresh_export(tmp_path, uri: str, chain: list[str], name: str) -> None:
    """The chain compacted, and restored into LanceDB, each equals a fresh full export of the table."""
    fresh = str(tmp_path / f"{name}-fresh")
    transfer.export(uri, fresh)
    compacted = str(tmp_path / f"{name}-compact")
    compact(chain, compacted)
    result = diff_dumps(compacted, fresh)
    assert result.identical, result.to_dict()["totals"]
    target = f"lancedb://{tmp_path / f'{name}-lance'}?table=items"
    restore(chain, target)
    transfer.export(target, str(tmp_path / f"{name}-restored"))
    result = diff_dumps(str(tmp_path / f"{name}-restored"), fresh)
    assert result.identical, result.to_dict()["totals"]


def assert_no_marker_and_digests_used(tmp_path, pg_db: str, source: str, table_uri: str, name: str) -> None:
    """A full export of ``source`` records no marker, so a delta after ``change`` compares row digests, says
    why, records none either, and the chain is exactly a fresh export of the table (``table_uri``)."""
    f0, d1 = str(tmp_path / f"{name}-f0"), str(tmp_path / f"{name}-d1")
    transfer.export(source, f0)
    assert CHANGE_MARKER not in vecfmt.open_dump(f0).manifest.extra
    change(pg_db, 1)
    manifest = export_delta(source, d1, f0)
    assert manifest.extra[FOUND_BY] == {"found_by": BY_DIGESTS, "why": f"{f0} records no change marker"}
    assert CHANGE_MARKER not in manifest.extra
    assert_chain_is_a_fresh_export(tmp_path, table_uri, [f0, d1], name)


def no_digest_path(monkeypatch) -> None:
    monkeypatch.setattr(incremental, "_export_namespace", lambda *a, **k: pytest.fail("rows digested"))


def delta_by_marker(monkeypatch, uri: str, delta: str, since: str, expected: dict[str, dict[str, set[str]]]):
    """``export_delta`` that must find the changes by the marker (no row digested), and that writes exactly the
    rows ``change`` wrote and deletes exactly the ids it deleted; returns the delta's manifest."""
    with monkeypatch.context() as patch:
        no_digest_path(patch)
        manifest = export_delta(uri, delta, since)
    assert manifest.extra[FOUND_BY] == {"found_by": BY_MARKER}
    assert written_ids(delta) == expected["written"] and deleted_ids(delta) == expected["deleted"]
    return manifest


# --- the marker path --------------------------------------------------------------------------------------


def test_a_delta_by_xmin_writes_exactly_the_changed_rows_and_the_chain_equals_a_fresh_export(
        tmp_path, pg_db, monkeypatch):
    uri = seed(tmp_path, pg_db)
    f0, d1, d2 = (str(tmp_path / name) for name in ("f0", "d1", "d2"))
    transfer.export(uri, f0)
    marker = vecfmt.open_dump(f0).manifest.extra[CHANGE_MARKER]
    assert marker["store"] == "pgvector" and isinstance(marker["xmin"], int)
    assert vecfmt.open_dump(f0).manifest.format_version == "1.0"  # a full dump stays 1.0
    expected = change(pg_db, 1)

    # exactly the rows changed, and exactly the ids deleted: nothing else was written
    manifest = delta_by_marker(monkeypatch, uri, d1, f0, expected)
    assert manifest.extra[CHANGE_MARKER]["xmin"] > marker["xmin"]
    assert manifest.digests is None
    counts = {ns.name: (ns.rows, ns.deleted, ns.rows_after) for ns in manifest.namespaces}
    assert counts == {"": (120, 40, 1_510), "other": (0, 200, 0), "added": (25, 0, 25)}
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1], "one")

    # the next delta, against the first: again by its marker, through the CLI
    expected = change(pg_db, 2)
    done = vecfmt_cli("export", uri, d2, "--since", d1)
    assert done.code == 0, done.stderr
    assert "120 added or changed rows and 40 deleted ids" in done.stdout
    assert "found by the store's change marker" in done.stdout
    assert written_ids(d2) == expected["written"] and deleted_ids(d2) == expected["deleted"]
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1, d2], "two")

    d3 = str(tmp_path / "d3")  # nothing changed: an empty delta, in JSON
    done = vecfmt_cli("export", uri, d3, "--since", d2, "--json")
    assert done.code == 0, done.stderr
    reported = json.loads(done.stdout)
    assert reported["extra"][FOUND_BY] == {"found_by": BY_MARKER} and reported["total_rows"] == 0
    assert reported["deletes"] == [] and reported["files"] == []


def test_a_transaction_open_during_the_export_and_committed_after_is_in_the_next_delta(tmp_path, pg_db):
    uri = seed(tmp_path, pg_db)
    f0, d1 = str(tmp_path / "f0"), str(tmp_path / "d1")
    with psycopg.connect(pg_db) as open_transaction:
        open_transaction.execute(
            "INSERT INTO items (namespace, id, embedding, metadata) VALUES "
            f"('', 'late', '[{','.join(['2'] * DIM)}]', '{{\"late\": true}}')")
        open_transaction.execute("UPDATE items SET metadata = '{\"late\": 1}' WHERE namespace = '' AND id = 'p-7'")
        transfer.export(uri, f0)  # while the transaction is open: its rows are not in f0
        assert "late" not in vecfmt.open_dump(f0).table("").column("id").to_pylist()
        open_transaction.commit()
    manifest = export_delta(uri, d1, f0)
    assert manifest.extra[FOUND_BY] == {"found_by": BY_MARKER}
    assert written_ids(d1) == {"": {"late", "p-7"}}
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1], "late")


# --- when the marker is not used ---------------------------------------------------------------------------


def edit_marker(dump: str, **changes: object) -> None:
    path = f"{dump}/{MANIFEST_NAME}"
    with open(path) as f:
        manifest = json.load(f)
    for key, value in changes.items():
        marker = manifest["extra"][CHANGE_MARKER]
        marker[key] = value(marker[key]) if callable(value) else value
    with open(path, "w") as f:
        json.dump(manifest, f)


@pytest.mark.parametrize("edit, why", [
    ({"table_oid": lambda oid: oid + 1}, "another table"),
    ({"system_identifier": "1"}, "another PostgreSQL cluster"),
    ({"timeline": lambda t: t + 1}, "another WAL timeline"),
    ({"xmin": lambda x: x - (1 << 31)}, "too far to compare 32-bit xmin exactly"),
    ({"xmin": lambda x: x + 1_000_000}, "transaction ids went back"),
    ({"store": "lancedb"}, "not written by a pgvector export"),
    ({"xmin": "12"}, "malformed"),
], ids=["table", "cluster", "timeline", "too-old", "future", "store", "malformed"])
def test_a_marker_that_does_not_apply_falls_back_to_digests_exactly(tmp_path, pg_db, edit, why):
    uri = seed(tmp_path, pg_db)
    f0, d1 = str(tmp_path / "f0"), str(tmp_path / "d1")
    transfer.export(uri, f0)
    edit_marker(f0, **edit)
    change(pg_db, 1)
    manifest = export_delta(uri, d1, f0)
    assert manifest.extra[FOUND_BY]["found_by"] == BY_DIGESTS
    assert why in manifest.extra[FOUND_BY]["why"]
    assert manifest.digests is not None and manifest.extra[CHANGE_MARKER]  # for the next delta
    assert {ns.name: (ns.rows, ns.deleted) for ns in manifest.namespaces} == {
        "": (120, 40), "other": (0, 200), "added": (25, 0)}
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1], "fallback")


SOURCE_COLUMN = ("ALTER TABLE items ADD COLUMN source text DEFAULT 'x'; ALTER TABLE items ALTER source DROP DEFAULT")


@pytest.mark.parametrize(("before", "after"), [
    ("", "ALTER TABLE items ADD COLUMN source text DEFAULT 'web'"),
    (SOURCE_COLUMN, "ALTER TABLE items DROP COLUMN source; ALTER TABLE items ADD COLUMN source text"),
    (SOURCE_COLUMN, "ALTER TABLE items DROP COLUMN source; ALTER TABLE items ADD COLUMN source text DEFAULT 'z'; "
                    "ALTER TABLE items ALTER source DROP DEFAULT"),
], ids=["added-with-default", "dropped-and-added-again", "added-again-with-another-missing-value"])
def test_a_column_change_that_writes_no_row_makes_digests_used(tmp_path, pg_db, before, after):
    """ADD COLUMN ... DEFAULT rewrites no row (no new xmin), yet the column is folded into every row's metadata;
    a column dropped and added again alike (hostile review: same name, type and no default) reads other values
    in every row, with no row written. The marker's column fingerprint (attnum, default, the value rows written
    before the column read) differs, so every row is compared and written."""
    uri = seed(tmp_path, pg_db)
    if before:
        run_sql(pg_db, *before.split("; "))
    f0, d1 = str(tmp_path / "f0"), str(tmp_path / "d1")
    transfer.export(uri, f0)
    run_sql(pg_db, *after.split("; "))
    manifest = export_delta(uri, d1, f0)
    assert manifest.extra[FOUND_BY]["found_by"] == BY_DIGESTS
    assert "other columns" in manifest.extra[FOUND_BY]["why"]
    assert manifest.total_rows == 1_700
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1], "column")


@pytest.mark.parametrize("column", [
    "CREATE TYPE pair AS (a int, b text); ALTER TABLE items ADD COLUMN extra_pair pair DEFAULT ROW(1, 'b')",
    "CREATE TABLE ref_t (x int); ALTER TABLE items ADD COLUMN src regclass DEFAULT 'ref_t'",
    "CREATE TYPE mood AS ENUM ('ok'); ALTER TABLE items ADD COLUMN moods mood[] DEFAULT '{ok}'",
    "CREATE TYPE mood AS ENUM ('ok'); CREATE DOMAIN dmood AS mood; ALTER TABLE items ADD COLUMN dm dmood DEFAULT 'ok'",
], ids=["composite", "regclass", "enum-array", "enum-domain"])
def test_a_column_that_reads_differently_when_another_object_is_renamed_gives_no_marker(tmp_path, pg_db, column):
    """Hostile review: ALTER TYPE ... RENAME ATTRIBUTE, a renamed table behind regclass, an enum label renamed
    behind an array or a domain change rows' text with no row written, which no fingerprint of the table holds."""
    uri = seed(tmp_path, pg_db)
    run_sql(pg_db, *column.split("; "))
    assert_no_marker_and_digests_used(tmp_path, pg_db, uri, uri, "renamable")


def test_without_permission_for_pg_control_system_there_is_no_marker(tmp_path, pg_db):
    uri = seed(tmp_path, pg_db)
    role, password = f"reader_{uuid.uuid4().hex[:8]}", "r3ader-pw"
    run_sql(pg_db,
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)),
            sql.SQL("GRANT SELECT ON items TO {}").format(sql.Identifier(role)),
            "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    try:
        rest = pg_db.split("@", 1)[1]
        reader = pg(f"postgresql://{role}:{password}@{rest}")
        assert_no_marker_and_digests_used(tmp_path, pg_db, reader, uri, "reader")
    finally:
        run_sql(pg_db, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)),
                sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_chain_by_marker_then_digests_then_marker_stays_exact(tmp_path, pg_db, monkeypatch):
    uri = seed(tmp_path, pg_db)
    f0, d1, d2, d3 = (str(tmp_path / name) for name in ("f0", "d1", "d2", "d3"))
    transfer.export(uri, f0)
    change(pg_db, 1)
    assert export_delta(uri, d1, f0).extra[FOUND_BY]["found_by"] == BY_MARKER
    expected = change(pg_db, 2)
    with monkeypatch.context() as patch:  # the store declines this once: d1 has no digests, the chain's rows are
        patch.setattr(PgvectorExporter, "changes_since", lambda self, marker: "declined by the test")
        second = export_delta(uri, d2, d1)
    assert second.extra[FOUND_BY] == {"found_by": BY_DIGESTS, "why": "declined by the test"}
    assert written_ids(d2) == expected["written"] and deleted_ids(d2) == expected["deleted"]
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1, d2], "digests")
    third = delta_by_marker(monkeypatch, uri, d3, d2, change(pg_db, 3))
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1, d2, d3], "marker")
    # the compacted dump records the newest marker: a delta against it reads only what changed since
    expected = change(pg_db, 4)
    compacted = str(tmp_path / "marker-compact")
    assert vecfmt.open_dump(compacted).manifest.extra[CHANGE_MARKER] == third.extra[CHANGE_MARKER]
    assert FOUND_BY not in vecfmt.open_dump(compacted).manifest.extra
    fourth = export_delta(uri, str(tmp_path / "d4"), compacted)
    assert fourth.extra[FOUND_BY] == {"found_by": BY_MARKER}
    assert written_ids(str(tmp_path / "d4")) == expected["written"]
    assert deleted_ids(str(tmp_path / "d4")) == expected["deleted"]


def test_a_row_moved_to_another_namespace_is_written_there_and_deleted_here(tmp_path, pg_db):
    uri = seed(tmp_path, pg_db)
    f0, d1 = str(tmp_path / "f0"), str(tmp_path / "d1")
    transfer.export(uri, f0)
    run_sql(pg_db, "UPDATE items SET namespace = 'other' WHERE namespace = '' AND id IN ('p-1', 'p-2')")
    manifest = export_delta(uri, d1, f0)
    assert manifest.extra[FOUND_BY] == {"found_by": BY_MARKER}
    assert written_ids(d1) == {"other": {"p-1", "p-2"}} and deleted_ids(d1) == {"": {"p-1", "p-2"}}
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1], "moved")


@pytest.mark.parametrize("statement", [
    "ALTER TABLE items ENABLE ROW LEVEL SECURITY",
    "CREATE TABLE items_child () INHERITS (items)",
], ids=["row-level-security", "inheritance"])
def test_a_table_whose_rows_can_change_without_a_new_version_has_no_marker(tmp_path, pg_db, statement):
    uri = seed(tmp_path, pg_db)
    run_sql(pg_db, statement)
    assert_no_marker_and_digests_used(tmp_path, pg_db, uri, uri, "untracked")


def test_duplicate_ids_are_refused_by_marker_too(tmp_path, pg_db, monkeypatch):
    uri = seed(tmp_path, pg_db)
    f0, d1 = str(tmp_path / "f0"), str(tmp_path / "d1")
    transfer.export(uri, f0)
    no_digest_path(monkeypatch)  # dropping the primary key changes no row: the marker still applies
    run_sql(pg_db, "ALTER TABLE items DROP CONSTRAINT items_pkey",
            "INSERT INTO items SELECT * FROM items WHERE namespace = '' AND id = 'p-3'")
    with pytest.raises(InvalidDataError, match="duplicate ids in namespace '': 'p-3'"):
        export_delta(uri, d1, f0)
    assert not (tmp_path / "d1" / MANIFEST_NAME).exists()


def test_a_delta_that_would_miss_an_added_row_is_not_written(tmp_path, pg_db, monkeypatch):
    """Every id the base lacks must be among the rows read as written since: a change set that misses one (here
    a range that leaves a row out, as a cluster restored from a file-level copy could make the marker's range
    do) is refused, not committed for a later restore or compact to find."""
    uri = seed(tmp_path, pg_db)
    f0, d1 = str(tmp_path / "f0"), str(tmp_path / "d1")
    transfer.export(uri, f0)
    run_sql(pg_db, "INSERT INTO items (namespace, id, embedding) SELECT '', 'new-' || i, "
                   f"('[' || i || repeat(',0', {DIM - 1}) || ']')::vector FROM generate_series(1, 2) i")
    missing = changes.XminChanges.__init__

    def missing_one(self, *args):
        missing(self, *args)
        self.since = sql.SQL("{} AND id <> 'new-2'").format(self.since)

    monkeypatch.setattr(changes.XminChanges, "__init__", missing_one)
    with pytest.raises(StoreError, match="namespace '': 2 ids the base does not hold are in the store, but only 1 "
                                         "of them were read as written since; the dump is not written"):
        export_delta(uri, d1, f0)
    assert not (tmp_path / "d1" / MANIFEST_NAME).exists()


def test_a_partitioned_export_records_the_marker_its_workers_read_in(tmp_path, pg_db, monkeypatch):
    """export --workers: the coordinator's snapshot is the one every worker reads, so its marker covers them,
    and the next delta reads by it; the chain stays exact."""
    from vecfmt.parallel import export_partitioned

    monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 500)  # several partitions
    uri = seed(tmp_path, pg_db)
    f0, d1 = str(tmp_path / "f0"), str(tmp_path / "d1")
    export_partitioned(uri, f0, workers=2)
    assert len(vecfmt.open_dump(f0).manifest.files) > 2
    marker = vecfmt.open_dump(f0).manifest.extra[CHANGE_MARKER]
    assert marker["store"] == "pgvector" and isinstance(marker["xmin"], int)
    delta_by_marker(monkeypatch, uri, d1, f0, change(pg_db, 1))
    assert_chain_is_a_fresh_export(tmp_path, uri, [f0, d1], "partitioned")


@pytest.mark.parametrize(("marker", "xmax", "picked"), [
    (1_000, 1_005, [1_000, 1_004]),
    (1_000, 1_000, []),  # nothing written since
    ((1 << 32) - 3, 5, [(1 << 32) - 3, (1 << 32) - 1, 3, 4]),  # the 32-bit counter wrapped between them
], ids=["in-order", "no-transaction-since", "wrapped"])
def test_the_rows_picked_are_those_whose_xmin_is_from_the_marker_up_to_the_snapshot(pg_db, marker, xmax, picked):
    """The condition ``XminChanges`` reads rows by, on the server, against xmin values a table cannot be made to
    hold (a wrapped counter needs 2^32 transactions): from the marker's xid up to the snapshot's xmax, the
    special xids 0-2 (frozen, bootstrap) never, nor the xids on either side."""
    candidates = [0, 1, 2, 3, 4, 5, 999, 1_000, 1_004, 1_005, 1_006, (1 << 31), (1 << 32) - 4, (1 << 32) - 3,
                  (1 << 32) - 1]
    condition = changes.XminChanges(None, marker, xmax).since  # type: ignore[arg-type]
    query = sql.SQL("SELECT xmin FROM (VALUES {}) AS v(xmin) WHERE {} ORDER BY 1").format(
        sql.SQL(", ").join(sql.SQL("({}::bigint)").format(sql.Literal(x)) for x in candidates), condition)
    rows = run_sql(pg_db, query)
    assert sorted(x for (x,) in rows) == sorted(picked)
