"""What keeps an import to itself and its rows loadable: one import per target at a time (a session-level
advisory lock held from prepare to close), and text that PostgreSQL cannot store found before the COPY."""

from __future__ import annotations

import time

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.schema import ID
from vecfmt.stores.pgvector.connect import Target

# The first key of the lock's pair: a constant, so these locks never meet the progress table's.
LOCK_CLASS = "vecfmt import"
LOCK_RETRY_SECONDS = 1.0  # a killed run's idle backend notices its client is gone within moments


def hold_target(conn: psycopg.Connection, target: Target, key: str) -> None:
    """Take the import lock of ``key`` (schema.table) for this session, or refuse at once. The lock goes
    with the session, so a killed import's lock is released as soon as its server backend ends (which,
    for a backend busy with an index build, is when that build is done)."""
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    while True:
        got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", (LOCK_CLASS, key)).fetchone()
        if got is not None and got[0]:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise StoreError(f"pgvector {target.where}: another vecfmt import into {key} is running, or the server is "
                     "still finishing a killed one's last step (such as its index build); try again once it "
                     "has ended")  # fmt: skip


def check_text(batch: pa.RecordBatch, columns: list[str], first_row: int) -> None:
    """PostgreSQL text holds no NUL byte: name the first row that has one (its row number in the dump
    and its id) instead of the server's 'invalid byte sequence'. One vectorised pass per column."""
    for name in columns:
        column = batch.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        found = pc.index(pc.match_substring(column, "\x00"), True).as_py()
        if found >= 0:
            what = "the id" if name == ID else f"column {name!r}"
            raise InvalidDataError(f"{what} of row {first_row + found:,} of the dump (id "
                                   f"{batch.column(ID)[found].as_py()!r}) holds a NUL byte, which PostgreSQL "
                                   "text cannot store")  # fmt: skip
