"""pgvector's binary formats and PostgreSQL binary COPY, built and parsed with NumPy and Arrow: no per-row Python."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import InvalidDataError
from vecfmt.schema import SPARSE_TYPE, vectors_numpy

DENSE_TYPES = {"vector": ">f4", "halfvec": ">f2"}  # element type of pgvector's binary send format
MAX_SPARSE_NNZ = 16_000
HALF_MAX = 65504.0
TEXT_TYPES = {"text", "varchar", "bpchar"}
INT_TYPES = {"int2": ">i2", "int4": ">i4", "int8": ">i8"}

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
COPY_TRAILER = b"\xff\xff"


# --- binary formats: decoding what ADBC hands over -------------------------------------------------


def _binary_parts(column: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Buffer | None, np.ndarray]:
    """offsets (n+1, int64, absolute into data), lengths, data buffer, validity of a binary column
    (ADBC gives pgvector types as ``arrow.opaque`` over binary)."""
    storage = column.storage if isinstance(column, pa.ExtensionArray) else column
    n = len(storage)
    wide = pa.types.is_large_binary(storage.type)
    itemsize = 8 if wide else 4
    offsets = np.frombuffer(storage.buffers()[1], dtype=np.int64 if wide else np.int32, count=n + 1,
                            offset=storage.offset * itemsize).astype(np.int64)  # fmt: skip
    valid = np.ones(n, dtype=bool) if storage.null_count == 0 else storage.is_valid().to_numpy(zero_copy_only=False)
    return offsets, np.diff(offsets), storage.buffers()[2], valid


def decode_dense(column: pa.Array, dimension: int, typname: str, ids: pa.Array, sql_column: str
                 ) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """pgvector's binary ``vector``/``halfvec`` (int16 dim, int16 unused, big-endian elements) for a whole
    batch at once -> an ``(n, dim)`` float32 matrix, and the validity mask when some rows are NULL."""
    element = np.dtype(DENSE_TYPES[typname])
    width = 4 + element.itemsize * dimension
    offsets, lengths, data, valid = _binary_parts(column)
    n = len(lengths)
    bad = valid & (lengths != width)
    if bad.any():
        row = int(np.argmax(bad))
        raise InvalidDataError(
            f"column {sql_column!r} row with id {ids[row].as_py()!r} has "
            f"{(int(lengths[row]) - 4) // element.itemsize} dimensions, expected {dimension}"
        )
    count = int(valid.sum())
    if count == 0:
        matrix = np.zeros((n, dimension), np.float32)
    else:
        raw = np.frombuffer(data, np.uint8, count=count * width, offset=int(offsets[0])).reshape(count, width)
        values = raw[:, 4:].view(element).astype(np.float32)  # byte swap (and half -> single) in one pass
        if count == n:
            matrix = values
        else:
            matrix = np.zeros((n, dimension), np.float32)
            matrix[valid] = values
    return matrix, (None if count == n else valid)


def decode_sparse(column: pa.Array, ids: pa.Array, sql_column: str) -> pa.StructArray:
    """pgvector's binary ``sparsevec`` (int32 dim, int32 nnz, int32 unused, int32 indices[nnz] 0-based,
    float4 values[nnz], big-endian) for a whole batch -> ``sparse_values`` with 0-based uint32 indices."""
    offsets, lengths, data, valid = _binary_parts(column)
    n = len(lengths)
    buf = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    nnz = np.zeros(n, np.int64)
    if valid.any():
        header = buf[starts[valid, None] + np.arange(4, 8)].copy().view(">i4").reshape(-1)
        nnz[valid] = header
    if (valid & (lengths != 12 + 8 * nnz)).any():
        row = int(np.argmax(valid & (lengths != 12 + 8 * nnz)))
        raise InvalidDataError(f"column {sql_column!r} row with id {ids[row].as_py()!r} is not a sparsevec")
    list_offsets = np.zeros(n + 1, np.int32)
    np.cumsum(nnz, out=list_offsets[1:])
    total = int(list_offsets[-1])
    # byte position of every element: row start + 12 (+ 4*nnz for the values), then 4 bytes each
    row_of = np.repeat(np.arange(n), nnz)
    within = np.arange(total) - list_offsets[:-1][row_of]
    index_pos = starts[row_of] + 12 + 4 * within
    value_pos = index_pos + 4 * nnz[row_of]
    quad = np.arange(4)
    indices = buf[index_pos[:, None] + quad].view(">i4").reshape(-1).astype(np.uint32)
    values = buf[value_pos[:, None] + quad].view(">f4").reshape(-1).astype(np.float32)
    mask = pa.array(~valid) if not valid.all() else None
    return pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(indices, pa.uint32())),
         pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(values, pa.float32()))],
        fields=list(SPARSE_TYPE), mask=mask,
    )  # fmt: skip


# --- binary formats: building COPY rows for a whole batch ------------------------------------------


class CopyRows:
    """The rows of one binary COPY batch, built column by column with no Python per row.

    Fixed-width fields (field count, lengths, vectors, integer ids) go into NumPy structured arrays with
    big-endian fields; variable-width ones (text ids, JSON, documents) stay Arrow binary arrays. Arrow's
    ``binary_join_element_wise`` then lays each row's pieces side by side in one C++ pass."""

    def __init__(self, n: int, n_fields: int) -> None:
        self.n = n
        self._pieces: list[pa.Array] = []
        self._pending: list[tuple[np.dtype, Any]] = []
        self.fixed(np.dtype(">i2"), n_fields)

    def fixed(self, dtype: np.dtype, value: Any) -> None:
        """Raw bytes of a fixed width (no length prefix)."""
        self._pending.append((dtype, value))

    def field(self, dtype: np.dtype, value: Any) -> None:
        """A non-null field of fixed width: its int32 length, then the value."""
        self.fixed(np.dtype(">i4"), dtype.itemsize)
        self.fixed(dtype, value)

    def variable(self, data: pa.Array) -> None:
        """A field of varying width (binary, nulls become SQL NULL): int32 length or -1, then the bytes."""
        data = data.cast(pa.large_binary())
        self.fixed(np.dtype(">i4"), pc.binary_length(data).fill_null(-1).to_numpy(zero_copy_only=False))
        self._flush()
        self._pieces.append(data.fill_null(b"") if data.null_count else data)

    def _flush(self) -> None:
        if not self._pending:
            return
        dtype = np.dtype([(f"f{i}", t) for i, (t, _) in enumerate(self._pending)])
        block = np.empty(self.n, dtype)
        for i, (_, value) in enumerate(self._pending):
            block[f"f{i}"] = value
        self._pending = []
        self._pieces.append(_fixed_binary(block.view(np.uint8), dtype.itemsize, self.n))

    def build(self) -> pa.Buffer:
        self._flush()
        rows = self._pieces[0] if len(self._pieces) == 1 else pc.binary_join_element_wise(
            *self._pieces, pa.scalar(b"", pa.large_binary())
        )
        offsets = np.frombuffer(rows.buffers()[1], np.int64, count=len(rows) + 1, offset=rows.offset * 8)
        return rows.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _fixed_binary(data: np.ndarray, width: int, n: int, valid: np.ndarray | None = None) -> pa.Array:
    """``n`` values of ``width`` bytes each as an Arrow large_binary array, without copying; with ``valid``,
    ``data`` holds only the valid rows and the others are null."""
    if valid is None:
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
        return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(valid * width, out=offsets[1:])
    bitmap = pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(
        pa.large_binary(), n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=int(n - valid.sum())
    )


