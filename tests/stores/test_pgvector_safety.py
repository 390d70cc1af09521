"""pgvector data safety on real servers: a query= export cannot write, the per-namespace read can use an
index, and passwords with URI characters in them connect and never leak (both servers, fresh database)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from urllib.parse import quote, unquote, urlencode, urlsplit

import numpy as np
import psycopg
import pytest
from psycopg import sql

import vecfmt
from tests.helpers import assert_one_clear_error, vecfmt_cli
from tests.stores.test_pgvector import pg, run_sql
from vecfmt import transfer
from vecfmt.errors import StoreError
from vecfmt.stores.base import open_exporter


def _victim(dsn: str) -> None:
    run_sql(dsn, "CREATE EXTENSION vector", "CREATE TABLE t (id int PRIMARY KEY, v vector(2))",
            "INSERT INTO t VALUES (1, '[1,2]'), (2, '[3,4]')", "CREATE TABLE victim (x int)",
            "INSERT INTO victim VALUES (1), (2), (3)")  # fmt: skip


# --- 11: query= is read-only and one statement ----------------------------------------------------------

# Closes the wrapper's parenthesis, ends the read-only transaction, writes, and reopens a parenthesis.
ESCAPES = [
    "SELECT id, v FROM t) s; COMMIT; DELETE FROM victim; SELECT * FROM (SELECT 1",
    "SELECT id, v FROM t) s; COMMIT; SET default_transaction_read_only = off; DELETE FROM victim; "
    "SELECT * FROM (SELECT 1",
    "WITH gone AS (DELETE FROM victim RETURNING x) SELECT id, v FROM t",  # one statement that writes
]


@pytest.mark.parametrize("query", ESCAPES)
def test_a_query_export_cannot_write(tmp_path, pg_db, query):
    _victim(pg_db)
    with pytest.raises(StoreError) as caught:
        transfer.export(pg(pg_db, None, query=query), str(tmp_path / "d"))
    assert "\n" not in str(caught.value)
    assert run_sql(pg_db, "SELECT count(*) FROM victim") == [(3,)]
    run = vecfmt_cli("export", pg(pg_db, None, query=query), str(tmp_path / "e"))
    assert_one_clear_error(run, "pgvector")
    assert run_sql(pg_db, "SELECT count(*) FROM victim") == [(3,)]


@pytest.mark.parametrize("source", [{"table": "t"}, {"table": None, "query": "SELECT id, v FROM t"}])
def test_every_export_connection_is_read_only(tmp_path, pg_db, source):
    """Read-only for the whole session (not just the first transaction), on the inspecting psycopg
    connection and on the ADBC connection that runs the COPY."""
    _victim(pg_db)
    exporter = open_exporter(pg(pg_db, **source))
    try:
        assert exporter.conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        with exporter._adbc_connection().cursor() as cur:
            cur.execute("SELECT current_setting('default_transaction_read_only')")
            assert cur.fetchone() == ("on",)
        assert sum(chunk.batch.num_rows for chunk in exporter.batches(exporter.slices("")[0], batch_size=10)) == 2
    finally:
        exporter.close()


def test_a_query_export_still_works_with_libpq_options(tmp_path, pg_db):
    _victim(pg_db)
    uri = pg(pg_db, None, query="SELECT id, v FROM t WHERE id > 1", options="-c statement_timeout=60000")
    manifest = transfer.export(uri, str(tmp_path / "d"))
    assert manifest.namespaces[0].rows == 1


# --- 13: one namespace's rows come from an index, not a scan of the whole table ---------------------------


def _plan(dsn: str, query: str) -> str:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET enable_seqscan = off")  # a plan that could use the index must use it now
        return "\n".join(row[0] for row in conn.execute(f"EXPLAIN {query}"))


def test_the_namespace_filter_can_use_an_index(tmp_path, pg_db):
    run_sql(pg_db, "CREATE EXTENSION vector",
            "CREATE TABLE items (id int PRIMARY KEY, embedding vector(2), namespace text)",
            "INSERT INTO items SELECT i, '[1,2]', CASE i % 100 WHEN 0 THEN NULL WHEN 1 THEN '' "
            "ELSE 'ns' || (i % 100) END FROM generate_series(1, 20000) i",
            "CREATE INDEX ON items (namespace)", "ANALYZE items")  # fmt: skip
    exporter = open_exporter(pg(pg_db))
    try:
        counts = exporter.describe().namespaces
        queries = {ns: exporter.select_sql(ns).as_string(exporter.conn) for ns in ("", "ns5", "it's")}
    finally:
        exporter.close()
    assert len(counts) == 99 and counts[""] == 400 and counts["ns5"] == 200  # NULL and '' are both ""
    for namespace, query in queries.items():
        plan = _plan(pg_db, query)
        assert "Seq Scan" not in plan and "Index" in plan, (namespace, plan)
    manifest = transfer.export(pg(pg_db), str(tmp_path / "d"))
    rows = {ns.name: ns.rows for ns in manifest.namespaces}
    assert rows[""] == 400 and rows["ns5"] == 200 and sum(rows.values()) == 20000
    ids = vecfmt.open_dump(str(tmp_path / "d")).table("").column("id").to_pylist()
    assert sorted(map(int, ids)) == [i for i in range(1, 20001) if i % 100 in (0, 1)]


@pytest.mark.parametrize("column_type", ["int", "varchar(10)"])
def test_other_namespace_column_types_still_export_every_row(tmp_path, pg_db, column_type):
    empty = "NULL" if column_type == "int" else "''"
    run_sql(pg_db, "CREATE EXTENSION vector",
            f"CREATE TABLE items (id int PRIMARY KEY, embedding vector(2), namespace {column_type})",
            f"INSERT INTO items SELECT i, '[1,2]', CASE WHEN i % 3 = 0 THEN NULL WHEN i % 3 = 1 THEN {empty} "
            "ELSE (i % 2)::text::" + column_type.split("(")[0] + " END FROM generate_series(1, 60) i")  # fmt: skip
    manifest = transfer.export(pg(pg_db), str(tmp_path / "d"))
    rows = {ns.name: ns.rows for ns in manifest.namespaces}
    assert rows == {"": 40, "0": 10, "1": 10}


# --- 12: passwords holding URI characters ----------------------------------------------------------------

PASSWORDS = ["pa?ss", "pa#ss", "pa/ss", "p@ss", "pa%3Fss", "a:b"]


def _forms(password: str) -> list[str]:
    return [password, unquote(password), quote(password, safe=""), quote(unquote(password), safe="")]


def _fragments(password: str) -> list[str]:
    """The pieces between URI characters: a password cut short leaks one of these."""
    return [p for p in re.split(r"[?#/@%:]", password) if len(p) >= 4]


def _assert_no_leak(text: str, password: str) -> None:
    for piece in _forms(password) + _fragments(password):
        assert piece not in text, (piece, text)


@pytest.fixture
def role_with(pg_db):
    """A function making a login role with a given password that may read ``items``; dropped after."""
    made: list[str] = []

    def make(password: str) -> tuple[str, str]:
        name = f"vecfmt_pw_{uuid.uuid4().hex[:10]}"
        run_sql(pg_db, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)),
                sql.SQL("GRANT SELECT ON items TO {}").format(sql.Identifier(name)))  # fmt: skip
        made.append(name)
        url = urlsplit(pg_db)
        return name, f"{url.hostname}:{url.port}{url.path}"

    yield make
    for name in made:
        run_sql(pg_db, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)),
                sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))  # fmt: skip


def _items(dsn: str) -> None:
    run_sql(dsn, "CREATE EXTENSION vector", "CREATE TABLE items (id int PRIMARY KEY, embedding vector(2))",
            "INSERT INTO items VALUES (1, '[1,2]'), (2, '[3,4]'), (3, '[5,6]')")  # fmt: skip


def _uri(user: str, password: str, where: str) -> str:
    return f"pgvector://{user}:{password}@{where}?{urlencode({'table': 'items'})}"


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_with_uri_characters_connects_and_never_leaks(tmp_path, pg_db, role_with, caplog, password):
    caplog.set_level(logging.DEBUG)
    _items(pg_db)
    user, where = role_with(password)
    # Percent-encoded, as users should write it: connects.
    manifest = transfer.export(_uri(user, quote(password, safe=""), where), str(tmp_path / "encoded"))
    assert manifest.namespaces[0].rows == 3
    _assert_no_leak((tmp_path / "encoded" / "manifest.json").read_text(), password)
    # As written, unencoded: connects, or fails with one line that holds no part of it.
    raw = _uri(user, password, where)
    if password == "p@ss":  # documented: an '@' inside the password must be written %40
        with pytest.raises(StoreError, match="as %40") as caught:
            transfer.export(raw, str(tmp_path / "raw"))
        _assert_no_leak(str(caught.value), password)
    elif password == "pa%3Fss":  # a URI's %3F means "?": this is another password
        with pytest.raises(StoreError, match="password authentication failed") as caught:
            transfer.export(raw, str(tmp_path / "raw"))
        _assert_no_leak(str(caught.value), password)
    else:
        manifest = transfer.export(raw, str(tmp_path / "raw"))
        assert manifest.namespaces[0].rows == 3
        _assert_no_leak((tmp_path / "raw" / "manifest.json").read_text(), password)
        assert json.loads((tmp_path / "raw" / "manifest.json").read_text())["source"]["kind"] == "pgvector"
    run = vecfmt_cli("export", raw, str(tmp_path / "cli"))
    _assert_no_leak(run.stdout + run.stderr, password)
    if password in ("p@ss", "pa%3Fss"):
        assert_one_clear_error(run)
    else:
        assert run.code == 0, run
        _assert_no_leak((tmp_path / "cli" / "manifest.json").read_text(), password)
    # A wrong password with the same characters: one clear line, none of it shown.
    wrong = f"Wr0ng{password}Xyz7"
    with pytest.raises(StoreError) as caught:
        transfer.export(_uri(user, wrong, where), str(tmp_path / "wrong"))
    assert "\n" not in str(caught.value)
    _assert_no_leak(str(caught.value), wrong)
    run = vecfmt_cli("export", _uri(user, wrong, where), str(tmp_path / "wrong-cli"))
    assert_one_clear_error(run)
    _assert_no_leak(run.stdout + run.stderr, wrong)
    _assert_no_leak(caplog.text, password)
    _assert_no_leak(caplog.text, wrong)


def test_search_of_the_default_namespace_finds_null_and_empty_namespaces(pg_db):
    """search(namespace="") sees the rows an export files under "": NULL and '' namespaces alike."""
    run_sql(pg_db, "CREATE EXTENSION vector",
            "CREATE TABLE items (id text PRIMARY KEY, embedding vector(2), namespace text)",
            "INSERT INTO items VALUES ('null-ns', '[1,0]', NULL), ('empty-ns', '[0.9,0.1]', ''), "
            "('other', '[1,0]', 'b')")  # fmt: skip
    exporter = open_exporter(pg(pg_db, metric="cosine"))
    try:
        found = exporter.search(np.array([1, 0], np.float32), 10, namespace="")
        assert sorted(i for i, _ in found) == ["empty-ns", "null-ns"]
        assert [i for i, _ in exporter.search(np.array([1, 0], np.float32), 10, namespace="b")] == ["other"]
    finally:
        exporter.close()
