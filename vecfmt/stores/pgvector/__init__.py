"""PostgreSQL + pgvector: export with one binary COPY through ADBC, import with binary COPY built by NumPy.

URI::

    pgvector://USER:PASSWORD@HOST:PORT/DBNAME?table=items&schema=public&...

LOCATION (everything between ``://`` and ``?``) becomes the libpq URI ``postgresql://LOCATION``. It may
be partial or empty: libpq fills the rest from the PG* environment variables (PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE, PGSSLMODE, ...) and ``~/.pgpass``. libpq connection keywords may also be given
as options, e.g. ``pgvector://?host=/var/run/postgresql&dbname=app&table=items`` for a Unix socket
(``password`` is refused as an option: put it in LOCATION or PGPASSWORD). No password ever appears in
a manifest, a log line or an error message.

Options (all optional except ``table`` or ``query``):

=====================  ===================================================================================
``table``, ``schema``  the table (schema: default the search path / ``current_schema()``)
``query``              export only: any SELECT, run as given in a read-only transaction (instead of table)
``id``                 id column (default: the single-column primary key, else ``id``)
``vector``             dense vector column(s), comma separated, primary first (default: every ``vector``
                       / ``halfvec`` column, in table order; import: ``embedding``)
``sparse``             the ``sparsevec`` column (default: the table's one; import: ``sparse_embedding``)
``metadata``           json/jsonb column (default ``metadata``); ``metadata=`` (empty) for none
``document``           text column (default ``document``)
``namespace_column``   column holding namespaces (export default: ``namespace`` if the table has one;
                       import default: ``namespace``, created only when the dump has namespaces)
``fold``               export: columns folded into the JSON metadata (default: every other column;
                       ``fold=`` (empty) for none)
``metric``             cosine | dot | euclidean | manhattan (export: default from the vector index's
                       operator class, then a vecfmt table comment, else cosine; import: the dump's)
``type``               import: ``vector`` or ``halfvec`` for created dense columns (default: the source's
                       type when the dump came from pgvector, else ``vector``)
``sparse_dim``         import: dimension of a created ``sparsevec`` column (default: from a pgvector dump)
``index``              import: auto | hnsw | ivfflat | none (auto: the source's index when the dump came
                       from pgvector, else hnsw when the dimension allows it)
``m``, ``ef_construction``, ``lists``
                       index parameters (hnsw; ivfflat lists default rows/1000, sqrt(rows) above 1M)
``maintenance_work_mem``, ``workers``
                       for the index build (default ``1GB``, and the server's
                       max_parallel_maintenance_workers but at least 2)
``storage``            import: plain | external | default for created dense columns. Default ``plain``
                       when a row fits a page (vector <= 1900 dims, halfvec <= 3800): vectors stay in the
                       heap instead of TOAST, which loads 1.2-1.4x faster and scans faster
``parallel``           import: loading connections (default: the cores, 2 to 8; batches still commit in dump order)
``lock_timeout``       import: how long a statement waits for a lock another session holds (default ``5s``;
                       ``0`` for ever), then one error line names the locked table
=====================  ===================================================================================

Type mapping: ``vector(d)`` <-> ``values`` (float32, exact); ``halfvec(d)`` -> float32 exactly, float32 ->
``halfvec`` rounds to nearest half (values beyond +-65504 are refused); ``sparsevec(d)`` <->
``sparse_values`` with 0-based indices (pgvector's binary form and Pinecone's convention; pgvector's
*text* form ``{1:0.5}/d`` is 1-based; explicit zeros are left out on import, pgvector refuses them).
Ids of any type are exported as text (their SQL type is kept in
the manifest's ``extra.pgvector`` and restored on import for text, varchar, smallint, integer, bigint,
uuid). Columns folded into the metadata keep their SQL type there too, and an import of that dump
recreates them (typmods such as ``varchar(20)`` are dropped) and fills them from the JSON.

Import writes each batch with one binary COPY, committed together with a progress row in
``vecfmt_import_progress`` (same schema as the table), so an import killed at any point resumes with
``resume=True`` exactly where it stopped. Upserts go through a temporary staging table and
``INSERT ... ON CONFLICT``. ``replace`` loads a staged table beside the old one and swaps it in with one
transaction at the end (``replace.py``). With several workers (``vecfmt import --workers N``), each worker
loads whole files on its own connection, each file in one transaction with its row in ``vecfmt_import_files``,
and a resume loads only the files not recorded (``files.py``). The primary key of a table vecfmt creates, and
its vector index, are built after the load; then the table is analysed. Such a table's comment keeps what its
columns cannot say (vector names, metrics, the embedding model) for a later export.

pgvector has no namespaces: a dump's namespaces go into the ``namespace_column`` (part of the primary
key), and an export with a namespace column gives one namespace per distinct value (NULL is ``""``).

The package: ``connect`` (the URI, secrets, one-line errors), ``catalog`` (pgvector's types and limits,
what the database holds), ``exporter``, ``plan`` (how a dump maps onto a table), ``importer``, ``loader``
(the loading threads), ``files`` (the per-file record of an import with workers), ``replace`` (a replace's
staged table and its swap),
``copy_binary`` (binary COPY and pgvector's send formats), ``search``.
"""

from __future__ import annotations

from vecfmt.stores.base import StoreURI
from vecfmt.stores.pgvector.connect import SCHEME, Target
from vecfmt.stores.pgvector.exporter import PgvectorExporter
from vecfmt.stores.pgvector.importer import PROGRESS_TABLE, PgvectorImporter

__all__ = ["PROGRESS_TABLE", "SCHEME", "PgvectorExporter", "PgvectorImporter", "Target", "open_exporter",
           "open_importer"]  # fmt: skip


def open_exporter(uri: StoreURI) -> PgvectorExporter:
    return PgvectorExporter(uri)


def open_importer(uri: StoreURI) -> PgvectorImporter:
    return PgvectorImporter(uri)
