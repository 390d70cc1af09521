"""Change markers (spec 6.3): the rows of a table written since an earlier export's snapshot, found by ``xmin``.

A marker names the snapshot an export read: the cluster (``pg_control_system()``'s system identifier and the
WAL timeline), the database and the table by oid, a fingerprint of how rows become dump rows (the export's
columns and options, the session settings that shape text), and the snapshot's xmin as a 64-bit ``xid8``.
Every transaction whose rows that snapshot did not see has an xid at or after its xmin (one running then is
at or after it; one that had no xid yet gets a later one; a subtransaction's xid is later than its parent's),
and every row version it wrote (an insert, or an update of any column, TOASTed or not) carries that xid in
``xmin``. So the rows whose ``xmin`` is at or after the marker's are every row written since, plus maybe rows
written by transactions the snapshot did see (written again: harmless). Deleted rows leave no version: they
are the ids the base holds and the table no longer does, from the table's ids read in the same snapshot.

``xmin`` is a 32-bit xid, so rows are picked by the range of 32-bit xids from the marker's up to the reading
snapshot's xmax (no row it sees was written at or after that), two ranges when the counter wrapped between
them. That is exact while the snapshot is less than 2^31 xids after the marker, which is checked in that very
transaction before any row is read. A frozen row keeps its raw xmin, which may be older than 2^31 xids and
then look new: written again, never missed. The range compares ``xmin::text::bigint``, which, unlike
``age()``, PostgreSQL may evaluate in parallel workers and which costs less per row (a 1,000,000-row scan of
768-dim vectors: 1.15-1.20 s against 1.30-1.37 s with ``age(xmin) <= age(marker)``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
from psycopg import sql

from vecfmt.errors import InvalidDataError
from vecfmt.stores.base import Chunk
from vecfmt.stores.pgvector.connect import SCHEME, driver_message, log

if TYPE_CHECKING:
    from vecfmt.stores.pgvector.exporter import PgvectorExporter

MARKER_VERSION = 1
XID_SPAN = 1 << 32
# Visible xids lie within 2^31 of each other (PostgreSQL stops assigning xids 2^31 after the oldest unfrozen
# one): the marker is not used from 2^31 - 2^24 xids on.
MAX_XID_DISTANCE = (1 << 31) - (1 << 24)
FIRST_NORMAL_XID = 3  # xids 0-2 are special (invalid, bootstrap, frozen): never a transaction after the marker
# Session settings that change the text of values folded into metadata (timestamps, intervals, floats,
# bytea, money): a row unchanged since the base must read back as the base has it.
# Types whose values are oids shown by name: the text of an unchanged row changes when the object is renamed.
OID_ALIASES = ("regclass", "regtype", "regproc", "regprocedure", "regoper", "regoperator", "regconfig",
               "regdictionary", "regnamespace", "regrole", "regcollation")
OUTPUT_SETTINGS = ("TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits", "bytea_output", "lc_monetary")

# One statement, in the export's snapshot transaction. An administrator may have revoked pg_control_system()
# from PUBLIC; pg_current_snapshot() needs PostgreSQL 13. The timeline is the one WAL is written on (a
# standby: the one its last restartpoint recorded); it changes with a restore to a point in time or a
# promotion, after which transaction ids need not follow those the marker saw.
#
# Rows can also change what they read as without a new row version, which no marker could see; then there is
# no marker: a table whose rows come from elsewhere too (a view, a partitioned table whose partitions can be
# attached, inheritance children), row-level security (a policy changed shows rows written long ago). What the
# marker's column fingerprint holds covers the rest it can: columns added, dropped (also dropped and added again:
# by attnum and the missing value rows read), renamed or retyped, defaults and generated columns' expressions
# (a virtual column's is computed as it is read), enum labels. A column whose values read differently when
# another object is renamed (composite attributes, oid aliases such as regclass, enums or composites behind an
# array or a domain) has no fingerprint to hold: such a table has no marker.
_FACTS = sql.SQL(
    "SELECT s.system_identifier::text, "
    "CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) "
    "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "
    "(SELECT oid FROM pg_database WHERE datname = current_database())::bigint, "
    "pg_snapshot_xmin(pg_current_snapshot())::text, "
    "(SELECT c.relkind IN ('r', 'm') AND NOT c.relhassubclass AND NOT c.relrowsecurity FROM pg_class c "
    "WHERE c.oid = %(relid)s), "
    "NOT EXISTS (SELECT FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type e ON e.oid = "
    "CASE WHEN t.typbasetype <> 0 THEN t.typbasetype WHEN t.typcategory = 'A' THEN t.typelem END "
    "WHERE a.attrelid = %(relid)s AND a.attnum > 0 AND NOT a.attisdropped AND (t.typtype = 'c' OR "
    "e.typtype IN ('c', 'd', 'e') OR e.typcategory = 'A' OR t.oid = ANY({aliases}) OR e.oid = ANY({aliases}))), "
    "(SELECT string_agg(concat_ws(':', a.attnum, a.attname, a.atttypid, a.atttypmod, a.attgenerated, "
    "pg_get_expr(d.adbin, d.adrelid), a.atthasmissing, a.attmissingval::text, "
    "(SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = a.atttypid)"
    "), ';' ORDER BY a.attnum) FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND "
    "d.adnum = a.attnum WHERE a.attrelid = %(relid)s AND a.attnum > 0 AND NOT a.attisdropped), "
    "{settings} FROM pg_control_system() s"
).format(settings=sql.SQL(", ").join(sql.SQL("current_setting({})").format(sql.Literal(name))
                                     for name in OUTPUT_SETTINGS),
         aliases=sql.SQL("ARRAY[{}]::regtype[]").format(sql.SQL(", ").join(sql.Literal(name) for name in OID_ALIASES)))


def snapshot_marker(exporter: PgvectorExporter) -> dict[str, Any] | str:
    """The marker of the snapshot ``exporter.conn`` reads in, or why there is none.

    Read under a savepoint: an error must not end the transaction whose snapshot the export shares."""
    conn = exporter.conn
    if exporter.relid is None:
        return "a query has no change marker"
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
        return "the export's snapshot transaction is not open"
    try:
        with conn.transaction():
            row = conn.execute(_FACTS, {"relid": exporter.relid}).fetchone()
    except psycopg.Error as exc:
        message = exporter.target.clean(driver_message(exc))
        log.info("pgvector: no change marker (%s); a delta against this export compares row digests", message)
        return f"the server gives no change marker ({message})"
    system, timeline, database, xmin, trackable, plain_types, definitions, *settings = row
    if trackable and not plain_types:
        return ("a column's values can read differently with no row written, when another object is renamed (a "
                "composite type; an array or domain over an enum, composite, domain or array; an oid alias such as "
                "regclass): the table has no change marker")
    if not trackable:
        return ("the table's rows can change without a new row version (a view, a partitioned table, inheritance "
                "children or row-level security): it has no change marker")
    shape = {k: v for k, v in exporter._shape().items() if k != "indexes"}  # an index changes no row
    fingerprint = json.dumps({"shape": shape, "definitions": definitions,
                              "settings": dict(zip(OUTPUT_SETTINGS, settings, strict=True))}, sort_keys=True)
    return {"store": SCHEME, "version": MARKER_VERSION, "system_identifier": str(system), "timeline": int(timeline),
            "database_oid": int(database), "table_oid": int(exporter.relid), "xmin": int(xmin),
            "columns": hashlib.sha256(fingerprint.encode()).hexdigest()}


# marker key -> what differs when it does not match
_SAME = {
    "system_identifier": "another PostgreSQL cluster",
    "timeline": "another WAL timeline (a restore to a point in time, or a promoted standby): its transaction ids "
                "need not follow those of the base's snapshot",
    "database_oid": "another database",
    "table_oid": "another table (or the table was created again)",
    "columns": "other columns (one dropped and added again counts), export options (the table's name among "
               "them) or session settings (TimeZone, DateStyle, ...)",
}


def changes_since(exporter: PgvectorExporter, marker: dict[str, Any], now: dict[str, Any] | str) -> XminChanges | str:
    """The rows written since ``marker``'s snapshot, or why the marker cannot be proven to cover them; ``now`` is
    the marker of the exporter's own snapshot (``snapshot_marker``)."""
    if not isinstance(marker, dict) or marker.get("store") != SCHEME:
        return "the base's change marker was not written by a pgvector export"
    if marker.get("version") != MARKER_VERSION:
        return f"the base's change marker is of version {marker.get('version')!r}, this vecfmt reads {MARKER_VERSION}"
    xmin = marker.get("xmin")
    if type(xmin) is not int or not all(key in marker for key in _SAME):
        return "the base's change marker is malformed"
    if isinstance(now, str):
        return now
    for key, differs in _SAME.items():
        if marker[key] != now[key]:
            return f"the base was exported from {differs}"
    low = xmin % XID_SPAN
    if low < FIRST_NORMAL_XID:
        return "the base's change marker is malformed"
    conn = exporter._adbc_connection()
    with exporter.target.errors("cannot check the change marker"), conn.cursor() as cur:
        # In the transaction that reads the rows: its snapshot's xmax (64 bits), after every xid it sees.
        cur.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
        (xmax,) = cur.fetchone()
    distance = int(xmax) - xmin
    if distance < 0:
        return "transaction ids went back since the base's snapshot (the cluster was restored to an earlier point)"
    if distance >= MAX_XID_DISTANCE:
        return f"the base's snapshot is {distance:,} transactions back, too far to compare 32-bit xmin exactly"
    return XminChanges(exporter, low, int(xmax) % XID_SPAN)


