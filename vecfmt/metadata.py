"""How store values become a dump's ``metadata`` JSON: the rules every store module uses (spec 3.4.1).

- Output is strict JSON (``allow_nan=False``). A NaN or ±Infinity float is refused with an error naming
  the column and the row id: turning it into ``null`` would silently lose it.
- bytes -> base64 text (RFC 4648, padded); date, datetime, time -> ISO 8601 text; timedelta -> seconds
  (a number); Decimal -> its exact text; UUID -> its text; NumPy scalars and arrays -> their Python values.
  Any other type is refused, naming the column and row.
- A store's own metadata column must hold JSON objects; a JSON array or scalar there is wrapped as
  ``{"<column>": value}`` (as pgvector does for non-object jsonb). Text that is not JSON is refused;
  empty text counts as no metadata.
- Folded columns are merged over the metadata object, a folded key winning; null values are left out.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import InvalidDataError


def dumps(value: Any) -> str:
    """Strict JSON text of ``value`` under the rules above (raises ValueError / TypeError)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()  # then encoded by these same rules (a float32 NaN is still refused)
    raise TypeError(f"a {type(value).__name__} value has no JSON form")


def _refusal(column: str, ident: Any, value: Any) -> InvalidDataError:
    """Why ``value`` (column ``column`` of row ``ident``) cannot be encoded."""
    try:
        dumps(value)
    except ValueError:
        return InvalidDataError(f"column {column!r} of row {ident!r} holds NaN or Infinity, which JSON "
                                "cannot hold (vecfmt refuses rather than write null); fix the value")
    except TypeError as exc:
        return InvalidDataError(f"column {column!r} of row {ident!r}: {exc}")
    return InvalidDataError(f"column {column!r} of row {ident!r} cannot be encoded as JSON")


def _loads(text: str, column: str, ident: Any) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidDataError(f"column {column!r} of row {ident!r} is not JSON: {shown!r}") from None


def as_objects(own: pa.Array, column: str, ids: pa.Array) -> pa.Array:
    """A metadata column's JSON text with every non-object value wrapped as ``{column: value}``.

    Rows that look like objects pass through untouched (byte for byte; checking their JSON is
    ``vecfmt validate``'s job); only the others are parsed, one by one, as they are rare."""
    own = own.cast(pa.string())
    blank = pc.fill_null(pc.match_substring_regex(own, r"^\s*$"), False)
    own = pc.if_else(blank, pa.scalar(None, pa.string()), own)
    odd = pc.fill_null(pc.invert(pc.match_substring_regex(own, r"^\s*\{")), False)
    if not pc.any(odd).as_py():
        return own
    wrapped = []
    for i in np.flatnonzero(odd.to_numpy(zero_copy_only=False)):
        text, ident = own[i].as_py(), ids[i].as_py()
        value = {column: _loads(text, column, ident)}
        try:
            wrapped.append(dumps(value))
        except (ValueError, TypeError):
            raise _refusal(column, ident, value[column]) from None
    return pc.replace_with_mask(own, odd, pa.array(wrapped, pa.string()))


def fold(ids: pa.Array, own: pa.Array | None, own_column: str, folded: pa.RecordBatch) -> pa.Array:
    """One JSON object per row: the ``own`` metadata column's object (non-objects wrapped, see
    ``as_objects``) with ``folded``'s non-null values merged over it."""
    # pyarrow has no JSON writer (pyarrow.json only reads), so building one object per row from typed
    # columns is a per-row loop; stores use it only for columns that are not already JSON.
    ident_list = ids.to_pylist()
    texts = as_objects(own, own_column, ids).to_pylist() if own is not None else [None] * len(ids)
    out = []
    for ident, row, text in zip(ident_list, folded.to_pylist(), texts, strict=True):
        merged = _loads(text, own_column, ident) if text else {}  # an object: as_objects wrapped the rest
        merged.update({k: v for k, v in row.items() if v is not None})
        try:
            out.append(dumps(merged))
        except (ValueError, TypeError):
            for key, value in merged.items():  # find the culprit only once something failed
                try:
                    dumps(value)
                except (ValueError, TypeError):
                    raise _refusal(key if key in row else own_column, ident, value) from None
            raise
    return pa.array(out, pa.string())
