"""``vecfmt inspect``: what a dump holds, at a glance."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.ops.incremental import open_link
from vecfmt.schema import METADATA, parse_metadata_json

METADATA_SAMPLE_ROWS = 10_000  # metadata keys and fill rates are estimated on this many rows per namespace
NORMALIZED_TOLERANCE = 1e-3


def inspect_dump(uri: str, *, sample_rows: int = 3, verify: bool = True) -> dict[str, Any]:
    """Counts per namespace, vectors, model, files, metadata keys with JSON types and fill rates,
    vector norm statistics, and a few sample rows, as one JSON-ready dict. For a delta also its base
    and, per namespace, the ids it deletes and the rows once it is applied (its figures are of the rows
    it adds or changes)."""
    dump = open_link(uri).dump
    m = dump.manifest
    report: dict[str, Any] = {
        "uri": dump.uri,
        "kind": m.kind,
        "base": None if m.base is None else asdict(m.base),
        "format_version": m.format_version,
        "created_at": m.created_at,
        "producer": m.producer,
        "source": None if m.source is None else m.source.__dict__,
        "embedding_model": None if m.embedding_model is None else m.embedding_model.__dict__,
        "vectors": [v.__dict__ for v in m.vectors],
        "sparse_values": m.sparse_values,
        "document": m.document,
        "total_rows": m.total_rows,
        "total_bytes": sum(f.bytes for f in m.files),
        "namespaces": [],
        "files": [f.__dict__ for f in m.files],
        "deletes": [f.__dict__ for f in m.deletes],
        "digests": None if m.digests is None else asdict(m.digests),
    }
    for ns in m.namespaces:
        norms = {v.column: _NormStats() for v in m.vectors}
        keys = _KeyStats()
        samples: list[dict[str, Any]] = []
        for batch in dump.batches(ns.name, verify=verify):
            for spec in m.vectors:
                norms[spec.column].add(dump.vectors(batch, spec.column), batch.column(spec.column))
            keys.add(batch.column(METADATA))
            if len(samples) < sample_rows:
                samples.extend(_sample(batch, m.vectors, sample_rows - len(samples)))
        report["namespaces"].append({
            "name": ns.name,
            "path": ns.path,
            "rows": ns.rows,
            "files": len(m.files_of(ns.name)),
            "bytes": sum(f.bytes for f in m.files_of(ns.name)),
            **({"deleted": ns.deleted, "rows_after": ns.rows_after} if m.is_delta else {}),
            "vector_norms": {c: s.result() for c, s in norms.items()},
            "metadata_keys": keys.result(),
            "sample_rows": samples,
        })
    return report


class _NormStats:
    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.low = np.inf
        self.high = -np.inf
        self.unit = 0

    def add(self, matrix: np.ndarray, column: pa.Array) -> None:
        if column.null_count:
            matrix = matrix[column.is_valid().to_numpy(zero_copy_only=False)]
        if len(matrix) == 0:
            return
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
        self.count += len(norms)
        self.total += float(norms.sum())
        self.low = min(self.low, float(norms.min()))
        self.high = max(self.high, float(norms.max()))
        self.unit += int(np.count_nonzero(np.abs(norms - 1.0) <= NORMALIZED_TOLERANCE))

    def result(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0}
        return {
            "count": self.count,
            "min": self.low,
            "mean": self.total / self.count,
            "max": self.high,
            "unit_fraction": self.unit / self.count,
            "normalized": self.unit == self.count,
        }


class _KeyStats:
    """Top-level metadata keys: JSON types seen and fill rate, on the first METADATA_SAMPLE_ROWS rows."""

    def __init__(self) -> None:
        self.rows = 0
        self.filled: Counter[str] = Counter()
        self.types: dict[str, Counter[str]] = {}

    def add(self, column: pa.Array) -> None:
        room = METADATA_SAMPLE_ROWS - self.rows
        if room <= 0:
            return
        texts = column.slice(0, room).to_pylist()
        self.rows += len(texts)
        for text in texts:  # JSON parsing is per row by nature; bounded by the sample size
            if text is None:
                continue
            try:
                value = parse_metadata_json(text)
            except ValueError:  # not JSON, NaN/Infinity, nested too deeply: validate names those
                continue
            if isinstance(value, dict):
                for key, item in value.items():
                    self.filled[key] += item is not None
                    self.types.setdefault(key, Counter())[_json_type(item)] += 1

    def result(self) -> dict[str, Any]:
        return {
            "sampled_rows": self.rows,
            "keys": {
                key: {"types": sorted(self.types[key]), "fill_rate": self.filled[key] / self.rows}
                for key in sorted(self.types)
            },
        }


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _sample(batch: pa.RecordBatch, vectors: list, n: int) -> list[dict[str, Any]]:
    rows = batch.slice(0, n).to_pylist()
    for row in rows:
        for spec in vectors:
            values = row.get(spec.column)
            if values is not None and len(values) > 6:
                row[spec.column] = [round(x, 6) for x in values[:6]] + [f"... {len(values)} dims"]
        if isinstance(row.get("document"), str) and len(row["document"]) > 120:
            row["document"] = row["document"][:117] + "..."
    return rows
