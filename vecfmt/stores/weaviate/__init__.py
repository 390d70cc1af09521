"""Weaviate (1.27 and later) through the v4 client (``weaviate-client``) and Weaviate's gRPC API.

URI::

    weaviate://HOST:PORT?collection=NAME&options

HTTP on HOST:PORT (default 8080), gRPC on ``grpc_port`` (default 50051); ``secure=true`` for TLS on both.
The API key comes from ``WEAVIATE_API_KEY``; it is never logged, never written to a manifest, and removed
(by value) from every error message. Collection names follow Weaviate's rule and its first letter is
upper-cased, as Weaviate does.

Options (details, type mapping and limits in docs/weaviate.md):

==================  ===================================================================================
``collection``      the collection (required)
``grpc_port``       Weaviate's gRPC port (default 50051, 443 with secure=true)
``secure``          ``true``: https and TLS gRPC
``timeout``         seconds per request (default 120)
``retries``         retries of a request while the server is unavailable (default 3)
``vector``          export: the vector that becomes the dump's ``values`` (default ``default``, else the first)
``document``        the text property that is the dump's ``document`` column (import default ``document``)
``id_property``     the text property keeping ids that are not UUIDs (default ``vecfmt_id``)
``concurrency``     import: batch requests in flight (default 2)
``batch``           import: objects per batch request (default 500)
``page``            export: objects per cursor page (default 1000)
==================  ===================================================================================

Mapping: the object UUID <-> ``id`` (other ids through UUIDv5, kept in ``id_property``: spec appendix A);
each vector (the unnamed one is ``default``) <-> ``values`` / ``values_<name>`` (float32, exact); properties
<-> ``metadata`` keys (types inferred on import, recorded in ``extra.weaviate`` on export); tenants <->
namespaces (the default namespace is the tenant ``__default__``). Distances: ``cosine``, ``dot``,
``l2-squared`` <-> ``euclidean``, ``manhattan``, ``hamming``.

The package: ``connect`` (URI, key, client and gRPC stub, one-line errors), ``catalog`` (distances, the id
rule, property types, metadata <-> gRPC properties), ``schema`` (what a collection is, definitions for a
dump), ``exporter``, ``importer``, ``search``.
"""

from __future__ import annotations

from vecfmt.stores.base import StoreURI
from vecfmt.stores.weaviate.connect import SCHEME
from vecfmt.stores.weaviate.exporter import WeaviateExporter
from vecfmt.stores.weaviate.importer import WeaviateImporter

__all__ = ["SCHEME", "WeaviateExporter", "WeaviateImporter", "open_exporter", "open_importer"]


def open_exporter(uri: StoreURI) -> WeaviateExporter:
    return WeaviateExporter(uri)


def open_importer(uri: StoreURI) -> WeaviateImporter:
    return WeaviateImporter(uri)
