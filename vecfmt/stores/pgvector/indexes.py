"""The indexes an import builds once the rows are in: named as PostgreSQL names an index of the table
(``table_embedding_hnsw_idx``, cut to 63 bytes and numbered when taken), and built only when the table has
no index of that method on that column yet (a resumed import skips what the interrupted one built)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from vecfmt.errors import StoreError
from vecfmt.stores.pgvector.catalog import Extension
from vecfmt.stores.pgvector.connect import Target, log
from vecfmt.stores.pgvector.plan import Plan
from vecfmt.stores.pgvector.replace import free_name


@contextmanager
def phase(phase: str, what: str) -> Iterator[None]:
    """Log how long a step after the load took (``extra`` carries phase and seconds, for benchmarks)."""
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    log.info("pgvector: %s of %s took %.2fs", phase, what, seconds, extra={"phase": phase, "seconds": seconds})


def build_indexes(conn: psycopg.Connection, target: Target, plan: Plan, ext: Extension,
                  requests: list[dict[str, Any]]) -> None:  # fmt: skip
    uri = target.uri
    memory = uri.option("maintenance_work_mem", "1GB") or "1GB"
    if not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)?", memory):
        raise StoreError(f"pgvector {target.where}: maintenance_work_mem must look like 512MB or 2GB, "
                         f"not {memory!r}")  # fmt: skip
    workers = uri.int_option("workers")
    if workers is None:
        current = conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0]
        workers = max(2, int(current))
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(plan.relation)).fetchone()[0]
    conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (memory,))
    conn.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", (str(workers),))
    for request in requests:
        if _has_index(conn, plan, request["method"], request["column"]):
            continue
        options = dict(request.get("options") or {})
        if request["method"] == "ivfflat" and "lists" not in options:
            options["lists"] = max(1, rows // 1000 if rows <= 1_000_000 else int(math.sqrt(rows)))
        name = free_name(conn, plan.schema, plan.table, request["column"], f"{request['method']}_idx")
        with_sql = sql.SQL("")
        if options:
            with_sql = sql.SQL(" WITH ({})").format(sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(int(v))) for k, v in options.items()))
        statement = sql.SQL("CREATE INDEX {} ON {} USING {} ({} {}){}").format(
            sql.Identifier(name), plan.relation, sql.Identifier(request["method"]),
            sql.Identifier(request["column"]), sql.Identifier(ext.schema, request["opclass"]), with_sql)  # fmt: skip
        with phase("index", f"{request['method']} {request['opclass']} on {plan.label}.{request['column']}"):
            try:
                conn.execute(statement)
            except psycopg.errors.DiskFull:  # parallel builds need /dev/shm; build alone instead
                conn.execute("SET max_parallel_maintenance_workers = 0")
                conn.execute(statement)
    conn.execute("RESET maintenance_work_mem")
    conn.execute("RESET max_parallel_maintenance_workers")


def _has_index(conn: psycopg.Connection, plan: Plan, method: str, column: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = %s::regclass AND am.amname = %s AND a.attname = %s AND i.indisvalid",
        (plan.relation.as_string(conn), method, column)).fetchone() is not None  # fmt: skip
