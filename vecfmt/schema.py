"""The canonical Arrow schema of a vecfmt dump: column names, types, metrics, namespace folders.

This module is the code of ``spec/vecfmt-v1.md`` sections 3-5; tests hold the two together.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import InvalidDataError

FORMAT_NAME = "vecfmt"
FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1

ID = "id"
VALUES = "values"
SPARSE_VALUES = "sparse_values"
METADATA = "metadata"
DOCUMENT = "document"
NAMED_VECTOR_PREFIX = "values_"

DEFAULT_NAMESPACE = ""
DEFAULT_NAMESPACE_DIR = "__default__"

# Canonical metric names. Each store module maps its own names onto these (spec section 5).
METRICS = ("cosine", "dot", "euclidean", "manhattan", "hamming")

SPARSE_TYPE = pa.struct(
    [pa.field("indices", pa.list_(pa.uint32())), pa.field("values", pa.list_(pa.float32()))]
)


def vector_type(dimension: int) -> pa.FixedSizeListType:
    # A non-nullable child makes the Parquet leaf `required float`: one definition level less per float,
    # which reads 30-40% and writes 6-10% faster (spec section 4).
    return pa.list_(pa.field("element", pa.float32(), nullable=False), dimension)


def vector_column(name: str, primary: bool) -> str:
    """Column of a named vector: the primary vector lives in ``values`` (what Pinecone's import reads)."""
    return VALUES if primary else NAMED_VECTOR_PREFIX + name


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InvalidDataError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return metric


def is_vector_type(t: pa.DataType) -> bool:
    """True for a dense float32 vector, whatever its list child is called (``item`` or ``element``)."""
    return pa.types.is_fixed_size_list(t) and t.value_type == pa.float32()


def canonical_schema(
    vectors: Iterable[tuple[str, int]],
    *,
    sparse: bool = False,
    document: bool = False,
) -> pa.Schema:
    """The schema of every Parquet file of a dump. ``vectors`` are ``(column, dimension)`` pairs."""
    fields = [pa.field(ID, pa.string(), nullable=False)]
    for column, dimension in vectors:
        fields.append(pa.field(column, vector_type(dimension), nullable=column != VALUES))
    if sparse:
        fields.append(pa.field(SPARSE_VALUES, SPARSE_TYPE))
    fields.append(pa.field(METADATA, pa.string()))
    if document:
        fields.append(pa.field(DOCUMENT, pa.string()))
    return pa.schema(fields)


def same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Type equality by meaning: list child names (``item``/``element``) do not matter."""
    if pa.types.is_fixed_size_list(a) and pa.types.is_fixed_size_list(b):
        return a.list_size == b.list_size and same_type(a.value_type, b.value_type)
    if pa.types.is_list(a) and pa.types.is_list(b):
        return same_type(a.value_type, b.value_type)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        return [f.name for f in a] == [f.name for f in b] and all(
            same_type(fa.type, fb.type) for fa, fb in zip(a, b, strict=True)
        )
    if pa.types.is_large_string(a) or pa.types.is_string_view(a):
        a = pa.string()
    if pa.types.is_large_string(b) or pa.types.is_string_view(b):
        b = pa.string()
    return a == b


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast a batch onto the dump's schema: reorder columns, add missing optional ones as null,
    turn ``list<float|double>`` vectors into ``fixed_size_list<float32>`` after checking every row's length.
    Raises InvalidDataError naming the column and the first bad row."""
    n = batch.num_rows
    columns = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            if not field.nullable:
                raise InvalidDataError(f"column {field.name!r} is missing")
            columns.append(pa.nulls(n, field.type))
            continue
        column = batch.column(index)
        if not same_type(column.type, field.type):
            column = _cast(column, field)
        elif column.type != field.type:
            column = column.cast(field.type)  # only a rename of a list child, no data touched
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _cast(column: pa.Array, field: pa.Field) -> pa.Array:
    if is_vector_type(field.type):
        return _cast_vectors(column, field)
    try:
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidDataError(
            f"column {field.name!r} has type {column.type}, expected {field.type}"
        ) from exc


def _cast_vectors(column: pa.Array, field: pa.Field) -> pa.Array:
    dimension = field.type.list_size
    t = column.type
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
            raise InvalidDataError(f"column {field.name!r} holds {t.value_type}, not numbers")
        if pa.types.is_fixed_size_list(t):
            if t.list_size != dimension:
                raise InvalidDataError(
                    f"column {field.name!r} has dimension {t.list_size}, expected {dimension}"
                )
        else:
            lengths = pc.list_value_length(column)
            bad = pc.and_(pc.is_valid(lengths), pc.not_equal(lengths, dimension))
            if pc.any(bad).as_py():
                row = pc.index(bad, True).as_py()
                raise InvalidDataError(
                    f"column {field.name!r} row {row} has dimension {lengths[row].as_py()}, "
                    f"expected {dimension}"
                )
        return column.cast(field.type)
    raise InvalidDataError(f"column {field.name!r} has type {t}, expected {field.type}")


def vectors_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The ``(n, dim)`` float32 NumPy view of a vector column, sharing the Arrow buffer when it can.

    Null rows (allowed in named vector columns) come back as whatever the buffer holds (zeros)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    dimension = column.type.list_size
    # .values ignores the array's offset; slicing the flat child keeps it zero-copy for sliced arrays
    flat = column.values.slice(column.offset * dimension, len(column) * dimension)
    return flat.to_numpy(zero_copy_only=flat.null_count == 0).reshape(len(column), dimension)


def vectors_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """Wrap an ``(n, dim)`` float32 matrix as a vector column without copying it."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


_WORD_WEIGHTS: dict[int, np.ndarray] = {}
_MIX = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3's fmix64 constant


def vector_digests(matrix: np.ndarray, weights: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """A 64-bit digest of each row's bits: the row read as 64-bit words (32-bit ones for an odd width),
    each word mixed as in MurmurHash3's finaliser (xor-shift, multiply, xor-shift) and then multiplied by
    an odd random weight for its position, the words summed modulo 2**64. Every step is invertible per
    word, so a change to any one word always changes the digest; the mixing spreads a change in high bits
    only (signs, say) over the low bits, where a bare product modulo 2**64 keeps it in the top bits and
    lets such changes in two words cancel. -0.0 and 0.0 differ, as their bits do. ``weights`` gives the odd
    weights for a row width instead (digests written into a dump need a formula NumPy cannot change)."""
    rows = np.ascontiguousarray(matrix)
    words = rows.view("<u8") if rows.shape[1] % 2 == 0 else rows.view("<u4").astype(np.uint64)
    width = words.shape[1]
    if weights is not None:
        word_weights = weights(width)
    elif (word_weights := _WORD_WEIGHTS.get(width)) is None:
        word_weights = np.random.default_rng(width).integers(0, 2**63, width, dtype=np.uint64) * np.uint64(2) + 1
        _WORD_WEIGHTS[width] = word_weights
    mixed = words >> np.uint64(33)  # then in place where NumPy allows: fewer temporaries of the words' size
    mixed ^= words
    with np.errstate(over="ignore"):
        mixed *= _MIX
        mixed ^= mixed >> np.uint64(33)
        mixed *= word_weights
        return mixed.sum(axis=1, dtype=np.uint64)


def null_component_rows(column: pa.Array) -> np.ndarray:
    """Boolean mask of the non-null vectors with a null component (casts do not catch those)."""
    dimension = column.type.list_size
    flat = column.values.slice(column.offset * dimension, len(column) * dimension)
    if flat.null_count == 0:
        return np.zeros(len(column), dtype=bool)
    holes = flat.is_null().to_numpy(zero_copy_only=False).reshape(len(column), dimension).any(axis=1)
    return holes & column.is_valid().to_numpy(zero_copy_only=False)


def malformed_sparse_rows(column: pa.Array) -> np.ndarray:
    """Boolean mask of sparse vectors breaking spec 3.3: indices and values of different lengths,
    indices not strictly increasing, or values that are not finite (whole column at once, no row loop)."""
    n = len(column)
    if column.null_count == n:
        return np.zeros(n, dtype=bool)
    indices, values = column.field("indices"), column.field("values")
    lengths_i = pc.fill_null(pc.list_value_length(indices), 0).to_numpy(zero_copy_only=False)
    lengths_v = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    bad = lengths_i != lengths_v
    flat_v = pc.list_flatten(values).to_numpy(zero_copy_only=False)
    if not np.isfinite(flat_v).all():
        parents = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
        bad[parents[~np.isfinite(flat_v)]] = True
    flat_i = pc.list_flatten(indices).to_numpy(zero_copy_only=False).astype(np.int64)
    if len(flat_i) > 1:
        parents = pc.list_parent_indices(indices).to_numpy(zero_copy_only=False)
        same_row = parents[1:] == parents[:-1]
        bad[parents[1:][same_row & (np.diff(flat_i) <= 0)]] = True
    return bad


def non_finite_rows(column: pa.Array) -> np.ndarray:
    """Boolean mask of the non-null vectors holding NaN or inf (null slots are not looked at)."""
    bad = ~np.isfinite(vectors_numpy(column)).all(axis=1)
    if column.null_count:
        bad &= column.is_valid().to_numpy(zero_copy_only=False)
    return bad


def first_non_finite(column: pa.Array) -> int | None:
    """Row number of the first vector holding NaN or inf, or None."""
    bad = non_finite_rows(column)
    return int(np.argmax(bad)) if bad.any() else None


# The messages of ``parse_metadata_json``'s refusals, for callers that report them as problems.
NAN_OR_INFINITY = "metadata holds NaN or Infinity, which JSON (RFC 8259) does not allow"
NESTED_TOO_DEEPLY = "metadata nested too deeply to check"


def _refuse_constant(name: str) -> Any:
    raise ValueError(NAN_OR_INFINITY)


_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant)
# its scanner, called directly: (value, end index) of the JSON value starting at an index, strict alike
# (NaN refused), without decode()'s per-call Python; raises StopIteration where no value starts
scan_json_value = json.scanner.make_scanner(_STRICT_JSON)


def parse_metadata_json(text: str | bytes) -> Any:
    """One metadata value parsed as RFC 8259 JSON (spec 3.4). Python's ``json.loads`` also takes
    ``NaN``, ``Infinity`` and ``-Infinity``; those are refused here. Raises ValueError, whose message
    says what is wrong, also for nesting deeper than the parser can follow."""
    try:
        if isinstance(text, str):  # one shared decoder: json.loads builds a new one per call when given options
            return _STRICT_JSON.decode(text)
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(NESTED_TOO_DEEPLY) from None


def namespace_dir(namespace: str) -> str:
    """The folder of a namespace: ``__default__`` for the default one, else percent-encoded UTF-8
    so that any name is one safe path segment (spec section 4)."""
    if namespace == DEFAULT_NAMESPACE:
        return DEFAULT_NAMESPACE_DIR
    encoded = quote(namespace, safe="-_")
    # A leading "_" or "." is escaped too: "__default__" stays apart from the default folder,
    # and no namespace becomes ".", ".." or a hidden file.
    if encoded[0] in "_.":
        encoded = f"%{ord(encoded[0]):02X}" + encoded[1:]
    return encoded


def namespace_from_dir(folder: str) -> str:
    return DEFAULT_NAMESPACE if folder == DEFAULT_NAMESPACE_DIR else unquote(folder)