class XminChanges:
    """``ChangeSet``: the rows whose ``xmin`` is at or after the marker's, and the ids, in the reading snapshot."""

    def __init__(self, exporter: PgvectorExporter, marker_xid: int, xmax: int) -> None:
        self.exporter = exporter
        # [marker_xid, xmax) of 32-bit xids, which holds every xid from the marker to the snapshot while they
        # are less than 2^31 apart; when the counter wrapped between them, [marker_xid, 2^32) and [3, xmax).
        xid = sql.SQL("xmin::text::bigint")
        since, until = sql.Literal(marker_xid), sql.Literal(xmax)
        if marker_xid <= xmax:
            self.since = sql.SQL("({} >= {} AND {} < {})").format(xid, since, xid, until)
        else:
            self.since = sql.SQL("({} >= {} OR ({} >= {} AND {} < {}))").format(
                xid, since, xid, sql.Literal(FIRST_NORMAL_XID), xid, until)

    def batches(self, namespace: str, *, batch_size: int) -> Iterator[Chunk]:
        query = self.exporter.select_sql(namespace, condition=self.since)
        yield from self.exporter.read(query, batch_size=batch_size)

    def ids(self, namespace: str) -> pa.Array:
        exporter = self.exporter
        with exporter.target.errors("cannot read the ids"), exporter._adbc_connection().cursor() as cur:
            cur.execute(exporter.ids_sql(namespace).as_string(exporter.conn))
            ids = cur.fetch_arrow_table().column(0)
        if ids.null_count:
            raise InvalidDataError(f"column {exporter.id_column!r} is NULL in some rows; every row needs an id")
        # an own copy, as the exporter's batches hand over: ADBC's buffers stay alive with any slice of them
        return pa.concat_arrays([chunk.cast(pa.string()) for chunk in ids.chunks] or [pa.array([], pa.string())])
