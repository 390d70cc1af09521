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


def swap(conn: psycopg.Connection, schema: str, staged: str, table: str) -> None:
    """In the caller's transaction: the staged table becomes ``table``, with the names a table created as
    ``table`` would have (``table_pkey``, ``table_embedding_hnsw_idx``) and its comment unmarked."""
    relation = sql.Identifier(schema, staged)
    oid = conn.execute("SELECT %s::regclass::oid", (relation.as_string(conn),)).fetchone()[0]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, table)))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(relation, sql.Identifier(table)))
    indexes = conn.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                           "WHERE i.indrelid = %s", (oid,)).fetchall()  # fmt: skip
    for (name,) in indexes:  # renaming an index renames the constraint it backs (the primary key)
        if name.startswith(staged):
            conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(schema, name), sql.Identifier(table + name[len(staged):])))  # fmt: skip
    constraints = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s", (oid,)).fetchall()
    for (name,) in constraints:  # PostgreSQL 18 names NOT NULL constraints after the table
        if name.startswith(staged):
            conn.execute(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(schema, table), sql.Identifier(name), sql.Identifier(table + name[len(staged):])))
    saved = saved_definitions(conn, oid)
    saved.pop(STAGING_FOR, None)
    comment = json.dumps({COMMENT_KEY: saved}, ensure_ascii=False)
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(schema, table), sql.Literal(comment)))
