"""Import: prepare the table (create, or map onto one that exists), load each batch with one binary COPY
committed together with a progress row, then build the primary key and indexes and analyse.

An import with several workers (``vecfmt.parallel.import_partitioned``) splits that: the coordinator's
importer prepares the table (``prepare_partitioned``) and finishes it; each worker's importer attaches to
the prepared table (``attach``: found through the progress row) and loads whole files, each in one
transaction with its row in ``vecfmt_import_files`` (``load_file``, ``files.py``)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from vecfmt.errors import StoreError
from vecfmt.manifest import FileEntry, Manifest
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_VALUES, VALUES
from vecfmt.stores.base import IfExists, StoreURI
from vecfmt.stores.pgvector import files
from vecfmt.stores.pgvector.catalog import (
    HNSW_MAX_SPARSE_NNZ,
    PLAIN_STORAGE_MAX_DIM,
    SPARSE_TYPE_NAME,
    Extension,
    column_list,
    find_extension,
    find_relation,
    table_identity,
)
from vecfmt.stores.pgvector.connect import SCHEME, Target, log
from vecfmt.stores.pgvector.copy_binary import (
    COPY_HEADER,
    COPY_TRAILER,
    DENSE_TYPES,
    MAX_SPARSE_NNZ,
    CopyRows,
    check_sparse,
    encode_dense,
    encode_id,
    sparse_payload,
)
from vecfmt.stores.pgvector.guard import check_text, hold_target
from vecfmt.stores.pgvector.indexes import build_indexes, phase
from vecfmt.stores.pgvector.loader import Job, Loader, refused_rows, transaction
from vecfmt.stores.pgvector.plan import (
    STAGING_METADATA,
    Plan,
    check_unique_key,
    definitions_comment,
    index_requests,
    plan_existing,
    plan_new,
)
from vecfmt.stores.pgvector.replace import clear_staged, marked, staged_name, swap
from vecfmt.stores.pgvector.search import nearest

PROGRESS_TABLE = "vecfmt_import_progress"
STAGING_TABLE = "vecfmt_staging"
# Loading connections: 2 measured ~10-15% faster than one on 2 cores (PG 15 and 18); one per core beyond
# that, at most 8 (the server's cores are usually at least the client's).
DEFAULT_PARALLEL = min(8, max(2, os.cpu_count() or 2))
DEFAULT_LOCK_TIMEOUT = "5s"  # a lock held elsewhere stops the import with a clear error instead of a hang


class PgvectorImporter:
    def __init__(self, uri: StoreURI) -> None:
        self.target = Target(uri)
        if self.target.table is None:
            raise StoreError(f"pgvector {self.target.where} needs the option table=NAME")
        if self.target.query is not None:
            raise StoreError(f"pgvector {self.target.where}: query= is for exports only")
        self.lock_timeout = uri.option("lock_timeout", DEFAULT_LOCK_TIMEOUT) or DEFAULT_LOCK_TIMEOUT
        if not re.fullmatch(r"\d+\s*(us|ms|s|min|h|d)?", self.lock_timeout):
            raise StoreError(f"pgvector {self.target.where}: lock_timeout must look like 5s, 500ms or 2min "
                             f"(0: wait for ever), not {self.lock_timeout!r}")  # fmt: skip
        self.conn: psycopg.Connection | None = None
        self.plan: Plan | None = None
        self.ext: Extension | None = None
        self.dump_identity: str | None = None
        self.staging = False  # upsert or folded columns: COPY into a temp table, then INSERT ... SELECT
        self.upsert = False
        self.pending: dict[str, Any] = {}  # work left for finish(): primary key, indexes
        self._loader: Loader | None = None
        self._extra_conns: list[psycopg.Connection] = []
        self._created = False
        self._committed = 0  # batches committed by this run
        self._resumed_from = 0
        self._progress_written = False  # by this run: only then is the progress row ours to delete
        self._finished = False
        self.key = ""  # the target's progress row: schema.table (also while a replace loads a staged table)
        self.staged_for: str | None = None  # replace: the table the staged one (self.plan's) swaps in for
        self._rows_done = 0  # the dump's rows committed (what a resume skips)
        self._replace_aborted = False  # abort() of a replace: the old table stays, nothing of the dump is in it
        self.partitioned = False  # prepare_partitioned(): workers load the files; this one prepares and finishes
        self.attached = False  # attach(): a worker of an import with several workers

    def _connect(self) -> psycopg.Connection:
        conn = self.target.connect()
        with self.target.errors("cannot connect"):
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (self.lock_timeout,))
            # A commit the server acknowledged must survive a crash of the server, or the rows a failed
            # import reports as committed (and resume would skip) could be more than it kept: with
            # synchronous_commit=off a backend crash loses the last acknowledged commits. One WAL flush
            # per batch (thousands of rows) costs nothing measurable; stronger settings are kept.
            conn.execute("SELECT set_config('synchronous_commit', 'local', false) "
                         "WHERE current_setting('synchronous_commit') = 'off'")
        return conn

    def identity(self) -> tuple[str, ...]:
        """The table this writes, as the server resolves it (``copy`` refuses to write what it reads)."""
        if self.conn is None:
            self.conn = self._connect()
        with self.target.errors("cannot resolve the target table"):
            return table_identity(self.conn, SCHEME, self.target.schema, self.target.table)  # type: ignore[arg-type]

    @contextmanager
    def _waits_for(self, label: str, hint: str = "") -> Iterator[None]:
        """A lock held elsewhere past ``lock_timeout``: one line that names the table."""
        try:
            yield
        except psycopg.errors.LockNotAvailable:
            raise StoreError(f"pgvector {self.target.where}: table {label} is locked by another session (waited "
                             f"lock_timeout={self.lock_timeout}{hint}); try again once it is free, or wait "
                             "longer with lock_timeout=") from None  # fmt: skip

    # -- prepare --

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        t = self.target
        self.conn = self.conn or self._connect()
        conn = self.conn
        self.dump_identity = _dump_identity(manifest)
        with t.errors("cannot prepare the import"):
            self.ext = self._ensure_extension()
            schema = t.schema or conn.execute("SELECT current_schema()").fetchone()[0]
            if schema is None:
                raise StoreError(f"pgvector {t.where}: no schema to create the table in; pass schema=NAME")
            self.key = f"{schema}.{t.table}"
            hold_target(conn, t, self.key)  # until close(): one import per target at a time
            with self._waits_for(self.key):
                return self._prepare(manifest, schema, if_exists, resume)
        return 0  # unreachable: errors() re-raises

    def prepare_partitioned(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> None:
        """The coordinator of an import with several workers: prepare the table as ``prepare`` does (and
        take the import's lock until ``close``), record in the progress row that the dump's files load in
        any order, and load nothing: workers ``attach`` and ``load_file``; ``files_loaded`` tells which
        files are in; ``finish`` then builds the key and indexes (and swaps a replace in)."""
        self.partitioned = True
        self.prepare(manifest, if_exists=if_exists, resume=resume)

    def files_loaded(self) -> dict[str, int]:
        """The dump's files committed into the target by the workers of this import (or of the interrupted
        run it resumes), with their rows."""
        if self.conn is None or self.plan is None:
            raise StoreError("pgvector: files_loaded() before prepare_partitioned()")
        with self.target.errors("cannot read which files the import loaded"), self.conn.transaction():
            self._lock_progress(exclusive=False)
            if find_relation(self.conn, self.plan.schema, files.FILES_TABLE) is None:
                return {}
            return files.loaded(self.conn, self.files_table, self.key, self.dump_identity)

    def attach(self, manifest: Manifest) -> None:
        """A worker of an import with several workers: load into the table the coordinator prepared (its
        progress row says which table, and that it is this dump's), on one connection; no lock is taken
        (the coordinator holds the import's) and nothing is created."""
        t = self.target
        self.conn = self.conn or self._connect()
        self.dump_identity = _dump_identity(manifest)
        self.attached = True
        with t.errors("cannot join the import"):
            schema = t.schema or self.conn.execute("SELECT current_schema()").fetchone()[0]
            self.key = f"{schema}.{t.table}"
            progress = self._progress(schema) if schema is not None else None
            if progress is None or progress["dump"] != self.dump_identity or not progress["pending"].get("files"):
                raise StoreError(f"pgvector {t.where}: no import of this dump into {self.key} with several workers "
                                 "is prepared (or it has finished)")  # fmt: skip
            self.pending = progress["pending"]
            staged = self.pending.get("staged")
            found = find_relation(self.conn, schema, staged or t.table)  # type: ignore[arg-type]
            if found is None:
                raise StoreError(f"pgvector {t.where}: the table this import loads, {schema}.{staged or t.table}, "
                                 "is gone")  # fmt: skip
            self.plan = plan_existing(t, self.conn, manifest, schema, found[0])
            if staged is not None:
                self.plan.table, self.staged_for = staged, t.table
            self._statements([self.conn])

    def load_file(self, entry: FileEntry, batches: Iterable[pa.RecordBatch], first_row: int) -> bool:
        """An attached worker: load one file's rows (``first_row``: the dump's row number of its first,
        for messages) in one transaction that also records the file, so it is in the target exactly once.
        False, with nothing written and ``batches`` not read, when it is in already."""
        if not self.attached or self.plan is None or self.conn is None:
            raise StoreError("pgvector: load_file() before attach()")
        t, plan, conn = self.target, self.plan, self.conn
        self._check_namespace(entry.namespace)
        text = [ID] + [dest.source for dest in (plan.metadata, plan.document) if dest is not None]
        try:
            with t.errors(f"cannot load {entry.path}"), self._waits_for(plan.label), refused_rows(t), \
                    transaction(conn), conn.cursor() as cur:  # fmt: skip
                if files.is_loaded(cur, self.files_table, self.key, entry.path):
                    raise _LoadedAlready
                position = first_row
                for batch in batches:
                    check_text(batch, text, position)
                    with cur.copy(self.copy_sql) as copy:
                        for part in self.encode(batch, entry.namespace):
                            copy.write(part)
                    if self.staging:
                        cur.execute(self.insert_sql)  # per batch: the staging table empties only at commit
                        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGING_TABLE)))
                    position += batch.num_rows
                self._lock_progress(exclusive=False)  # at the end: the lock is held until the commit
                if not files.record(cur, self.files_table, self.progress_table, self.key, self.dump_identity,
                                    entry.path, position - first_row):  # type: ignore[arg-type]  # fmt: skip
                    if files.is_loaded(cur, self.files_table, self.key, entry.path):
                        raise _LoadedAlready  # another attempt committed it while this one loaded
                    self._check_progress_row(0)
        except _LoadedAlready:
            return False
        return True

    def _prepare(self, manifest: Manifest, schema: str, if_exists: IfExists, resume: bool) -> int:
        t, conn = self.target, self.conn
        assert conn is not None and t.table is not None
        found = find_relation(conn, schema, t.table)
        progress = unfinished = self._progress(schema)
        if progress is not None and progress["dump"] != self.dump_identity:
            progress = None  # another dump's (or a copy's): not ours to resume
        staged = (progress or {}).get("pending", {}).get("staged")
        staged_found = find_relation(conn, schema, staged) if staged else None
        if resume and progress is not None and (found is not None if staged is None else staged_found):
            was_partitioned = bool(progress["pending"].get("files"))
            ran_as = progress["pending"].get("if_exists")  # None: recorded by a vecfmt before this check
            if ran_as is not None and ran_as != if_exists.value:
                raise StoreError(f"pgvector {t.where}: the interrupted import of this dump into {self.key} ran with "
                                 f"if_exists {ran_as}; resume it with the same (this run changed nothing)")
            if was_partitioned != self.partitioned:
                how = "with" if was_partitioned else "without"
                raise StoreError(f"pgvector {t.where}: the interrupted import of this dump into {self.key} loaded "
                                 f"its files {how} workers (--workers); resume it {how} them")  # fmt: skip
            self.pending = progress["pending"]
            relid = found[0] if staged_found is None else staged_found[0]  # type: ignore[index]
            self.plan = plan_existing(t, conn, manifest, schema, relid)
            if staged is not None:  # an interrupted replace: the staged table is the one loading
                self.plan.table, self.staged_for = staged, t.table
            if not self.partitioned:
                self._start()
            self._resumed_from = self._rows_done = int(progress["rows"])
            log.info("pgvector: resuming the import into %s after %d rows", self.plan.label, progress["rows"])
            return int(progress["rows"])
        if resume and found is not None and self.dump_identity is not None:
            raise StoreError(
                f"pgvector {t.where}: nothing to resume in table {schema}.{t.table}: no interrupted import of this "
                "dump (with the namespaces chosen) is in it (it finished, or was of another dump or other "
                "namespaces); resume with the target and --namespace of the interrupted import, or run without resume"
            )
        if found is not None and if_exists == IfExists.FAIL:
            interrupted = "" if progress is None or self.dump_identity is None else (
                "; an interrupted import of this dump is in it: resume it" if progress["pending"].get("files") else
                f"; an interrupted import of this dump committed {progress['rows']:,} rows: resume it")
            raise StoreError(
                f"pgvector {t.where}: table {schema}.{t.table} already exists (choose if_exists append, "
                f"upsert or replace){interrupted}"
            )
        if found is not None and if_exists in (IfExists.APPEND, IfExists.UPSERT):
            if unfinished is not None and unfinished["pending"].get("primary_key") and "staged" not in unfinished[
                    "pending"]:  # fmt: skip
                raise StoreError(
                    f"pgvector {t.where}: table {schema}.{t.table} was created by an import that did not finish (it "
                    "has no primary key yet, so ids could repeat): resume that import (--resume), or replace the "
                    "table; this run changed nothing")
            self.plan = plan_existing(t, conn, manifest, schema, found[0])
            self.upsert = if_exists == IfExists.UPSERT
            if self.upsert:
                check_unique_key(t, conn, self.plan, found[0])
            self.pending = {"upsert": self.upsert, "if_exists": if_exists.value}
            if self.partitioned:
                self.pending["files"] = True
            with conn.transaction():
                self._save_progress(0)
                self._reset_files()
        else:
            self.plan = plan_new(t, conn, manifest, schema)
            self._comment = definitions_comment(manifest, self.plan)
            self.pending = {"primary_key": True, "indexes": index_requests(t, self.plan, manifest),
                            "if_exists": if_exists.value}
            if self.partitioned:
                self.pending["files"] = True
            if found is not None:  # replace: load beside the old table, swapped in by finish()
                self.staged_for, self.plan.table = t.table, staged_name(t.table)
                self._comment = marked(self._comment, t.table)
                self.pending["staged"] = self.plan.table
            with conn.transaction():
                if found is not None:
                    clear_staged(conn, t, schema, t.table)
                self._create_table()
                self._save_progress(0)
                self._reset_files()
            self._created = True  # dropped again if the import fails before its first commit
        if not self.partitioned:
            self._start()
        return 0

    def _ensure_extension(self) -> Extension:
        assert self.conn is not None
        ext = find_extension(self.conn)
        if ext is not None:
            return ext
        available = self.conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        if available is None:
            raise StoreError(f"pgvector {self.target.where}: the pgvector extension is not installed on the server")
        try:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            raise StoreError(
                f"pgvector {self.target.where}: not allowed to create the pgvector extension; ask an "
                "administrator to run CREATE EXTENSION vector in this database"
            ) from None
        ext = find_extension(self.conn)
        assert ext is not None
        return ext

    def _lock_progress(self, *, exclusive: bool) -> None:
        """The schema's progress table is shared by every import into it: whoever creates it or adds a row
        holds this (transaction) lock shared, and whoever drops it holds it alone, so a table one import
        drops is never one another is about to write to (item 17)."""
        assert self.conn is not None
        lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        with self._waits_for(self.progress_label):
            self.conn.execute(sql.SQL("SELECT {}(hashtext(%s), hashtext(%s))").format(sql.Identifier(lock)),
                              (self.progress_label, PROGRESS_TABLE))  # fmt: skip

    def _progress(self, schema: str) -> dict[str, Any] | None:
        assert self.conn is not None
        self.progress_table = sql.Identifier(schema, PROGRESS_TABLE)
        self.progress_label = f"{schema}.{PROGRESS_TABLE}"
        self.files_table = sql.Identifier(schema, files.FILES_TABLE)
        with self.conn.transaction():
            self._lock_progress(exclusive=False)
            if find_relation(self.conn, schema, PROGRESS_TABLE) is None:
                return None
            row = self.conn.execute(
                sql.SQL("SELECT dump, rows_done, pending FROM {} WHERE target = %s").format(self.progress_table),
                (self.key,),
            ).fetchone()
        return None if row is None else {"dump": row[0], "rows": row[1], "pending": row[2]}

    def _save_progress(self, rows_done: int) -> None:
        """Record (in the caller's transaction) that ``rows_done`` rows of this dump are committed."""
        assert self.conn is not None and self.plan is not None
        self._lock_progress(exclusive=False)
        self.conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (target text PRIMARY KEY, dump text, rows_done bigint NOT NULL, "
            "pending jsonb NOT NULL DEFAULT '{{}}', updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(self.progress_table))  # fmt: skip
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (target, dump, rows_done, pending) VALUES (%s, %s, %s, %s) ON CONFLICT (target) "
                "DO UPDATE SET dump = EXCLUDED.dump, rows_done = EXCLUDED.rows_done, pending = EXCLUDED.pending, "
                "updated_at = now()"
            ).format(self.progress_table),
            (self.key, self.dump_identity, rows_done, psycopg.types.json.Jsonb(self.pending)),
        )
        self._progress_written = True

    def _reset_files(self) -> None:
        """A fresh start (in ``_save_progress``'s transaction): no file of an earlier import of this target
        counts as loaded; an import with workers gets the table its workers record files in."""
        assert self.conn is not None and self.plan is not None
        if self.partitioned:
            files.create(self.conn, self.files_table)
        if self.partitioned or find_relation(self.conn, self.plan.schema, files.FILES_TABLE) is not None:
            files.forget(self.conn, self.files_table, self.key)

    def _create_table(self) -> None:
        assert self.conn is not None and self.plan is not None and self.ext is not None
        plan, ext = self.plan, self.ext
        id_type = {"text": "text", "varchar": "varchar", "bpchar": "text", "int2": "smallint",
                   "int4": "integer", "int8": "bigint", "uuid": "uuid"}[plan.id.typname]  # fmt: skip
        columns = [sql.SQL("{} {} NOT NULL").format(sql.Identifier(plan.id.name), sql.SQL(id_type))]
        if plan.namespace is not None:
            columns.append(sql.SQL("{} text NOT NULL DEFAULT ''").format(sql.Identifier(plan.namespace.name)))
        for dest in plan.dense:
            null = sql.SQL(" NOT NULL") if dest.source == VALUES else sql.SQL("")
            columns.append(sql.SQL("{} {}{}").format(sql.Identifier(dest.name), ext.type(dest.typname, dest.dimension),
                                                     null))  # fmt: skip
        if plan.sparse is not None:
            columns.append(sql.SQL("{} {}").format(sql.Identifier(plan.sparse.name),
                                                   ext.type(SPARSE_TYPE_NAME, plan.sparse.dimension)))  # fmt: skip
        if plan.metadata is not None and plan.metadata_in_table:
            columns.append(sql.SQL("{} jsonb").format(sql.Identifier(plan.metadata.name)))
        if plan.document is not None:
            columns.append(sql.SQL("{} text").format(sql.Identifier(plan.document.name)))
        for name, type_name in plan.folded:
            columns.append(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_name)))  # server-made name
        self.conn.execute(sql.SQL("CREATE TABLE {} ({})").format(plan.relation, sql.SQL(", ").join(columns)))
        # COMMENT takes no parameters; Literal quotes the JSON (a manifest's text) as one string constant.
        self.conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(plan.relation, sql.Literal(self._comment)))
        storage = self.target.uri.option("storage", "auto") or "auto"
        if storage not in ("auto", "plain", "external", "default"):
            raise StoreError(f"pgvector {self.target.where}: storage must be plain, external or default, "
                             f"not {storage!r}")  # fmt: skip
        for dest in plan.dense:
            # Inline vectors (no TOAST) load ~1.4x faster and scan faster, as long as a row fits a page.
            plain = storage == "plain" or (storage == "auto" and dest.dimension <= PLAIN_STORAGE_MAX_DIM[dest.typname])
            if plain:
                self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE PLAIN").format(
                    plan.relation, sql.Identifier(dest.name)))  # fmt: skip

    # -- write --

    def _start(self) -> None:
        assert self.plan is not None and self.conn is not None
        parallel = self.target.uri.int_option("parallel", DEFAULT_PARALLEL) or DEFAULT_PARALLEL
        if not 1 <= parallel <= 16:
            raise StoreError(f"pgvector {self.target.where}: parallel must be between 1 and 16, not {parallel}")
        self._extra_conns = [self._connect() for _ in range(parallel - 1)]
        connections = [self.conn, *self._extra_conns]
        self._statements(connections)
        self._loader = Loader(connections, self.target)

    def _statements(self, connections: list[psycopg.Connection]) -> None:
        """The COPY (and, for upserts and folded columns, the staging table on each connection and its
        INSERT) that load a batch."""
        assert self.plan is not None
        plan = self.plan
        self.upsert = bool(self.pending.get("upsert", self.upsert))
        self.staging = self.upsert or bool(plan.folded)
        names = [d.name for d in plan.loaded()]
        if self.staging:
            staging = sql.Identifier(STAGING_TABLE)
            for conn in connections:  # a temporary table belongs to one session
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
                conn.execute(sql.SQL(
                    "CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
                ).format(staging, column_list(plan.in_table()), plan.relation))  # fmt: skip
                if not plan.metadata_in_table:
                    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} jsonb").format(
                        staging, sql.Identifier(STAGING_METADATA)))  # fmt: skip
            self.copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(staging, column_list(names))
            self.insert_sql = self._staging_insert()
        else:
            self.copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
                plan.relation, column_list(names))

    def _close_extra(self) -> None:
        for conn in self._extra_conns:
            with suppress(Exception):
                conn.close()
        self._extra_conns = []

    def _staging_insert(self) -> sql.Composable:
        """Staging rows into the table: folded columns filled from the JSON (which loses their keys),
        and ON CONFLICT for upserts."""
        assert self.plan is not None
        plan = self.plan
        targets = plan.in_table()
        values: list[sql.Composable] = [sql.SQL("s.{}").format(sql.Identifier(n)) for n in targets]
        source = sql.SQL("{} s").format(sql.Identifier(STAGING_TABLE))
        if plan.folded:
            assert plan.metadata is not None
            keys = [name for name, _ in plan.folded]
            meta = sql.SQL("s.{}").format(sql.Identifier(plan.metadata.name))
            if plan.metadata_in_table:
                # What is left of the JSON once the folded keys are out; an empty object is NULL again.
                values[targets.index(plan.metadata.name)] = sql.SQL("nullif({}::jsonb - {}::text[], '{{}}')").format(
                    meta, sql.Literal(keys))
            targets = targets + keys
            values += [sql.SQL("r.{}").format(sql.Identifier(k)) for k in keys]
            source = sql.SQL("{} CROSS JOIN LATERAL jsonb_populate_record(NULL::{}, {}::jsonb) r").format(
                source, plan.relation, meta)
        query = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            plan.relation, column_list(targets), sql.SQL(", ").join(values), source)
        if self.upsert:
            key = plan.key()
            updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in targets if n not in key]
            action = sql.SQL("UPDATE SET {}").format(sql.SQL(", ").join(updates)) if updates else sql.SQL("NOTHING")
            query = sql.SQL("{} ON CONFLICT ({}) DO {}").format(query, column_list(key), action)
        return query

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        if self.plan is None or self._loader is None:
            raise StoreError("pgvector: write() before prepare()")
        plan = self.plan
        self._check_namespace(namespace)
        if batch.num_rows == 0:
            return
        text = [ID] + [dest.source for dest in (plan.metadata, plan.document) if dest is not None]
        check_text(batch, text, rows_done - batch.num_rows)
        payload = self.encode(batch, namespace)
        self._loader.submit(self._job(payload, rows_done), sum(len(p) for p in payload), rows_done)

    def _check_namespace(self, namespace: str) -> None:
        assert self.plan is not None
        if self.plan.namespace is None and namespace != "":
            raise StoreError(
                f"pgvector: rows of namespace {namespace!r} but table {self.plan.label} keeps no namespaces; "
                f"pass namespace_column=COLUMN to keep them in a column"
            )

    def encode(self, batch: pa.RecordBatch, namespace: str = "") -> list[pa.Buffer | bytes]:
        """The binary COPY stream of one batch: header, rows, trailer."""
        assert self.plan is not None
        plan = self.plan
        n = batch.num_rows
        ids = batch.column(ID)
        loaded = plan.loaded()
        # With folded columns and no metadata column, the staging table still needs the JSON: see _start.
        rows = CopyRows(n, len(loaded))
        for dest in loaded:
            if dest.source == ID:
                encode_id(rows, ids, dest.typname, dest.name)
            elif dest.typname in DENSE_TYPES:
                encode_dense(rows, batch.column(dest.source), dest.typname, ids, dest.source, dest.name)
            elif dest.typname == SPARSE_TYPE_NAME:
                column = batch.column(SPARSE_VALUES)
                indexed = any(r["column"] == dest.name for r in self.pending.get("indexes") or [])
                check_sparse(column, dest.dimension, ids, HNSW_MAX_SPARSE_NNZ if indexed else MAX_SPARSE_NNZ)
                rows.variable(sparse_payload(column, dest.dimension))
            elif dest.source == METADATA:
                metadata = batch.column(METADATA).cast(pa.large_binary())
                if dest.typname == "jsonb":  # jsonb's binary form is a version byte, then the text
                    metadata = pc.binary_join_element_wise(
                        pa.scalar(b"\x01", pa.large_binary()), metadata, pa.scalar(b"", pa.large_binary()))
                rows.variable(metadata)
            elif dest.source == DOCUMENT:
                rows.variable(batch.column(DOCUMENT))
            else:  # the namespace: the same bytes in every row
                encoded = namespace.encode()
                if encoded:
                    rows.field(np.dtype(f"S{len(encoded)}"), encoded)
                else:
                    rows.fixed(np.dtype(">i4"), 0)  # an empty string: length 0, no bytes
        return [COPY_HEADER, rows.build(), COPY_TRAILER]

    def _job(self, payload: list[pa.Buffer | bytes], rows_done: int) -> Job:
        def load(conn: psycopg.Connection, my_turn: Callable[[], None]) -> None:
            with self._waits_for(self.plan.label), refused_rows(self.target), transaction(conn), \
                    conn.cursor() as cur:  # type: ignore[union-attr]
                with cur.copy(self.copy_sql) as copy:
                    for part in payload:
                        copy.write(part)
                if self.staging:
                    cur.execute(self.insert_sql)  # the staging rows go at commit (ON COMMIT DELETE ROWS)
                my_turn()  # the previous batch has committed: commits stay in dump order
                if self.dump_identity is not None:
                    cur.execute(sql.SQL("UPDATE {} SET rows_done = %s, updated_at = now() WHERE target = %s "
                                        "AND dump = %s").format(self.progress_table),
                                (rows_done, self.key, self.dump_identity))  # fmt: skip
                    self._check_progress_row(cur.rowcount)

        return load

    # -- finish --

    def finish(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            try:
                loader.close()  # every batch committed, or the first error
            finally:
                self._loader_stopped(loader)
        self._close_extra()
        if self.conn is None or self.plan is None:
            return
        t, plan, conn = self.target, self.plan, self.conn
        killed = "; an import killed while building its indexes may still be building them on the server"
        with t.errors(f"cannot finish the import into {plan.label}"), self._waits_for(plan.label, killed):
            if self.pending.get("primary_key"):
                with (t.errors(f"cannot add the primary key ({', '.join(plan.key())}) to {plan.label}"),
                      phase("primary key", plan.label)):  # fmt: skip
                    self._add_primary_key()
                self.pending["primary_key"] = False
                with conn.transaction():
                    self._save_progress_pending()
            requests = self.pending.get("indexes") or []
            if requests:
                build_indexes(conn, t, plan, self.ext, requests)  # type: ignore[arg-type]
            with phase("analyze", plan.label):
                conn.execute(sql.SQL("ANALYZE {}").format(plan.relation))
            if self.staged_for is None:
                self._drop_progress()
            else:  # the old table goes and the staged one takes its place, at once for every reader
                with self._waits_for(self.key), conn.transaction():
                    swap(conn, plan.schema, plan.table, self.staged_for)
                    self._drop_progress()
                self.plan.table, self.staged_for = self.staged_for, None
        self._finished = True

    def _loader_stopped(self, loader: Loader) -> None:
        self._committed = loader.committed
        self._rows_done = max(self._rows_done, loader.rows_done)

    def rows_committed(self) -> int | None:
        """After a failure: how many of the dump's rows are committed, which ``resume`` skips (loading is
        stopped first, so the count is final). None for a copy, which cannot resume."""
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader.abort()
            self._loader_stopped(loader)
        if self.dump_identity is None:
            return None
        if self._replace_aborted:
            return 0
        if self.partitioned:  # the rows of the files the workers committed
            try:
                return sum(self.files_loaded().values())
            except StoreError:
                return None
        return self._rows_done

    def abort(self) -> None:
        """A broken dump: stop loading, then drop what a replace staged and its progress row; the old table
        was never touched. A plain import keeps what it committed (its progress row says how much)."""
        self.rows_committed()
        self._close_extra()
        if self.staged_for is None or self.plan is None or self.conn is None:
            return
        self._replace_aborted = True  # the target was never touched: none of the dump's rows is in it
        if self.conn.broken:
            return
        try:
            with self._waits_for(self.plan.label), self.conn.transaction():
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.plan.relation))
                self._drop_progress()
        except (psycopg.Error, StoreError) as exc:
            log.warning("pgvector: could not drop the staged table %s: %s", self.plan.label,
                        self.target.clean(str(exc)))  # fmt: skip
            return
        self.staged_for, self._created, self._progress_written = None, False, False

    def _add_primary_key(self) -> None:
        assert self.conn is not None and self.plan is not None
        exists = self.conn.execute(
            "SELECT 1 FROM pg_index WHERE indrelid = %s::regclass AND indisprimary",
            (self.plan.relation.as_string(self.conn),),
        ).fetchone()
        if exists is None:
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                self.plan.relation, column_list(self.plan.key())))  # fmt: skip

    def _save_progress_pending(self) -> None:
        assert self.conn is not None and self.plan is not None
        cur = self.conn.execute(
            sql.SQL("UPDATE {} SET pending = %s WHERE target = %s AND dump IS NOT DISTINCT FROM %s").format(
                self.progress_table), (psycopg.types.json.Jsonb(self.pending), self.key, self.dump_identity))
        self._check_progress_row(cur.rowcount)

    def _check_progress_row(self, updated: int) -> None:
        """The progress row is this target's and this dump's: if another run took it over, stop (this
        transaction rolls back) rather than write another dump's progress."""
        if updated != 1:
            raise StoreError(f"pgvector {self.target.where}: the progress row of this import into {self.key} "
                             "was taken over by another import; this one stops here")  # fmt: skip

    def _drop_progress(self) -> None:
        assert self.conn is not None and self.plan is not None
        with self.conn.transaction():
            self._lock_progress(exclusive=True)
            self.conn.execute(sql.SQL("DELETE FROM {} WHERE target = %s AND dump IS NOT DISTINCT FROM %s").format(
                self.progress_table), (self.key, self.dump_identity))  # fmt: skip
            if find_relation(self.conn, self.plan.schema, files.FILES_TABLE) is not None:
                files.forget(self.conn, self.files_table, self.key)
                files.drop_if_empty(self.conn, self.files_table)
            left = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.progress_table)).fetchone()[0]
            if left == 0:
                self.conn.execute(sql.SQL("DROP TABLE {}").format(self.progress_table))

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        if self.conn is None or self.plan is None or not self.plan.dense or self.ext is None:
            raise StoreError("pgvector: search needs a prepared import with a dense vector")
        plan = self.plan
        dest = plan.dense[0]
        ns = (plan.namespace.name, namespace) if plan.namespace else None
        with self.target.errors("search failed"):
            return nearest(self.conn, self.ext, plan.relation, plan.id.name, dest.name, dest.typname,
                           plan.metrics.get(dest.name, "cosine"), vector, k, ns)  # fmt: skip

    def close(self) -> None:
        if self._loader is not None:
            self._loader.abort()
            self._loader_stopped(self._loader)
            self._loader = None
        self._close_extra()
        if self.conn is not None and not self.conn.closed:
            if (self.plan is not None and not self._finished and self._committed == 0 and self._resumed_from == 0
                    and not self.attached and not self.conn.broken and not self._files_in()):  # fmt: skip
                self._leave_no_trace()
            self.conn.close()

    def _files_in(self) -> bool:
        """Whether workers committed files of this import (True when that cannot be read: keep everything)."""
        if not self.partitioned:
            return False
        try:
            return bool(self.files_loaded())
        except StoreError:
            return True

    def _leave_no_trace(self) -> None:
        """An import that failed before its first commit leaves nothing behind: no progress row, and not
        even the table when it made it."""
        assert self.conn is not None and self.plan is not None
        if self._created:
            with suppress(psycopg.Error), self.conn.transaction():
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.plan.relation))
        if self._progress_written:
            with suppress(psycopg.Error):
                self._drop_progress()


class _LoadedAlready(Exception):
    """The file is in the target already: its transaction rolls back and ``load_file`` says so."""


def _dump_identity(manifest: Manifest) -> str | None:
    """What tells this dump from any other (the core's digest of its creation time and files' checksums);
    None for a store-to-store copy, which has no files."""
    return manifest.identity() if manifest.files else None