def dense_payload(matrix: np.ndarray, typname: str) -> tuple[np.dtype, np.ndarray]:
    """The binary ``vector``/``halfvec`` of every row as one structured array (dim, unused, elements)."""
    n, dimension = matrix.shape
    dtype = np.dtype([("dim", ">i2"), ("unused", ">i2"), ("v", DENSE_TYPES[typname], (dimension,))])
    out = np.empty(n, dtype)
    out["dim"] = dimension
    out["unused"] = 0
    out["v"] = matrix
    return dtype, out


def sparse_payload(column: pa.Array, dimension: int) -> pa.Array:
    """pgvector's binary ``sparsevec`` of every row (nulls stay null), from ``sparse_values``. Explicit
    zeros are left out: pgvector refuses them, and the vector is the same without them."""
    n = len(column)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    indices_list, values_list = column.field("indices"), column.field("values")
    index_offsets = indices_list.offsets.to_numpy().astype(np.int64)  # .offsets follow a slice, .values not
    value_offsets = values_list.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(index_offsets) * valid
    row_of = np.repeat(np.arange(n), lengths)
    within = np.arange(len(row_of)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat_indices = indices_list.values.to_numpy(zero_copy_only=False)[index_offsets[:-1][row_of] + within]
    flat_values = values_list.values.to_numpy(zero_copy_only=False)[value_offsets[:-1][row_of] + within]
    keep = flat_values != 0
    if not keep.all():
        flat_indices, flat_values, row_of = flat_indices[keep], flat_values[keep], row_of[keep]
    nnz = np.bincount(row_of, minlength=n)
    byte_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(nnz * 4, out=byte_offsets[1:])
    header = np.empty(n, np.dtype([("dim", ">i4"), ("nnz", ">i4"), ("unused", ">i4")]))
    header["dim"] = dimension
    header["nnz"] = nnz
    header["unused"] = 0

    def words(flat: np.ndarray, dtype: str) -> pa.Array:
        data = pa.py_buffer(flat.astype(dtype))
        return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(byte_offsets), data])

    parts = [_fixed_binary(header.view(np.uint8), 12, n), words(flat_indices, ">i4"), words(flat_values, ">f4")]
    rows = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.large_binary()))
    return rows if valid.all() else pc.if_else(pa.array(valid), rows, pa.scalar(None, pa.large_binary()))


