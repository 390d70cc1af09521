"""Qdrant's facts (distances, reserved payload keys) and what a collection holds (its dense and sparse vectors,
the payload keys vecfmt keeps there), read through the client; and a collection's configuration for a dump."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vecfmt.errors import StoreError
from vecfmt.manifest import Manifest
from vecfmt.stores.qdrant.connect import SCHEME, Target, check_name
from vecfmt.stores.qdrant.ids import ID_KEY, NAMESPACE_KEY

TO_QDRANT = {"cosine": "Cosine", "dot": "Dot", "euclidean": "Euclid", "manhattan": "Manhattan"}
FROM_QDRANT = {v: k for k, v in TO_QDRANT.items()}
UNNAMED = ""  # Qdrant's name of a collection's single unnamed dense vector
DEFAULT_VECTOR = "default"  # the dump's name for it
DEFAULT_SPARSE = "sparse"
DEFAULT_DOCUMENT = "document"
MARK = "vecfmt"  # the collection metadata key where vecfmt notes which payload key holds what


def metric_to_qdrant(metric: str) -> str:
    if metric not in TO_QDRANT:
        raise StoreError(f"qdrant: Qdrant has no {metric!r} distance (it has cosine, dot, euclidean, manhattan)")
    return TO_QDRANT[metric]


@dataclass
class Collection:
    name: str  # the real collection (an alias resolved)
    dense: dict[str, dict[str, Any]] = field(default_factory=dict)  # name ("" unnamed) -> size, distance, ...
    sparse: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> modifier
    metadata: dict[str, Any] = field(default_factory=dict)  # the collection's own metadata
    indexed: set[str] = field(default_factory=set)  # payload keys with an index
    points: int = 0

    @property
    def marks(self) -> dict[str, Any]:
        value = self.metadata.get(MARK)
        return value if isinstance(value, dict) else {}


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def read(target: Target, name: str) -> Collection:
    with target.errors("cannot read the collection"):
        info = target.client().get_collection(name)
    params = info.config.params
    c = Collection(name)
    vectors = params.vectors
    if vectors is not None and not isinstance(vectors, dict):
        vectors = {UNNAMED: vectors}
    for vname, p in (vectors or {}).items():
        if p.multivector_config is not None:  # a dump column holds one vector per row
            raise StoreError(f"qdrant: collection {name!r}: vector {vname or 'unnamed'!r} is a multivector (several "
                             "vectors per point), which a vecfmt dump cannot hold")
        c.dense[vname] = {"size": int(p.size), "distance": _value(p.distance),
                          "datatype": _value(p.datatype) if p.datatype is not None else None,
                          "on_disk": p.on_disk}  # fmt: skip
    for sname, p in (params.sparse_vectors or {}).items():
        c.sparse[sname] = {"modifier": _value(p.modifier) if p.modifier is not None else None}
    c.metadata = dict(getattr(info.config, "metadata", None) or {})
    c.indexed = set(info.payload_schema or {})
    c.points = int(info.points_count or 0)
    return c


def reserved_keys(document: str | None) -> set[str]:
    return {ID_KEY, NAMESPACE_KEY} | ({document} if document else set())


def dense_names(manifest: Manifest) -> dict[str, str]:
    """Dump column -> Qdrant vector name for a new collection: a dump whose only dense vector is called
    ``default`` gets Qdrant's unnamed vector (what clients query without ``using=``), others named vectors."""
    saved = manifest.extra.get(SCHEME) if isinstance(manifest.extra.get(SCHEME), dict) else {}
    names = {spec.column: spec.name for spec in manifest.vectors}
    if saved.get("unnamed") is True or (len(manifest.vectors) == 1 and manifest.vectors[0].name == DEFAULT_VECTOR
                                         and saved.get("unnamed") is not False):  # fmt: skip
        names[manifest.vectors[0].column] = UNNAMED
    for name in names.values():
        if name:
            check_name(name, "vector name")
    return names


def create(target: Target, name: str, manifest: Manifest, names: dict[str, str], sparse: str | None,
           document: str | None) -> None:  # fmt: skip
    """A collection for the dump: each dense vector with its dimension and distance (datatype and on-disk as
    exported from Qdrant), the sparse vector (its IDF modifier as exported), and vecfmt's marks."""
    from qdrant_client import models

    saved = manifest.extra.get(SCHEME) if isinstance(manifest.extra.get(SCHEME), dict) else {}
    saved_dense = saved.get("dense") if isinstance(saved.get("dense"), dict) else {}
    dense: dict[str, Any] = {}
    for spec in manifest.vectors:
        qname = names[spec.column]
        old = saved_dense.get(qname, {}) if isinstance(saved_dense.get(qname), dict) else {}
        dense[qname] = models.VectorParams(
            size=spec.dimension, distance=models.Distance(metric_to_qdrant(spec.metric)),
            datatype=models.Datatype(old["datatype"]) if old.get("datatype") else None, on_disk=old.get("on_disk"),
        )  # fmt: skip
    sparse_config = None
    if sparse is not None:
        modifier = (saved.get("sparse_modifier") or None) if saved.get("sparse") == sparse else None
        sparse_config = {sparse: models.SparseVectorParams(modifier=models.Modifier(modifier) if modifier else None)}
    vectors: Any = dense
    if list(dense) == [UNNAMED]:
        vectors = dense[UNNAMED]
    namespaced = any(ns.name for ns in manifest.namespaces)
    marks = {MARK: {"document": document, "id_key": ID_KEY, "namespace_key": NAMESPACE_KEY, "namespaces": namespaced}}
    with target.errors(f"cannot create the collection {name!r}"):
        target.client().create_collection(name, vectors_config=vectors or None, sparse_vectors_config=sparse_config,
                                          metadata=marks)  # fmt: skip


def mark_namespaced(target: Target, c: Collection) -> None:
    """Note in the collection's metadata that points hold namespaces: an export of a collection vecfmt made
    looks for them only then (a filtered count costs a pass over every payload in local mode)."""
    if c.marks.get("namespaces") is True:
        return
    with target.errors("cannot update the collection's metadata"):
        target.client().update_collection(c.name, metadata={MARK: {**c.marks, "namespaces": True}})


def index_namespaces(target: Target, name: str) -> None:
    """A keyword index on the namespace key: a server filters and counts namespaces through it (facets need it)."""
    from qdrant_client import models

    with target.errors("cannot index the namespace key"):
        target.client().create_payload_index(name, NAMESPACE_KEY, field_schema=models.PayloadSchemaType.KEYWORD,
                                             wait=True)  # fmt: skip


def namespace_filter(namespace: str) -> Any:
    """Points of one namespace: the default namespace is the points without a namespace key."""
    from qdrant_client import models

    if not namespace:
        return models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=NAMESPACE_KEY))])
    return models.Filter(must=[models.FieldCondition(key=NAMESPACE_KEY, match=models.MatchValue(value=namespace))])
