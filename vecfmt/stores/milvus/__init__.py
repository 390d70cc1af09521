"""Milvus through ``pymilvus``'s ``MilvusClient``: Milvus Lite (``milvus-lite``, embedded, a ``.db`` folder)
or a Milvus server.

URI::

    milvus:///ABS/PATH/NAME.db?collection=NAME&options     Milvus Lite (a LOCATION ending in .db)
    milvus://./NAME.db?collection=NAME                      Milvus Lite, a path relative to the working folder
    milvus://HOST:PORT?collection=NAME&options              a server (port 19530 by default; secure=true: https)
    milvus://USER:PASSWORD@HOST:PORT?collection=NAME        a server with a user (the token USER:PASSWORD)

The token comes from ``MILVUS_TOKEN`` (or the URI's userinfo); it is never logged, never written to a
manifest, and removed by value from every error message.

Options (details, type mapping and limits in docs/milvus.md):

==================  ===================================================================================
``collection``      the collection (required)
``db``              a server's database (default: the server's default)
``secure``          ``true``: https
``timeout``         seconds per request (default 120)
``vector``          the dense vector field that is the dump's ``values`` (default: the first)
``document``        the VARCHAR field of the dump's ``document`` column (default: vecfmt's, else ``document``)
``metadata``        the JSON field holding metadata (default: vecfmt's, else ``metadata``)
``id_max_length``   import: max_length (bytes) of a new VARCHAR primary key (default 512, up to 65535)
``index``           import: the index type built on new vector fields (default AUTOINDEX)
``batch``           import: rows per insert request (default: 16 MiB of vectors, at most 10000)
``concurrency``     import: requests in flight (default 1 for Milvus Lite, which runs in this process; 2 else)
``page``            export: rows per query (default: 64 MiB of vectors within the core's batch; at most 16384)
==================  ===================================================================================

Mapping: the primary key <-> ``id`` (VARCHAR, or INT64 as decimal text); FLOAT_VECTOR fields <-> ``values``
/ ``values_<name>`` (float32, exact; FLOAT16/BFLOAT16 widened exactly and narrowed back); one
SPARSE_FLOAT_VECTOR field <-> ``sparse_values``; the metadata JSON field's object, scalar fields and dynamic
keys <-> ``metadata`` keys (field types in ``extra.milvus``); a VARCHAR field <-> ``document``; partitions <->
namespaces (``_default`` is the default namespace). Metrics: COSINE, IP, L2 <-> cosine, dot, euclidean.

The package: ``connect`` (URI, token, client, Milvus Lite's lifetime, one-line errors), ``catalog`` (metrics,
partitions, fields, vector encodings), ``exporter``, ``importer``, ``search``.
"""

from __future__ import annotations

from vecfmt.stores.base import StoreURI
from vecfmt.stores.milvus.connect import SCHEME
from vecfmt.stores.milvus.exporter import MilvusExporter
from vecfmt.stores.milvus.importer import MilvusImporter

__all__ = ["SCHEME", "MilvusExporter", "MilvusImporter", "open_exporter", "open_importer"]


def open_exporter(uri: StoreURI) -> MilvusExporter:
    return MilvusExporter(uri)


def open_importer(uri: StoreURI) -> MilvusImporter:
    return MilvusImporter(uri)