def check_sparse(column: pa.Array, dimension: int, ids: pa.Array, max_nnz: int = MAX_SPARSE_NNZ) -> None:
    """What pgvector's sparsevec_recv refuses, said before writing: indices ascending and < dimension,
    at most 16,000 non-zeros (1,000 under an HNSW index), finite values."""
    valid = column.is_valid()
    indices_list = column.field("indices").filter(valid)
    values_list = column.field("values").filter(valid)
    if len(indices_list) == 0:
        return
    row_ids = ids.filter(valid)
    lengths = pc.list_value_length(indices_list).to_numpy(zero_copy_only=False)
    value_lengths = pc.list_value_length(values_list).to_numpy(zero_copy_only=False)

    def fail(row: int, problem: str) -> None:
        raise InvalidDataError(f"sparse_values of id {row_ids[row].as_py()!r} {problem}")

    if (lengths != value_lengths).any():
        fail(int(np.argmax(lengths != value_lengths)), "has different numbers of indices and values")
    if (lengths > max_nnz).any():
        limit = "an HNSW index takes" if max_nnz < MAX_SPARSE_NNZ else "pgvector stores"
        fail(int(np.argmax(lengths > max_nnz)), f"has more than the {max_nnz} non-zero values {limit}")
    indices = pc.list_flatten(indices_list).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(values_list).to_numpy(zero_copy_only=False)
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    if (indices >= dimension).any():
        fail(int(row_of[np.argmax(indices >= dimension)]), f"has an index >= the dimension {dimension}")
    if not np.isfinite(values).all():
        fail(int(row_of[np.argmax(~np.isfinite(values))]), "holds NaN or inf")
    same_row = row_of[1:] == row_of[:-1]
    unordered = same_row & (np.diff(indices) <= 0)
    if unordered.any():
        fail(int(row_of[1:][np.argmax(unordered)]), "has indices that are not strictly ascending")


# --- binary formats: encoding ids and dense vectors ------------------------------------------------


def encode_id(rows: CopyRows, ids: pa.Array, typname: str, column: str) -> None:
    if typname in TEXT_TYPES:
        rows.variable(ids)
        return
    if typname in INT_TYPES:
        try:
            numbers = ids.cast(pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = pc.index(pc.invert(pc.match_substring_regex(ids, r"^[+-]?\d+$")), True).as_py()
            raise InvalidDataError(f"id {ids[max(bad, 0)].as_py()!r} is not a whole number, but column "
                                   f"{column!r} is {typname}") from None  # fmt: skip
        dtype = np.dtype(INT_TYPES[typname])
        info = np.iinfo(dtype)
        out_of_range = (numbers < info.min) | (numbers > info.max)
        if out_of_range.any():
            raise InvalidDataError(f"id {ids[int(np.argmax(out_of_range))].as_py()!r} does not fit column "
                                   f"{column!r} ({typname})")  # fmt: skip
        rows.field(dtype, numbers)
        return
    # uuid: 36 characters 8-4-4-4-12 (or 32 hex digits), decoded as hex for the whole batch at once
    text = pc.utf8_lower(pc.replace_substring(ids, "-", ""))
    good = pc.and_(pc.equal(pc.binary_length(text), 32), pc.match_substring_regex(text, r"^[0-9a-f]{32}$"))
    if not pc.all(good).as_py():
        raise InvalidDataError(f"id {ids[pc.index(good, False).as_py()].as_py()!r} is not a uuid, but column "
                               f"{column!r} is uuid")  # fmt: skip
    hex_digits = np.frombuffer(text.buffers()[2], np.uint8, count=32 * len(ids), offset=_first_offset(text))
    nibbles = np.where(hex_digits >= ord("a"), hex_digits - ord("a") + 10, hex_digits - ord("0")).astype(np.uint8)
    pairs = nibbles.reshape(len(ids), 16, 2)
    rows.field(np.dtype((np.uint8, 16)), (pairs[:, :, 0] << 4) | pairs[:, :, 1])


def _first_offset(array: pa.Array) -> int:
    return int(np.frombuffer(array.buffers()[1], np.int32, count=1, offset=array.offset * 4)[0])


def encode_dense(rows: CopyRows, column: pa.Array, typname: str, ids: pa.Array, source: str, name: str
                 ) -> None:  # fmt: skip
    matrix = vectors_numpy(column)  # null rows read as whatever the buffer holds; they are sent as NULL
    if typname == "halfvec":
        too_big = np.abs(matrix) > HALF_MAX
        if too_big.any():
            row = int(np.argmax(too_big.any(axis=1)))
            raise InvalidDataError(
                f"vector {source!r} of id {ids[row].as_py()!r} holds a value beyond +-{HALF_MAX:.0f}, "
                f"which halfvec column {name!r} cannot store"
            )
    if column.null_count == 0:  # straight into the row block: one big-endian copy of the vectors
        element = np.dtype(DENSE_TYPES[typname])
        rows.fixed(np.dtype(">i4"), 4 + element.itemsize * matrix.shape[1])
        rows.fixed(np.dtype(">i2"), matrix.shape[1])
        rows.fixed(np.dtype(">i2"), 0)
        rows.fixed(np.dtype((element, (matrix.shape[1],))), matrix)
        return
    dtype, payload = dense_payload(matrix, typname)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    rows.variable(_fixed_binary(payload[valid].view(np.uint8), dtype.itemsize, len(valid), valid))
