"""Chroma (1.x) through its Python client (``chromadb``): a persistent database folder, or a server.

URI::

    chroma:///ABS/PATH?collection=NAME&options        a persistent database folder (PersistentClient)
    chroma://./REL/PATH?collection=NAME&options       ... relative to the working directory (also ~/...)
    chroma://HOST:PORT?collection=NAME&options        a Chroma server (HttpClient; ssl=true for https)

A LOCATION starting with ``/``, ``.`` or ``~`` is a folder; ``HOST:PORT`` (the port written out) is a
server; anything else is refused. A server's token comes from ``CHROMA_TOKEN`` only (sent as
``Authorization: Bearer``, or ``X-Chroma-Token`` with ``token_header=x-chroma-token``); it is never logged,
never written to a manifest, and removed (by value) from every error message.

Options (details, mapping and limits in docs/chroma.md):

==================  ===================================================================================
``collection``      the collection (required); namespace NS lives in the collection ``NAME.NS``
``tenant``          the tenant (default ``default_tenant``)
``database``        the database (default ``default_database``)
``ssl``             ``true``: https (a server only)
``token_header``    ``authorization`` (default) or ``x-chroma-token``
``batch``           import: records per ``add`` (default 5000, at most the client's ``max_batch_size``)
``concurrency``     import: requests in flight (default 1 for a folder, 2 for a server)
``page``            export: records per ``get`` (default 5000)
==================  ===================================================================================

Mapping: ids <-> record ids; ``values`` <-> the embedding (float32, exact for the l2 and ip spaces; cosine
gives back the vector normalised and scaled back, within a few ulp: docs/chroma.md); ``document`` <->
the record's document; ``metadata`` <-> the record's metadata: the JSON text whole under
``_vecfmt_metadata`` and its scalar keys beside it (for ``where`` filters). Spaces: ``cosine`` <->
``cosine``, ``l2`` <-> ``euclidean``, ``ip`` <-> ``dot``.

The package: ``connect`` (URI, client, one-line errors), ``catalog`` (spaces, names, the metadata rule),
``exporter``, ``importer``, ``search``.
"""

from __future__ import annotations

from vecfmt.stores.base import StoreURI
from vecfmt.stores.chroma.connect import SCHEME
from vecfmt.stores.chroma.exporter import ChromaExporter
from vecfmt.stores.chroma.importer import ChromaImporter

__all__ = ["SCHEME", "ChromaExporter", "ChromaImporter", "open_exporter", "open_importer"]


def open_exporter(uri: StoreURI) -> ChromaExporter:
    return ChromaExporter(uri)


def open_importer(uri: StoreURI) -> ChromaImporter:
    return ChromaImporter(uri)
