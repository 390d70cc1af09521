"""Qdrant through ``qdrant-client``: a server over REST (or gRPC), or local mode on a folder.

URI::

    qdrant://HOST:PORT?collection=NAME&options        a server (REST on PORT, default 6333)
    qdrant:///abs/folder?collection=NAME&options       local mode (the client's path=), also ./rel, ../rel, ~/...
    qdrant://rel/folder?collection=NAME&local=true     local mode for a relative folder written without ./

The API key comes from ``api_key=`` or ``QDRANT_API_KEY``; it is never logged, never written to a manifest, and
removed (by value) from every error message.

Options (details in docs/qdrant.md):

==================  ===================================================================================
``collection``      the collection or alias (required)
``local``           ``true``: LOCATION is a local-mode folder
``grpc``            ``true``: talk gRPC on ``grpc_port`` (default 6334) instead of REST
``https``           ``true``: TLS
``api_key``         the API key (better: ``QDRANT_API_KEY``)
``timeout``         seconds per request (default 60)
``vector``          export: the dense vector that becomes ``values`` (default: the unnamed one, else
                    ``default``, else the first)
``sparse``          the sparse vector that is ``sparse_values`` (import default ``sparse``)
``document``        the payload key holding ``document`` (import default ``document``)
``concurrency``     import: upsert requests in flight (server, default 2; local mode writes from one thread)
``batch``           import: points per upsert request (default 256)
``page``            export: points per scroll page (default 10000 in local mode, 1000 on a server)
==================  ===================================================================================

Mapping: point id <-> ``id`` (ids.py: unsigned integers and UUIDs as they are, other ids by UUIDv5 and kept in
the payload key ``_vecfmt_id``); the unnamed vector or each named vector <-> ``values`` / ``values_<name>``;
one sparse vector <-> ``sparse_values``; payload <-> ``metadata``; the payload key ``_vecfmt_namespace`` <->
namespaces (absent: the default namespace). Distances ``Cosine``, ``Dot``, ``Euclid``, ``Manhattan``.

The package: ``connect`` (URI, key, client, one-line errors), ``ids`` (the id rule), ``catalog`` (distances,
what a collection holds, a collection for a dump), ``exporter``, ``importer``, ``search``.
"""

from __future__ import annotations

from vecfmt.stores.base import StoreURI
from vecfmt.stores.qdrant.connect import SCHEME
from vecfmt.stores.qdrant.exporter import QdrantExporter
from vecfmt.stores.qdrant.importer import QdrantImporter

__all__ = ["SCHEME", "QdrantExporter", "QdrantImporter", "open_exporter", "open_importer"]


def open_exporter(uri: StoreURI) -> QdrantExporter:
    return QdrantExporter(uri)


def open_importer(uri: StoreURI) -> QdrantImporter:
    return QdrantImporter(uri)
