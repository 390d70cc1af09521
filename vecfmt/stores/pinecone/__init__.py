"""Pinecone (serverless and pod-based, vector and document indexes) through the official ``pinecone`` SDK.

URI::

    pinecone://INDEX_NAME?options

INDEX_NAME is resolved to its data-plane host through the control plane (``describe``); ``host=`` skips
that (with only ``host=`` and no name, the index is described from its stats: vector indexes only). The
API key comes from ``PINECONE_API_KEY`` or the ``api_key=`` option; it is never logged, never written to a
manifest, and removed (by value) from every error message.

Options (details, type mapping and limits in docs/pinecone.md):

=====================  ===================================================================================
``api_key``            the API key (default: ``PINECONE_API_KEY``)
``host``               the index's data-plane host (skips the control-plane lookup)
``controller_host``    the control plane (default: ``PINECONE_CONTROLLER_HOST``, else Pinecone's)
``grpc``               ``true``: the SDK's gRPC data plane for vector indexes (default REST)
``concurrency``        requests in flight (default 4)
``retries``            attempts after the SDK's own retries for 429/5xx/dropped connections (default 8)
``timeout``            seconds per request attempt (default 60)
``strict``             export: a count that differs from ``describe_index_stats`` is an error
``ids_file``           export: the ids to fetch (one a line, or a ``.parquet`` file; ``ids_column``,
                       default ``id``): the route for pod-based indexes, which cannot ``list``
``prefixes``           export: split each namespace into slices by id prefix (comma separated)
``document_key``       vector index: the metadata key that holds the ``document`` text
``document``           document index: the string field that is the ``document`` column
                       (default: a string field called ``document``)
``create``             import: create a serverless index from the dump (``cloud``, ``region``,
                       ``kind=vector|document``; default aws, us-east-1, vector unless the dump came from a
                       Pinecone document index)
``bulk``               import: Pinecone's own bulk import from the dump's URI (``error_mode``)
``state_dir``          import: where resume progress is kept (default ``$XDG_STATE_HOME/vecfmt/pinecone``)
=====================  ===================================================================================

Type mapping: ``values`` <-> the dense vector (float32, exact), ``sparse_values`` <-> ``sparse_values``
(0-based uint32 indices, float32 values), ``metadata`` <-> metadata (a JSON object; text as ``json.dumps``
writes it, key order kept), the default namespace ``""`` <-> ``""`` (``__default__`` in the Documents API).
Metrics: ``cosine``, ``dotproduct`` <-> ``dot``, ``euclidean``. A document index's dense fields become
``values`` (a field called ``values``, else the first) and named vectors, its sparse field
``sparse_values``, its other fields the metadata; its schema goes into ``extra.pinecone``.

The package: ``connect`` (URI, key, clients, retries, one-line errors), ``catalog`` (Pinecone's limits,
what an index is, record checks), ``exporter``, ``importer``, ``bulk`` (the bulk-import route), ``search``.
"""

from __future__ import annotations

from vecfmt.stores.base import StoreURI
from vecfmt.stores.pinecone.connect import SCHEME
from vecfmt.stores.pinecone.exporter import PineconeExporter
from vecfmt.stores.pinecone.importer import PineconeImporter

__all__ = ["SCHEME", "PineconeExporter", "PineconeImporter", "open_exporter", "open_importer"]


def open_exporter(uri: StoreURI) -> PineconeExporter:
    return PineconeExporter(uri)


def open_importer(uri: StoreURI) -> PineconeImporter:
    return PineconeImporter(uri)
