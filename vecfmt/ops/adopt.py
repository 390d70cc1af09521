"""``vecfmt adopt``: make a vecfmt dump of embeddings that already sit in Parquet or Arrow files (a
Hugging Face dataset, a pandas export, vector-io's VDF dumps), streaming, without a store in between.

Columns are mapped, not guessed silently: the id and vector columns are named (or, when there is
exactly one candidate, found), every other column becomes a key of each row's metadata object (unless
``metadata_columns`` narrows them), and a document column becomes ``document``. Vectors may be lists or
fixed-size lists of float16, float32 or float64; they are stored as float32 (float64 values are rounded
to the nearest float32; values beyond float32's range are refused, as are ragged, null and non-finite
vectors)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from vecfmt.errors import DumpError, InvalidDataError
from vecfmt.manifest import EmbeddingModel, Manifest, Source
from vecfmt.progress import RowProgress
from vecfmt.schema import DOCUMENT, ID, VALUES, check_metric
from vecfmt.storage import Location, redact, resolve
from vecfmt.writer import DumpWriter

VDF_META = "VDF_META.json"
BATCH_ROWS = 16_384
# vector-io's metric names (vdf_io/names.py) onto the canonical ones
VDF_METRICS = {"cosine": "cosine", "dot": "dot", "dotproduct": "dot", "ip": "dot", "euclidean": "euclidean",
               "l2": "euclidean", "manhattan": "manhattan", "hamming": "hamming"}


@dataclass
class Columns:
    """How a foreign table's columns map onto a dump's."""

    id: str
    vector: str
    document: str | None = None
    metadata: list[str] | None = None  # None: every other column


def adopt(
    source: str,
    out: str,
    *,
    id_column: str | None = None,
    vector_column: str | None = None,
    metadata_columns: list[str] | None = None,
    document_column: str | None = None,
    model: EmbeddingModel | None = None,
    metric: str = "cosine",
    namespace: str = "",
    overwrite: bool = False,
    progress: bool | None = None,
) -> Manifest:
    """Write the Parquet/Arrow dataset at ``source`` (a file or a folder, local or object storage) as a
    dump at ``out``. A vector-io dump (a folder with ``VDF_META.json``) is read by ``adopt_vdf``."""
    if is_vdf(source):
        return adopt_vdf(source, out, overwrite=overwrite, progress=progress)
    dataset = _dataset(resolve(source), source)
    columns = _map_columns(dataset.schema, id_column, vector_column, metadata_columns, document_column, source)
    with (
        DumpWriter(out, metric=check_metric(metric), model=model, overwrite=overwrite, fold_columns=True,
                   source=Source(kind="parquet", name=redact(source))) as writer,
        RowProgress("adopt", dataset.count_rows(), progress) as bar,
    ):
        for batch in _canonical_batches(dataset, columns):
            writer.write_batch(batch, namespace)
            bar.advance(batch.num_rows)
    assert writer.manifest is not None
    return writer.manifest


def is_vdf(source: str) -> bool:
    """A vector-io dump: a folder with ``VDF_META.json``."""
    return resolve(source).exists(VDF_META)


def adopt_vdf(source: str, out: str, *, index: str | None = None, overwrite: bool = False,
              progress: bool | None = None) -> Manifest:
    """A vector-io (VDF) dump as a vecfmt dump: each of the chosen index's namespaces, its model, metric
    and dimensions carried over; its flattened metadata columns folded back into one JSON object per row."""
    location = resolve(source)
    not_vdf = DumpError(f"{redact(source)}/{VDF_META} is not a vector-io manifest")
    try:
        meta = json.loads(location.read_bytes(VDF_META).to_pybytes())
        indexes: dict[str, list[dict[str, Any]]] = meta["indexes"]
    except (OSError, ValueError, KeyError, TypeError):
        raise not_vdf from None
    if not isinstance(indexes, dict) or not indexes or not all(
            isinstance(e, list) and e and all(isinstance(x, dict) for x in e) for e in indexes.values()):
        raise not_vdf
    if index is None:
        if len(indexes) != 1:
            raise InvalidDataError(f"{redact(source)} holds the indexes {sorted(indexes)}: choose one with index=")
        index = next(iter(indexes))
    if index not in indexes:
        raise InvalidDataError(f"{redact(source)} has no index {index!r} (it has {sorted(indexes)})")
    entries = indexes[index]
    first = entries[0]
    metric = VDF_METRICS.get(str(first.get("metric", "cosine")).lower())
    if metric is None:
        raise InvalidDataError(f"vector-io metric {first.get('metric')!r} has no vecfmt equivalent")
    vector = (first.get("vector_columns") or ["vector"])[0]
    model_name = first.get("model_name") or (first.get("model_map") or {}).get(vector, {}).get("model_name")
    model = EmbeddingModel(name=model_name) if model_name else None
    with (
        DumpWriter(out, metric=metric, model=model, overwrite=overwrite, fold_columns=True,
                   source=Source(kind=f"vdf:{meta.get('exported_from') or 'unknown'}", name=index),
                   extra={"adopted_from": {"format": "vdf", "version": meta.get("version"),
                                           "exported_from": meta.get("exported_from"), "index": index}}) as writer,
        RowProgress("adopt", sum(int(e.get("exported_vector_count") or 0) for e in entries) or None,
                    progress) as bar,
    ):
        for entry in entries:
            data_path = str(entry.get("data_path") or index)
            if data_path.startswith(("/", "\\")) or ".." in data_path.replace("\\", "/").split("/"):
                raise DumpError(f"{VDF_META} names data outside the dump ({data_path!r}); not read")
            dataset = _dataset(resolve(location.path(data_path)), f"{source}/{data_path}")
            columns = _map_columns(dataset.schema, meta.get("id_column") or "id", vector, None, None, source)
            dims = entry.get("dimensions")
            if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
                raise not_vdf
            namespace = str(entry.get("namespace") or "")
            written = writer.rows_by_namespace().get(namespace, 0)
            for batch in _canonical_batches(dataset, columns, dims):
                writer.write_batch(batch, namespace)
                bar.advance(batch.num_rows)
            promised = entry.get("exported_vector_count")
            got = writer.rows_by_namespace().get(namespace, 0) - written
            if isinstance(promised, int) and promised != got:  # vector-io recorded what it wrote
                raise InvalidDataError(f"{redact(source)}/{data_path} holds {got:,} rows, but {VDF_META} says "
                                       f"{promised:,} were exported: the dump is incomplete; nothing written")
    assert writer.manifest is not None
    return writer.manifest


def _dataset(location: Location, shown: str) -> pads.Dataset:
    try:
        if not location.is_dir():
            return pads.dataset(location.root, filesystem=location.fs, format=_format_of(location.root))
        dataset = pads.dataset(location.root, filesystem=location.fs, format="parquet",
                               exclude_invalid_files=False, ignore_prefixes=[".", "_", VDF_META])
        fragments = list(dataset.get_fragments())
        if not fragments:
            raise DumpError(f"{redact(shown)} holds no Parquet files")
        # files written at different times may differ in columns: the union of them all, not the first's
        schema = pa.unify_schemas([f.physical_schema for f in fragments], promote_options="permissive")
        return pads.dataset(location.root, schema=schema, filesystem=location.fs, format="parquet",
                            exclude_invalid_files=False, ignore_prefixes=[".", "_", VDF_META])
    except FileNotFoundError:
        raise DumpError(f"{redact(shown)} does not exist") from None
    except (OSError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DumpError(f"cannot read {redact(shown)} as Parquet or Arrow: {str(exc).splitlines()[0]}") from None


def _format_of(path: str) -> str:
    return "ipc" if path.endswith((".arrow", ".feather", ".ipc")) else "parquet"


def _is_vector_like(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and \
        pa.types.is_floating(t.value_type)


def _map_columns(schema: pa.Schema, id_column: str | None, vector_column: str | None,
                 metadata_columns: list[str] | None, document_column: str | None, source: str) -> Columns:
    names = schema.names
    if vector_column is None:
        candidates = [f.name for f in schema if _is_vector_like(f.type)]
        if len(candidates) != 1:
            raise InvalidDataError(f"{redact(source)}: name the vector column with vector= (float list columns: "
                                   f"{candidates or 'none'})")
        vector_column = candidates[0]
    id_column = id_column or ID
    if document_column is None and DOCUMENT in names and id_column != DOCUMENT and vector_column != DOCUMENT:
        document_column = DOCUMENT  # a column called document is the document unless said otherwise
    for role, name in (("id", id_column), ("vector", vector_column), ("document", document_column)):
        if name is not None and name not in names:
            raise InvalidDataError(f"{redact(source)} has no {role} column {name!r} (columns: {', '.join(names)})")
    if not _is_vector_like(schema.field(vector_column).type):
        raise InvalidDataError(f"column {vector_column!r} is {schema.field(vector_column).type}, not a list of floats")
    used = {id_column, vector_column, document_column}
    metadata = [c for c in names if c not in used] if metadata_columns is None else list(metadata_columns)
    for name in metadata:
        if name not in names:
            raise InvalidDataError(f"{redact(source)} has no metadata column {name!r}")
        if name in (ID, VALUES, DOCUMENT) or name.startswith("values_") or name == "sparse_values":
            raise InvalidDataError(f"column {name!r} would take the place of the dump's own {name!r} column; "
                                   "leave it out of the metadata columns or rename it")
    return Columns(id_column, vector_column, document_column, metadata)


def _canonical_batches(dataset: pads.Dataset, columns: Columns, dims: int | None = None) -> Iterator[pa.RecordBatch]:
    wanted = [columns.id, columns.vector, *([columns.document] if columns.document else []), *(columns.metadata or [])]
    scanner = dataset.scanner(columns=wanted, batch_size=BATCH_ROWS)
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        ids = batch.column(columns.id)
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)):
            raise InvalidDataError(f"id column {columns.id!r} is {ids.type}: ids must be strings or integers")
        ids = ids.cast(pa.string())
        vectors = float_vectors(batch.column(columns.vector), ids, columns.vector, dims)
        dims = vectors.type.list_size
        arrays, names = [ids, vectors], [ID, VALUES]
        if columns.document:
            text = batch.column(columns.document)
            if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
                    or pa.types.is_null(text.type)):
                raise InvalidDataError(f"document column {columns.document!r} is {text.type}, not text")
            arrays.append(text.cast(pa.string()))
            names.append(DOCUMENT)
        for name in columns.metadata or []:
            arrays.append(batch.column(name))
            names.append(name)
        yield pa.RecordBatch.from_arrays(arrays, names=names)


def float_vectors(column: pa.Array, ids: pa.Array, name: str, dims: int | None) -> pa.FixedSizeListArray:
    """A float list column as ``fixed_size_list<float32>``, vectorised: lengths, nulls and range checked
    with Arrow compute, values cast once."""
    if column.null_count:
        row = pc.index(pc.is_null(column), True).as_py()
        raise InvalidDataError(f"vector of id {ids[row].as_py()!r} is null")
    if pa.types.is_fixed_size_list(column.type):
        lengths = np.full(len(column), column.type.list_size)
    else:
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    size = int(lengths[0]) if dims is None else dims
    ragged = np.flatnonzero(lengths != size)
    if len(ragged):
        row = int(ragged[0])
        raise InvalidDataError(f"vector of id {ids[row].as_py()!r} has {int(lengths[row])} dimensions, "
                               f"the {'first' if dims is None else 'dump'}'s have {size} (ragged vectors)")
    if size == 0:
        raise InvalidDataError(f"the vectors of column {name!r} are empty")
    values = pc.list_flatten(column)
    if values.null_count:
        row = int(np.flatnonzero(pc.is_null(values).to_numpy(zero_copy_only=False))[0]) // size
        raise InvalidDataError(f"vector of id {ids[row].as_py()!r} has a null component")
    floats = values.to_numpy(zero_copy_only=False)
    if floats.dtype != np.float32:
        with np.errstate(over="ignore"):
            narrowed = floats.astype(np.float32)
        overflow = np.flatnonzero(np.isinf(narrowed) & np.isfinite(floats))
        if len(overflow):
            row = int(overflow[0]) // size
            raise InvalidDataError(f"vector of id {ids[row].as_py()!r} has a value beyond float32's range")
        floats = narrowed
    return pa.FixedSizeListArray.from_arrays(pa.array(floats, pa.float32()), size)
