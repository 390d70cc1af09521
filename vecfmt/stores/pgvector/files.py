"""The progress of an import with several workers (``vecfmt.parallel.import_partitioned``): which of the
dump's files are in the target. Each worker commits a file's rows together with its row in
``vecfmt_import_files`` (same schema as the table), whose primary key lets a file in at most once: a second
attempt at the same file (a retry while the first still commits) finds the row and rolls its rows back.

The table sits beside ``vecfmt_import_progress`` and is guarded by the same advisory lock (taken shared to
write, alone to drop): it is created with a prepared import and dropped with the last of its rows."""

from __future__ import annotations

import psycopg
from psycopg import sql

FILES_TABLE = "vecfmt_import_files"


def create(conn: psycopg.Connection, table: sql.Identifier) -> None:
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (target text NOT NULL, dump text NOT NULL, path text NOT NULL, "
        "rows bigint NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (target, path))"
    ).format(table))  # fmt: skip


def forget(conn: psycopg.Connection, table: sql.Identifier, target: str) -> None:
    """Delete every file row of ``target`` (a new import of it starts, or its import ended)."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE target = %s").format(table), (target,))


def loaded(conn: psycopg.Connection, table: sql.Identifier, target: str, dump: str | None) -> dict[str, int]:
    """The files of ``dump`` committed into ``target``, with their rows."""
    rows = conn.execute(sql.SQL("SELECT path, rows FROM {} WHERE target = %s AND dump = %s").format(table),
                        (target, dump)).fetchall()  # fmt: skip
    return {path: int(count) for path, count in rows}


def is_loaded(cur: psycopg.Cursor, table: sql.Identifier, target: str, path: str) -> bool:
    return cur.execute(sql.SQL("SELECT 1 FROM {} WHERE target = %s AND path = %s").format(table),
                       (target, path)).fetchone() is not None  # fmt: skip


def record(cur: psycopg.Cursor, files: sql.Identifier, progress: sql.Identifier, target: str, dump: str,
           path: str, rows: int) -> bool:  # fmt: skip
    """In the file's transaction: its row, written only while the target's progress row is this dump's.
    False when nothing was written: the file is in already (another attempt committed it, perhaps while
    this one waited on its key) or the progress row was taken over (the caller tells them apart)."""
    cur.execute(sql.SQL(
        "INSERT INTO {} (target, dump, path, rows) SELECT %s, %s, %s, %s WHERE EXISTS "
        "(SELECT 1 FROM {} WHERE target = %s AND dump = %s) ON CONFLICT (target, path) DO NOTHING"
    ).format(files, progress), (target, dump, path, rows, target, dump))  # fmt: skip
    return cur.rowcount == 1


def drop_if_empty(conn: psycopg.Connection, table: sql.Identifier) -> None:
    if conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table)).fetchone()[0]:
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
