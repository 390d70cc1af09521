"""LanceDB (embedded, Arrow-native): the default store that needs no server.

URI: ``lancedb://PATH?table=NAME`` where PATH is the database folder (relative, absolute, or an
object-store URI LanceDB understands). Options:

- ``table`` (required): the table name.
- ``vector``: the primary vector column (default: ``vector`` if present, else the first vector column).
- ``id``: the id column (default ``id``).
- ``metric``: cosine | dot | euclidean | hamming, for tables vecfmt did not create (default cosine).
- ``namespace_column``: the column that holds namespaces (default ``namespace`` when present).
- ``index`` (import): ``auto`` (default: an IVF_PQ index on ``vector`` once the table holds
  ``index_min_rows`` rows, 100,000 by default), ``none``, or a LanceDB index type (``ivf_pq``,
  ``ivf_hnsw_sq``, ...) built whatever the size; ``num_partitions`` and ``num_sub_vectors`` are passed
  to LanceDB (its own defaults otherwise). A table with an index already is only brought up to date.
  The exporter's ``search()`` takes the index's knobs for one search (``nprobes``, ``refine_factor``; ``ef``
  for IVF_HNSW types; ``search_knobs()``), which ``vecfmt tune`` sweeps.

A table vecfmt creates holds ``id``, ``vector`` (the dump's ``values``), one column per further named
vector (named after it), ``sparse_values``, ``metadata`` (JSON text), ``document`` and, when the dump has
non-default namespaces, ``namespace``. The dump's vector definitions, model and source are kept in the
table's schema metadata under ``vecfmt``, so an export gives back the same manifest fields. Columns of
foreign tables that are not vectors are folded into the JSON metadata by the rules of
``vecfmt.metadata``; a NULL namespace exports as the default namespace ``""``.

Ids are unique within a namespace: ``upsert`` merges on (namespace, id) when the table has namespaces.

Imports commit in pieces of ``COMMIT_ROWS`` rows (each an atomic Lance commit, in the dump's order). Each
piece streams into one ``add`` running on a thread of its own, which Lance encodes and writes while the
core reads the next batches from the dump, and becomes one Lance fragment of the size Lance itself writes;
``finish()`` then compacts what small fragments are left (a last piece), without pruning any version.
A table the import creates (or stages) holds only its commits: each must be the version right after the
previous one, else another writer is at work and the import stops. After each commit the tag
``vecfmt-import`` points at it (the progress record; deleted once the import is done), and ``resume``
goes on only when that tag is the table's latest version, so the rows it skips are exactly this dump's.

``replace`` never touches the old table while loading: the rows go into a staged table beside it
(``<table>-vecfmt-staging``) and ``finish()`` swaps them in. LanceDB OSS cannot rename a table, so the
swap is an overwrite of the old table with the staged rows: one Lance commit, atomic for readers (they
see every old row or every new one), at the cost of writing the rows a second time; then the staged
table is dropped. The old rows stay readable in the table's earlier versions until they are cleaned up
(``optimize(cleanup_older_than=...)``). A dump that turns out broken (checksum, bad row) drops the
staged table and leaves the old one as it was; an interruption keeps the staged table for ``resume``, and
a new ``replace`` drops a staged table it finds. Details: docs/lancedb.md.

An export reads one table version. A namespace of more than 10,000 rows splits into slices, ranges of row
addresses (``_rowaddr``) each read at that version also by a partitioned export's workers (``slices.py``,
docs/lancedb.md); resume tokens are the version, the slice's range and the rows of it read so far.

The package: ``connect`` (the URI, the connection, the table lock, one-line errors), ``exporter``,
``slices`` (how a namespace splits), ``importer`` (with ``_StreamedCommit``, one streamed Lance commit),
``search`` (search and its knobs).
"""

from __future__ import annotations

from vecfmt.stores.base import StoreURI

# An import commits once this much is buffered: few, large fragments and versions, bounded memory.
# Lance's own rows per data file (its default max_rows_per_file): a piece this size needs no compaction,
# and a resume repeats at most this much work (seconds of it)
COMMIT_ROWS = 1024 * 1024

# (The importer reads it through this package, so that setting ``vecfmt.stores.lancedb.COMMIT_ROWS`` takes
# effect, as it did when the store was one module: defined before the modules below are imported.)

from vecfmt.stores.lancedb.connect import (  # noqa: E402
    NAMESPACE_COLUMN,
    PRIMARY_COLUMN,
    SCHEME,
    _lock_table,
    _table_names,
)
from vecfmt.stores.lancedb.exporter import LanceDBExporter  # noqa: E402
from vecfmt.stores.lancedb.importer import (  # noqa: E402
    INDEX_MIN_ROWS,
    INDEX_TYPES,
    PROGRESS_TAG,
    STAGING_SUFFIX,
    LanceDBImporter,
    _StreamedCommit,
)
from vecfmt.stores.lancedb.search import SEARCH_KNOBS  # noqa: E402

__all__ = ["COMMIT_ROWS", "INDEX_MIN_ROWS", "INDEX_TYPES", "NAMESPACE_COLUMN", "PRIMARY_COLUMN", "PROGRESS_TAG",
           "SCHEME", "SEARCH_KNOBS", "STAGING_SUFFIX", "LanceDBExporter", "LanceDBImporter", "_StreamedCommit",
           "_lock_table", "_table_names", "open_exporter", "open_importer"]  # fmt: skip


def open_exporter(uri: StoreURI) -> LanceDBExporter:
    return LanceDBExporter(uri)


def open_importer(uri: StoreURI) -> LanceDBImporter:
    return LanceDBImporter(uri)
