"""Milvus's facts and vecfmt's rules for it: metrics, namespaces as partitions, field types as the
manifest's ``extra.milvus`` records them, and the vector encodings (float16 / bfloat16 to float32 exactly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecfmt.errors import StoreError
from vecfmt.stores.milvus.connect import NAME

TO_MILVUS = {"cosine": "COSINE", "dot": "IP", "euclidean": "L2"}
FROM_MILVUS = {v: k for k, v in TO_MILVUS.items()}
DEFAULT_PARTITION = "_default"

DENSE = ("FLOAT_VECTOR", "FLOAT16_VECTOR", "BFLOAT16_VECTOR")
SPARSE = "SPARSE_FLOAT_VECTOR"
KNOWN = (*DENSE, SPARSE)
UNSUPPORTED_VECTORS = ("BINARY_VECTOR", "INT8_VECTOR", "_ARRAY_OF_VECTOR", "ARRAY_OF_VECTOR")
METADATA_DESCRIPTION = "vecfmt: the dump's metadata"
DOCUMENT_DESCRIPTION = "vecfmt: the dump's document column"
STAGED_DESCRIPTION = "vecfmt: staged replace of "  # + the target's name: never anything else is dropped
DOCUMENT_MAX_LENGTH = 65_535  # bytes: Milvus's VARCHAR limit


def metric_to_milvus(metric: str) -> str:
    if metric not in TO_MILVUS:
        raise StoreError(f"milvus: Milvus has no {metric!r} metric for float vectors (it has cosine, dot as IP, "
                         "euclidean as L2)")
    return TO_MILVUS[metric]


def metric_from_milvus(name: str, field_name: str) -> str:
    if name.upper() not in FROM_MILVUS:
        raise StoreError(f"milvus: field {field_name!r} is indexed with metric {name!r}, which has no vecfmt name "
                         f"(known: {', '.join(FROM_MILVUS)})")
    return FROM_MILVUS[name.upper()]


def partition_of(namespace: str) -> str:
    """Namespaces are partitions; the default namespace is ``_default``. Other names must be partition names."""
    if not namespace:
        return DEFAULT_PARTITION
    if namespace == DEFAULT_PARTITION or not NAME.match(namespace):
        raise StoreError(f"milvus: namespace {namespace!r} cannot be a partition name (a letter or _, then letters, "
                         f"digits or _; not {DEFAULT_PARTITION}, which holds the default namespace)")
    return namespace


def namespace_of(partition: str) -> str:
    return "" if partition == DEFAULT_PARTITION else partition


def type_name(kind: Any) -> str:
    """A ``DataType`` (or its name or number) as its name, e.g. ``FLOAT_VECTOR``."""
    return getattr(kind, "name", None) or str(kind)


@dataclass
class Field:
    """One field of a collection as ``describe_collection`` reports it, JSON-ready (types by name)."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    element_type: str | None = None
    nullable: bool = False
    is_primary: bool = False
    is_partition_key: bool = False
    description: str = ""

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Field:
        element = d.get("element_type")
        return cls(
            name=d["name"], type=type_name(d["type"]),
            params={k: v for k, v in (d.get("params") or {}).items() if isinstance(v, (int, str, float, bool))},
            element_type=type_name(element) if element is not None else None,
            nullable=bool(d.get("nullable")), is_primary=bool(d.get("is_primary")),
            is_partition_key=bool(d.get("is_partition_key")), description=d.get("description") or "",
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.params:
            out["params"] = self.params
        if self.element_type:
            out["element_type"] = self.element_type
        for key in ("nullable", "is_primary", "is_partition_key"):
            if getattr(self, key):
                out[key] = True
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Field:
        return cls(d["name"], d["type"], dict(d.get("params") or {}), d.get("element_type"), bool(d.get("nullable")),
                   bool(d.get("is_primary")), bool(d.get("is_partition_key")), d.get("description") or "")  # fmt: skip

    @property
    def dim(self) -> int:
        return int(self.params.get("dim", 0))


def add_field(schema: Any, f: Field) -> None:
    """Add ``f`` to a pymilvus ``CollectionSchema``."""
    from pymilvus import DataType

    kwargs: dict[str, Any] = {}
    for key, value in f.params.items():
        if key in ("dim", "max_length", "max_capacity"):
            kwargs[key] = int(value)
    if f.element_type:
        kwargs["element_type"] = DataType[f.element_type]
    if f.nullable:
        kwargs["nullable"] = True
    if f.is_primary:
        kwargs["is_primary"] = True
    if f.is_partition_key:
        kwargs["is_partition_key"] = True
    if f.description:
        kwargs["description"] = f.description
    try:
        kind = DataType[f.type]
    except KeyError:
        raise StoreError(f"milvus: this pymilvus has no field type {f.type!r} (field {f.name!r})") from None
    schema.add_field(f.name, kind, **kwargs)


# --- vectors as the client hands them out and takes them ----------------------------------------------


def dense_matrix(values: list[Any], kind: str, dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of one vector field (pymilvus gives a FLOAT_VECTOR as a NumPy slice or a list of floats per row, a
    FLOAT16/BFLOAT16 one as bytes or a NumPy array per row) as an (n, dim) float32 matrix, exactly, and the
    mask of null rows (None when there is none). float16 and bfloat16 widen to float32 without rounding."""
    missing = [i for i, v in enumerate(values) if v is None]
    mask = None
    if missing:
        mask = np.zeros(len(values), dtype=bool)
        mask[missing] = True
        zero: Any = [0.0] * dim if kind == "FLOAT_VECTOR" else bytes(2 * dim)
        values = [zero if v is None else v for v in values]
    if kind == "FLOAT_VECTOR":
        if values and isinstance(values[0], np.ndarray):
            return np.stack(values).astype(np.float32, copy=False).reshape(len(values), dim), mask
        return np.asarray(values, dtype=np.float32).reshape(len(values), dim), mask
    # pymilvus 3 wraps each row of a byte-encoded vector in a one-element list: [b"..."].
    values = [v[0] if isinstance(v, list) and len(v) == 1 and isinstance(v[0], bytes) else v for v in values]
    raw = b"".join(v.tobytes() if isinstance(v, np.ndarray) else bytes(v) for v in values)
    if kind == "FLOAT16_VECTOR":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(len(values), dim), mask
    bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16  # bfloat16 is float32's upper half
    return bits.view(np.float32).reshape(len(values), dim), mask


def narrow(matrix: np.ndarray, kind: str, field_name: str) -> list[Any]:
    """Float32 rows for a FLOAT16/BFLOAT16 field, refused unless each value survives the narrowing exactly
    (a dump exported from such a field does), as one little-endian bytes value per row (what pymilvus takes)."""
    if kind == "FLOAT16_VECTOR":
        narrowed = matrix.astype(np.float16)
        back = narrowed.astype(np.float32)
    else:
        bits = matrix.view(np.uint32)
        narrowed = (bits >> 16).astype(np.uint16)
        back = (narrowed.astype(np.uint32) << 16).view(np.float32)
    if not np.array_equal(back.view(np.uint32), matrix.view(np.uint32)):
        raise StoreError(f"milvus: field {field_name!r} is {kind}, and some of the dump's float32 values would be "
                         "rounded to fit it; import into a FLOAT_VECTOR field instead")
    raw = np.ascontiguousarray(narrowed).view(np.uint8)  # little-endian half words, as Milvus stores them
    return [row.tobytes() for row in raw]


# --- what a collection is --------------------------------------------------------------------------------


@dataclass
class Collection:
    """A collection's fields sorted into the dump's columns: the primary key (``id``), dense vectors
    (``values``, ``values_<name>``), one sparse vector (``sparse_values``), the document and metadata fields,
    and the scalar fields (and dynamic keys) that become metadata keys."""

    name: str
    fields: list[Field]
    dynamic: bool
    pk: Field
    dense: list[Field]
    sparse: Field | None
    document: Field | None
    metadata: Field | None
    scalars: list[Field]
    partition_key: Field | None

    @classmethod
    def parse(cls, d: dict[str, Any], *, document: str | None, metadata: str | None) -> Collection:
        name = d.get("collection_name") or ""
        fields = [Field.parse(f) for f in d.get("fields") or []]
        functions = [f for f in d.get("functions") or []]
        made = {n for f in functions for n in (f.get("output_field_names") or [])}  # BM25 outputs: not data
        pk = next((f for f in fields if f.is_primary), None)
        if pk is None:
            raise StoreError(f"milvus: collection {name!r} has no primary key")
        if pk.type not in ("VARCHAR", "INT64"):
            raise StoreError(f"milvus: collection {name!r} has a {pk.type} primary key; vecfmt knows VARCHAR and INT64")
        dense = [f for f in fields if f.type in DENSE]
        sparse = [f for f in fields if f.type == SPARSE and f.name not in made]
        odd = [f for f in fields if f.type in UNSUPPORTED_VECTORS or ("VECTOR" in f.type and f.type not in KNOWN)]
        if odd:
            raise StoreError(f"milvus: collection {name!r}: field {odd[0].name!r} is a {odd[0].type}, which a vecfmt "
                             "dump cannot hold (float32 vectors and one sparse vector)")
        if len(sparse) > 1:
            raise StoreError(f"milvus: collection {name!r} has {len(sparse)} sparse vector fields; a dump holds one")
        doc = _pick(fields, document, "document", "VARCHAR", DOCUMENT_DESCRIPTION, name)
        meta = _pick(fields, metadata, "metadata", "JSON", METADATA_DESCRIPTION, name)
        taken = {pk.name, *(f.name for f in dense), *(f.name for f in sparse), *made}
        taken |= {f.name for f in (doc, meta) if f is not None}
        scalars = [f for f in fields if f.name not in taken]
        key = next((f for f in fields if f.is_partition_key), None)
        return cls(name, fields, bool(d.get("enable_dynamic_field")), pk, dense, sparse[0] if sparse else None, doc,
                   meta, scalars, key)  # fmt: skip

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


def _pick(
    fields: list[Field], option: str | None, default: str, kind: str, marker: str, collection: str
) -> Field | None:
    """The field holding the dump's document (VARCHAR) or metadata (JSON): the one the option names, else the
    one vecfmt marked, else one called ``default`` of the right type."""
    if option is not None:
        found = next((f for f in fields if f.name == option), None)
        if found is None or found.type != kind:
            raise StoreError(f"milvus: collection {collection!r} has no {kind} field {option!r}")
        return found
    marked = next((f for f in fields if f.description == marker and f.type == kind), None)
    return marked or next((f for f in fields if f.name == default and f.type == kind), None)
