"""Export: each namespace's collection read with ``get(include=[embeddings, metadatas, documents], limit,
offset)``, one page fetched and converted while the previous one is written. Chroma hands vectors back as a
float64 matrix: it becomes float32 in one NumPy cast (exact: see ``_matrix``). The resume token is the offset."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import EmbeddingModel, Source, VectorSpec
from vecfmt.schema import DOCUMENT, ID, METADATA, VALUES, vectors_array
from vecfmt.stores.base import Chunk, Description, Slice, StoreURI
from vecfmt.stores.chroma.catalog import (
    DOCUMENT_KEY,
    MARKERS,
    NAMESPACE_KEY,
    NAMESPACE_OF,
    collection_for,
    from_chroma,
    space_to_metric,
)
from vecfmt.stores.chroma.connect import SCHEME, Target
from vecfmt.stores.chroma.search import dimension_of, identity, nearest, space_of

# Chroma's default embedding function (ONNX all-MiniLM-L6-v2, 384 dimensions)
DEFAULT_EMBEDDING = EmbeddingModel("all-MiniLM-L6-v2", "sentence-transformers", 384)


class ChromaExporter:
    """A collection and the collections of its namespaces. Chroma has no snapshots: records written or
    deleted during an export may shift the offsets, and the count check against ``count()`` says so."""

    supports_resume = True

    def __init__(self, uri: StoreURI) -> None:
        self.target = t = Target(uri)
        t.client(create=False)
        self.collections: dict[str, Any] = {}
        found = t.get(t.collection)
        if found is not None:
            self.collections[""] = found
        for c in t.list():  # the namespaces vecfmt wrote: marked, and named as collection_for names them
            md = c.metadata or {}
            ns = md.get(NAMESPACE_KEY)
            if md.get(NAMESPACE_OF) == t.collection and isinstance(ns, str) and ns \
                    and c.name == _name_or_none(t.collection, ns):  # fmt: skip
                self.collections[ns] = t.get(c.name)
        if not self.collections:
            raise StoreError(f"{t.label}: collection {t.collection!r} does not exist")
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vecfmt-chroma-page")
        self.dimension = 0
        self.metric = ""
        self.document = True

    def identity(self) -> tuple[str, ...]:
        return identity(self.target)

    def describe(self) -> Description:
        t = self.target
        counts: dict[str, int | None] = {}
        spaces: dict[str, str] = {}
        dims: dict[str, int] = {}
        for ns, c in self.collections.items():
            with t.errors(f"cannot count the records of {c.name!r}"):
                counts[ns] = int(c.count())
            spaces[ns] = space_of(c)
            dim = dimension_of(t, c)
            if dim is not None:
                dims[ns] = dim
        if not dims:
            raise StoreError(f"{t.label}: collection {t.collection!r} holds no records, so its dimension is unknown; "
                             "nothing to export")
        if len(set(dims.values())) > 1 or len(set(spaces.values())) > 1:
            shown = {ns or "(default)": (spaces[ns], dims.get(ns)) for ns in self.collections}
            raise StoreError(f"{t.label}: the namespaces' collections differ in space or dimension {shown}; a dump "
                             "holds one of each: export them one by one")
        self.dimension = next(iter(dims.values()))
        space = next(iter(spaces.values()))
        self.metric = space_to_metric(space, f"{t.label}: collection {t.collection!r}")
        marks = [(c.metadata or {}).get(DOCUMENT_KEY) for c in self.collections.values()]
        # A collection vecfmt wrote says whether its dump had documents; any other may hold some.
        self.document = not all(m is False for m in marks)
        first = next(iter(self.collections.values()))
        config = getattr(first, "configuration_json", None) or {}
        function = (config.get("embedding_function") or {}) if isinstance(config, dict) else {}
        model = DEFAULT_EMBEDDING if function.get("name") == "default" and self.dimension == 384 else None
        user_metadata = {k: v for k, v in (first.metadata or {}).items() if k not in MARKERS}
        extra = {SCHEME: {
            "collections": {ns: c.name for ns, c in self.collections.items()},
            "configuration": {k: config.get(k) for k in ("hnsw", "spann") if config.get(k)},
            "embedding_function": function or None,
            "metadata": user_metadata or None,
        }}  # fmt: skip
        return Description(
            source=Source(kind=SCHEME, name=t.collection, details={"space": space}),
            vectors=[VectorSpec("default", VALUES, self.dimension, self.metric)],
            namespaces=counts,
            document=self.document,
            embedding_model=model,
            extra=extra,
        )

    def slices(self, namespace: str) -> list[Slice]:
        return [Slice(namespace)]

    # --- reading -----------------------------------------------------------------------------------

    def _page(self, collection: Any, offset: int, limit: int) -> tuple[int, pa.RecordBatch]:
        """The records at ``offset`` as a canonical batch, and how many Chroma gave. Runs on the page thread:
        the client holds the GIL while it builds a page, and so does the conversion, so both go there and the
        caller's Parquet writing (which releases it) overlaps them."""
        with self.target.errors(f"cannot read records of {collection.name!r}"):
            page = collection.get(include=["embeddings", "metadatas", "documents"], limit=limit, offset=offset)
        n = len(page["ids"])
        return n, self._batch(collection.name, page) if n else pa.record_batch([])

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        if not self.dimension:
            self.describe()
        collection = self.collections[part.namespace]
        try:
            offset = int(resume) if resume else 0
        except ValueError:
            raise StoreError(f"chroma: resume token {resume!r} is not an offset") from None
        limit = min(batch_size, self.target.page)
        # Offsets follow Chroma's insertion order (its internal sequence ids): stable while nothing is deleted.
        pending: Future[tuple[int, pa.RecordBatch]] | None = self.pool.submit(self._page, collection, offset, limit)
        while pending is not None:
            n, batch = pending.result()
            if n == 0:
                break
            offset += n
            # A short page is the last; otherwise fetch the next while this one is written.
            pending = self.pool.submit(self._page, collection, offset, limit) if n == limit else None
            yield Chunk(batch, str(offset))

    def _batch(self, name: str, page: dict[str, Any]) -> pa.RecordBatch:
        ids = page["ids"]
        matrix = self._matrix(name, ids, page["embeddings"])
        # One dict per record is how the client hands metadata back: each becomes the dump's JSON text.
        metadata = [from_chroma(m, i) for m, i in zip(page["metadatas"] or [None] * len(ids), ids, strict=True)]
        arrays: dict[str, pa.Array] = {
            ID: pa.array(ids, pa.string()),
            VALUES: vectors_array(matrix),
            METADATA: pa.array(metadata, pa.string()),
        }
        documents = page.get("documents") or [None] * len(ids)
        if self.document:
            arrays[DOCUMENT] = pa.array(documents, pa.string())
        elif any(d is not None for d in documents):
            first = next(i for i, d in zip(ids, documents, strict=True) if d is not None)
            raise InvalidDataError(f"{self.target.label}: record {first!r} of {name!r} has a document, but the "
                                   "collection was written from a dump without documents; export would drop it")
        return pa.RecordBatch.from_pydict(arrays)

    def _matrix(self, name: str, ids: list[str], embeddings: Any) -> np.ndarray:
        """The page's vectors as one float32 matrix, refused when a record has none or another dimension.
        Chroma stores float32; the client hands back float64, either widened exactly (a folder) or parsed from
        the server's shortest decimal for each float32 (JSON). Rounding to float32 gives the stored value back
        in both cases (the shortest decimal of a float32 rounds to it), so the cast is exact."""
        dim = self.dimension
        matrix = np.asarray(embeddings) if embeddings is not None else np.empty((0, 0))
        if matrix.dtype == object or matrix.ndim != 2 or matrix.shape != (len(ids), dim):
            row = _first_bad_row(embeddings, len(ids), dim)
            raise InvalidDataError(f"{self.target.label}: record {ids[row]!r} of {name!r} has no vector of {dim} "
                                   "numbers (Chroma returns none for a cosine vector whose norm overflows float32)")
        return matrix.astype(np.float32)

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        return nearest(self.target, self.collections.get(namespace), vector, k)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.target.close()


def _name_or_none(collection: str, namespace: str) -> str | None:
    try:
        return collection_for(collection, namespace)
    except StoreError:
        return None


def _first_bad_row(embeddings: Any, n: int, dim: int) -> int:
    rows = list(embeddings) if embeddings is not None else []
    for i in range(n):
        row = rows[i] if i < len(rows) else None
        if row is None or len(row) != dim or any(v is None for v in row):
            return i
    return 0
