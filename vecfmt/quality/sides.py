"""One side of a comparison: a dump or a store, read the same way (canonical batches per namespace)
and searched the same way (a store through its own ``search()``; a dump by exact search)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import StoreError
from vecfmt.manifest import Manifest, NamespaceEntry
from vecfmt.reader import Dump
from vecfmt.schema import namespace_dir
from vecfmt.storage import redact
from vecfmt.stores.base import Exporter, StoreURI, is_store_uri, open_exporter
from vecfmt.writer import check_batch

BATCH_ROWS = 10_000


class Side:
    """``manifest`` holds the vectors, metric, model and namespaces (counts as the side reports them)."""

    label: str
    manifest: Manifest
    is_dump: bool

    def namespaces(self) -> list[str]:
        return self.manifest.namespace_names()

    def batches(self, namespace: str) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def search(self, vector: np.ndarray, k: int, namespace: str) -> list[str]:
        raise NotImplementedError

    def can_search(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> Side:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class DumpSide(Side):
    is_dump = True

    def __init__(self, uri: str) -> None:
        self.dump = Dump.open(uri)
        self.manifest = self.dump.manifest
        self.label = redact(uri)

    def batches(self, namespace: str) -> Iterator[pa.RecordBatch]:
        if namespace in self.dump.namespaces:
            yield from self.dump.batches(namespace)

    def search(self, vector: np.ndarray, k: int, namespace: str) -> list[str]:
        raise NotImplementedError("a dump is searched exactly, all queries at once (groundtruth)")


class StoreSide(Side):
    is_dump = False

    def __init__(self, uri: str) -> None:
        self.exporter: Exporter = open_exporter(uri)
        self.label = str(StoreURI.parse(uri))
        try:
            desc = self.exporter.describe()
        except BaseException:
            self.exporter.close()
            raise
        self.manifest = desc.manifest_template()
        self.manifest.namespaces = [NamespaceEntry(n, namespace_dir(n), c or 0) for n, c in desc.namespaces.items()]
        self.schema = self.manifest.arrow_schema()

    def batches(self, namespace: str) -> Iterator[pa.RecordBatch]:
        if namespace not in self.namespaces():
            return
        for part in self.exporter.slices(namespace):
            for chunk in self.exporter.batches(part, batch_size=BATCH_ROWS):
                yield check_batch(chunk.batch, self.schema, self.manifest.vectors)

    def can_search(self) -> bool:
        return callable(getattr(self.exporter, "search", None))

    def search(self, vector: np.ndarray, k: int, namespace: str) -> list[str]:
        search = getattr(self.exporter, "search", None)
        if not callable(search):
            raise StoreError(f"{self.label}: this store cannot search, so search quality cannot be measured "
                             "(verify with queries=0)")
        return [hit[0] for hit in search(vector, k, namespace=namespace)]

    def close(self) -> None:
        self.exporter.close()


def open_side(uri: str) -> Side:
    """A store when the URI's scheme names a registered store, else a dump location."""
    return StoreSide(uri) if is_store_uri(uri) else DumpSide(uri)
