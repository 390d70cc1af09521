"""How a LanceDB export splits a namespace into slices: ranges of row addresses, all read at one table version.

A Lance row address is ``fragment id << 32 | row offset in the fragment``; a filter on ``_rowaddr`` reads
only the rows in range, inside a fragment too (a table vecfmt imports is one fragment per 1,048,576 rows).
The first range is open at the start and the last at the end, so the ranges partition the rows of any
version: no row falls outside every slice, none in two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROW_ADDRESS = "_rowaddr"
_OFFSET_BITS = 32
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_LAYOUT_BATCH = 1 << 20  # row addresses per batch of the layout scan: bounded memory on any table size

Bound = list[int] | None  # [fragment, offset], None: open


def scan_layout(query: Any, namespace_column: str | None) -> pa.Table:
    """Where the rows of the version ``query`` reads are: per namespace and fragment, how many rows and at
    which first and last offset (``namespace``, ``fragment``, ``rows``, ``first``, ``last``). One scan of the
    row addresses (and the namespace column), aggregated a batch at a time; no vector is read. A NULL
    namespace is the default one, ``""``."""
    columns = [ROW_ADDRESS] if namespace_column is None else [namespace_column, ROW_ADDRESS]
    parts = []
    for batch in query.select(columns).limit(None).to_batches(_LAYOUT_BATCH):
        addresses = batch.column(ROW_ADDRESS)
        names = (pa.nulls(batch.num_rows, pa.string()) if namespace_column is None
                 else batch.column(namespace_column)).fill_null("")  # fmt: skip
        rows = pa.table({
            "namespace": names,
            "fragment": pc.shift_right(addresses, _OFFSET_BITS),
            "offset": pc.bit_wise_and(addresses, pa.scalar(_OFFSET_MASK, pa.uint64())),
        })
        parts.append(rows.group_by(["namespace", "fragment"]).aggregate(
            [("offset", "count"), ("offset", "min"), ("offset", "max")]))
    if not parts:
        return pa.table({"namespace": pa.array([], pa.string()), "fragment": pa.array([], pa.uint64()),
                         "rows": pa.array([], pa.int64()), "first": pa.array([], pa.uint64()),
                         "last": pa.array([], pa.uint64())})  # fmt: skip
    merged = pa.concat_tables(parts).group_by(["namespace", "fragment"]).aggregate(
        [("offset_count", "sum"), ("offset_min", "min"), ("offset_max", "max")])
    return merged.rename_columns(["namespace", "fragment", "rows", "first", "last"])


def namespace_rows(layout: pa.Table) -> dict[str, int]:
    counts = layout.group_by("namespace").aggregate([("rows", "sum")])
    return dict(zip(counts.column("namespace").to_pylist(), counts.column("rows_sum").to_pylist(), strict=True))


def plan_ranges(layout: pa.Table, namespace: str, count: int) -> list[tuple[Bound, Bound]]:
    """``count`` ranges of row addresses (``[fragment, offset]`` bounds, the first open at the start and the
    last at the end) with about as many of ``namespace``'s rows each. A cut inside a fragment is placed
    between the namespace's first and last offset there, as if its rows were spread evenly in between;
    fewer ranges when cuts coincide."""
    mine = layout.filter(pc.equal(layout.column("namespace"), namespace)).sort_by("fragment")
    fragments = mine.column("fragment").to_numpy().astype(np.uint64)
    rows = mine.column("rows").to_numpy().astype(np.int64)
    first = mine.column("first").to_numpy().astype(np.int64)
    last = mine.column("last").to_numpy().astype(np.int64)
    ends = np.cumsum(rows)
    total = int(ends[-1]) if len(ends) else 0
    targets = np.arange(1, count, dtype=np.int64) * total // count  # the row each later slice starts at
    cuts = set()  # at most count - 1, in Python ints: no int64 overflow in the product below
    for target, i in zip(targets.tolist(), np.searchsorted(ends, targets, side="right").tolist(), strict=True):
        into = target - int(ends[i] - rows[i])  # the namespace's rows in fragment i before the cut
        span = int(last[i] - first[i]) + 1
        cuts.add((int(fragments[i]), int(first[i]) + into * span // int(rows[i])))
    bounds: list[Bound] = [None, *([f, o] for f, o in sorted(cuts)), None]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def address_filter(start: Bound, end: Bound) -> str | None:
    """The LanceDB filter of the rows from ``start`` (included) to ``end`` (excluded); None for all."""
    terms = []
    if start is not None:
        terms.append(f"{ROW_ADDRESS} >= {_address(start)}")
    if end is not None:
        terms.append(f"{ROW_ADDRESS} < {_address(end)}")
    return " AND ".join(terms) or None


def _address(bound: list[int]) -> int:
    fragment, offset = (int(part) for part in bound)  # ints from the key (JSON), never text into the filter
    return fragment << _OFFSET_BITS | offset
