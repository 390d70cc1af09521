"""The bulk route (``bulk=true``): Pinecone imports the dump's Parquet files itself (``start_import``), and
vecfmt checks beforehand that what Pinecone will read is exactly the dump, then follows ``describe_import``.

Pinecone reads every ``.parquet`` file under ``<root>/<folder>/`` and names each namespace after its
folder; vecfmt readers read only the files the manifest lists, and percent-encode unusual namespace names
into folder names. So a dump with an unlisted ``.parquet`` file, or with a namespace whose folder is not
its name, would arrive different from what vecfmt validated: both are refused, naming what is wrong."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from vecfmt.errors import DumpError, StoreError
from vecfmt.manifest import Manifest
from vecfmt.storage import redact, resolve
from vecfmt.stores.base import IfExists
from vecfmt.stores.pinecone.catalog import vecfmt_namespace
from vecfmt.stores.pinecone.connect import flag, log

if TYPE_CHECKING:
    from vecfmt.stores.pinecone.importer import PineconeImporter

POLL_SECONDS = 0.5
DEFAULT_FOLDER = "__default__"  # Pinecone's (and the spec's) folder of the default namespace
TERMINAL = ("Completed", "Failed", "Cancelled")


def pinecone_folder(namespace: str) -> str:
    """The folder Pinecone's importer reads a namespace from (it takes the folder name as is)."""
    return DEFAULT_FOLDER if namespace == "" else namespace


def check_dump(manifest: Manifest, dump_uri: str) -> None:
    """Refuse a dump that Pinecone would import differently from what vecfmt reads."""
    upsert = "; use the upsert route (without bulk=true), which reads only what the manifest lists"
    renamed = [ns.name for ns in manifest.namespaces if ns.path != pinecone_folder(ns.name)]
    if renamed:
        raise DumpError(f"bulk import: Pinecone names namespaces after their folders, and these namespaces' "
                        f"folders differ from their names (percent-encoded): {renamed}{upsert}")
    listed = {f.path for f in manifest.files}
    stray = sorted(path for path in resolve(dump_uri).listdir()
                   if path.count("/") == 1 and path.endswith(".parquet") and path not in listed)
    if stray:
        raise DumpError(f"bulk import: {redact(dump_uri)} holds .parquet files its manifest does not list, which "
                        f"Pinecone would import too: {stray}{upsert}")
    if len(manifest.vectors) > 1 or manifest.document:
        raise DumpError("bulk import: Pinecone's importer reads id, values, sparse_values and metadata only and "
                        f"would drop the dump's named vectors or documents{upsert}")


def import_uri(dump_uri: str) -> str:
    """The URI Pinecone is given: object-store URIs as they are, a local folder as an absolute file:// URI."""
    if "://" in dump_uri:
        return dump_uri.rstrip("/") + "/"
    return "file://" + os.path.abspath(dump_uri).rstrip("/") + "/"


def run(importer: PineconeImporter, manifest: Manifest, if_exists: IfExists) -> int:
    """Start Pinecone's import of the whole dump, follow it to the end, and return the rows imported
    (all of them, so the core skips every file)."""
    t, index = importer.target, importer.index
    if importer.source_dump is None:
        raise StoreError("pinecone: bulk=true imports a whole dump (vecfmt import DUMP pinecone://...), not a "
                         "copy or chosen namespaces")
    assert importer.info is not None
    if importer.info.kind != "vector":
        raise StoreError(f"pinecone {t.label} is a document index: bulk=true imports into vector indexes; "
                         "import without bulk=true")
    if not manifest.files:
        raise DumpError("bulk import: the dump has no files")
    check_dump(manifest, importer.source_dump)
    stats = t.call("cannot read the index stats", index.describe_index_stats)
    held = sorted(vecfmt_namespace(n) for n, s in stats.namespaces.items() if s.vector_count)
    clash = [ns.name for ns in manifest.namespaces if ns.name in held]
    if clash and if_exists != IfExists.REPLACE:
        raise StoreError(f"pinecone {t.label}: a bulk import writes only into new or empty namespaces, and "
                         f"{clash} hold records: choose if_exists replace, or import without bulk=true")
    if clash and not flag(t.uri, "replace_deletes_first"):  # no swap on Pinecone: deleting first is a risk
        raise StoreError(f"pinecone {t.label}: replace would delete the records of namespace(s) {clash} before "
                         "the bulk import, so a failed import loses them: export them first, then pass "
                         "replace_deletes_first=true")
    for namespace in clash:
        t.call("cannot clear the namespace", index.delete, delete_all=True, namespace=namespace)
    uri = import_uri(importer.source_dump)
    started = t.call("cannot start the bulk import", index.start_import, uri, error_mode=importer.error_mode)
    log.info("pinecone: bulk import %s started from %s", started.id, redact(uri))
    total = manifest.total_rows
    last = -1.0
    while True:
        status = t.call("cannot follow the bulk import", index.describe_import, started.id)
        if status.percent_complete is not None and status.percent_complete != last:
            last = status.percent_complete
            log.info("pinecone: bulk import %s: %s, %.0f%%, %s of %s records", started.id, status.status, last,
                     status.records_imported, total)
        if status.status in TERMINAL:
            break
        time.sleep(POLL_SECONDS)
    if status.status != "Completed":
        reason = t.clean(status.error or "no reason given")
        raise StoreError(f"pinecone {t.label}: bulk import {started.id} {status.status.lower()}: {reason}")
    if status.records_imported is not None and status.records_imported != total:
        raise StoreError(f"pinecone {t.label}: bulk import {started.id} imported {status.records_imported:,} of "
                         f"{total:,} records (error_mode={importer.error_mode} skips records it cannot read)")
    return total
