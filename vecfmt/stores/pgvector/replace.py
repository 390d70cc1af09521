"""``if_exists=replace`` without a moment of data loss: the dump loads into a staged table beside the old
one (``<table>__vecfmt_replace``, marked as vecfmt's in its comment), which finish() swaps in with one
transaction (drop the old table, rename the staged one and its indexes and constraints)."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from vecfmt.errors import StoreError
from vecfmt.stores.pgvector.catalog import COMMENT_KEY, find_relation, saved_definitions
from vecfmt.stores.pgvector.connect import Target

REPLACE_SUFFIX = "__vecfmt_replace"
STAGING_FOR = "staging_for"  # key of the staged table's comment: the table it will replace


def staged_name(table: str) -> str:
    """The staged table's name, cut (at a character) to PostgreSQL's 63 bytes as the server would."""
    room = 63 - len(REPLACE_SUFFIX)
    head = table.encode()[:room].decode(errors="ignore")
    return head + REPLACE_SUFFIX


def marked(comment: str, table: str) -> str:
    """A vecfmt table comment that also says which table this staged one replaces."""
    saved = json.loads(comment)
    saved[COMMENT_KEY][STAGING_FOR] = table
    return json.dumps(saved, ensure_ascii=False)


def clear_staged(conn: psycopg.Connection, target: Target, schema: str, table: str) -> None:
    """Drop what an interrupted replace of ``table`` staged; refuse a table of that name vecfmt did not stage."""
    staged = staged_name(table)
    found = find_relation(conn, schema, staged)
    if found is None:
        return
    if found[1:] != (schema, staged) or saved_definitions(conn, found[0]).get(STAGING_FOR) != table:
        raise StoreError(f"pgvector {target.where}: table {schema}.{staged} exists and was not staged by vecfmt; "
                         f"rename or drop it to replace {schema}.{table}")  # fmt: skip
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, staged)))


def object_name(name1: str, name2: str | None, label: str) -> str:
    """The name PostgreSQL makes for an object of ``name1`` (makeObjectName: ``name1_name2_label``, the
    longer of the two names cut first so that the whole fits 63 bytes, never inside a character)."""
    one, two = name1.encode(), (name2 or "").encode()
    room = 63 - len(label.encode()) - 1 - (1 if name2 is not None else 0)
    n1, n2 = len(one), len(two)
    while n1 + n2 > room:
        if n1 > n2:
            n1 -= 1
        else:
            n2 -= 1
    head = one[:n1].decode(errors="ignore")
    middle = "" if name2 is None else "_" + two[:n2].decode(errors="ignore")
    return f"{head}{middle}_{label}"


def free_name(conn: psycopg.Connection, schema: str, name1: str, name2: str | None, label: str) -> str:
    """``object_name`` made unique in ``schema`` as PostgreSQL does it (label, label1, label2, ...)."""
    for number in range(1000):
        name = object_name(name1, name2, label if number == 0 else f"{label}{number}")
        if conn.execute("SELECT 1 FROM pg_class WHERE relnamespace = %s::regnamespace AND relname = %s",
                        (sql.Identifier(schema).as_string(conn), name)).fetchone() is None:  # fmt: skip
            return name
    raise StoreError(f"pgvector: no free name for an index of {schema}.{name1}")


def swap(conn: psycopg.Connection, schema: str, staged: str, table: str) -> None:
    """In the caller's transaction: the staged table becomes ``table``, with the names a table created as
    ``table`` would have (``table_pkey``, ``table_embedding_hnsw_idx``, PostgreSQL 18's NOT NULL
    constraints ``table_id_not_null``), made as PostgreSQL makes them (cut to 63 bytes), and its comment
    unmarked. The staged table's own names may be anything (a long name is cut and numbered)."""
    relation = sql.Identifier(schema, staged)
    oid = conn.execute("SELECT %s::regclass::oid", (relation.as_string(conn),)).fetchone()[0]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, table)))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(relation, sql.Identifier(table)))
    indexes = conn.execute(
        "SELECT c.relname, i.indisprimary, am.amname, a.attname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = %s ORDER BY i.indisprimary DESC, c.relname", (oid,)).fetchall()  # fmt: skip
    for name, primary, method, column in indexes:  # renaming an index renames the constraint it backs
        name2, label = (None, "pkey") if primary else (column, f"{method}_idx")
        if (column is None and not primary) or name == object_name(table, name2, label):
            continue  # an expression index (never staged by vecfmt), or the name is right already
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(schema, name), sql.Identifier(free_name(conn, schema, table, name2, label))))  # fmt: skip
    constraints = conn.execute(
        "SELECT c.conname, a.attname FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
        "AND a.attnum = c.conkey[1] WHERE c.conrelid = %s AND c.contype = 'n'", (oid,)).fetchall()  # fmt: skip
    for name, column in constraints:  # PostgreSQL 18 names NOT NULL constraints after the table
        wanted = object_name(table, column, "not_null")
        if name != wanted:
            conn.execute(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(schema, table), sql.Identifier(name), sql.Identifier(wanted)))  # fmt: skip
    saved = saved_definitions(conn, oid)
    saved.pop(STAGING_FOR, None)
    comment = json.dumps({COMMENT_KEY: saved}, ensure_ascii=False)
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(schema, table), sql.Literal(comment)))
