"""Exact nearest neighbours by brute force: the ground truth that recall is measured against.

The data streams past the queries in chunks; each chunk costs one matrix product (BLAS, all cores) and
one comparison against every query's current k-th best score. Only the few entries that beat it are
merged, so after the first chunks the top-k upkeep is nearly free. The score block, the normalized data
block and the comparison mask are allocated once and reused. Memory: one score block of at most
``SCORE_BYTES`` (plus the normalized block and a mask of a quarter of it) plus the ids, whatever the data's
size."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError

# One (queries x rows) float32 block. With 1,000 queries x 768 dims on 2 cores, 64 MiB blocks in reused buffers
# ran 1.26x (in memory) and 1.29x (streaming a dump) the speed of 128 MiB blocks allocated per block; reused
# buffers alone, at 128 MiB, were within noise (0.95-1.11x); 32 MiB about as fast as 64, 8 MiB and less slower.
SCORE_BYTES = 64 << 20
# Metrics whose scores are matrix products. Manhattan and hamming have no such form.
SUPPORTED = ("cosine", "dot", "euclidean")


@dataclass
class TopK:
    ids: list[list[str]]  # per query, best first
    scores: np.ndarray  # (queries, k) float32 similarity, higher is closer (euclidean: minus the distance)


def _norms(matrix: np.ndarray) -> np.ndarray:
    """Row lengths, summed in float64: float32 squares overflow from about 1e19 and vanish below 1e-23."""
    return np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))


def normalized(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), for cosine."""
    norms = _norms(matrix)[:, None]
    return (matrix / np.where(norms > 0, norms, 1)).astype(matrix.dtype)


def exact_top_k(
    chunks: Iterable[tuple[Sequence[str] | pa.Array, np.ndarray]], queries: np.ndarray, k: int, metric: str
) -> TopK:
    """The ``k`` closest rows to each query under ``metric``, over ``chunks`` of (ids, float32 matrix).
    Among rows whose scores tie at the k-th place, which ones are kept is unspecified (recall must count a
    tied row as correct: ``TopK.scores[:, -1]`` is the k-th best score). Fewer than ``k`` rows in all: the
    missing places hold id "" and -inf."""
    if metric not in SUPPORTED:
        raise InvalidDataError(f"exact search supports the metrics {', '.join(SUPPORTED)}, not {metric!r}")
    if k < 1:
        raise InvalidDataError(f"k must be at least 1, not {k}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2:
        raise InvalidDataError("queries must be a matrix (one query vector per row)")
    center = None
    if metric == "cosine":
        q = normalized(q)
    elif metric == "euclidean":
        # score' = 2 q.x - |x|^2 orders rows as -|q - x|^2 does (converted at the end). Both sides are first
        # moved by the queries' mean, which changes no distance: far from the origin, |x|^2 would swamp
        # the differences between close points in float32.
        center = q.mean(axis=0, dtype=np.float64).astype(np.float32)
        q = (q - center) * 2
    nq = len(q)
    best_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    best_rows = np.full((nq, k), -1, dtype=np.int64)
    id_parts: list[pa.Array] = []
    seen = 0
    step = max(1, SCORE_BYTES // (4 * max(nq, 1)))
    buffers = _Buffers()
    for ids, matrix in chunks:
        ids = ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
        if len(ids) != len(matrix):
            raise InvalidDataError(f"{len(ids)} ids for {len(matrix)} vectors")
        if matrix.ndim != 2 or matrix.shape[1] != q.shape[1]:
            raise InvalidDataError(f"vectors of {matrix.shape[-1]} dimensions against queries of {q.shape[1]}")
        id_parts.append(ids)
        # blocks of even size: a chunk a little longer than ``step`` makes two halves, not a full block and
        # a sliver (a thin matrix product runs slower per row)
        size = -(-len(matrix) // -(-len(matrix) // step)) if len(matrix) else 1
        for start in range(0, len(matrix), size):
            block = np.ascontiguousarray(matrix[start:start + size], dtype=np.float32)
            rows = len(block)
            if metric == "cosine":
                block = _normalized_into(block, buffers.get("block", block.shape, np.float32))
            elif center is not None:
                block = np.subtract(block, center, out=buffers.get("block", block.shape, np.float32))
            scores = np.matmul(q, block.T, out=buffers.get("scores", (nq, rows), np.float32))
            if metric == "euclidean":
                scores -= np.einsum("ij,ij->i", block, block)[None, :]
            best_scores, best_rows = _merge(best_scores, best_rows, scores, seen + start, k,
                                            buffers.get("mask", (nq, rows), np.bool_))
        seen += len(matrix)
    if metric == "euclidean":
        moved = queries.astype(np.float32) - center
        squared = np.einsum("ij,ij->i", moved, moved)[:, None] - best_scores
        best_scores = np.where(np.isfinite(best_scores), -np.sqrt(np.maximum(squared, 0)), -np.inf)
    all_ids = pa.concat_arrays([a.cast(pa.string()) for a in id_parts]) if id_parts else pa.array([], pa.string())
    found = best_rows >= 0
    names = np.full(best_rows.shape, "", dtype=object)
    names[found] = np.asarray(all_ids.take(pa.array(best_rows[found])).to_pylist(), dtype=object)
    return TopK(ids=names.tolist(), scores=best_scores.astype(np.float32))


class _Buffers:
    """Arrays reused from block to block: a fresh array of a hundred megabytes per block would cost its
    page faults and zeroing each time (the allocator hands such sizes back to the system)."""

    def __init__(self) -> None:
        self.flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        size = int(np.prod(shape))
        flat = self.flat.get(name)
        if flat is None or flat.size < size:
            flat = self.flat[name] = np.empty(size, dtype=dtype)
        return flat[:size].reshape(shape)


def _normalized_into(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``normalized(block)`` written into ``out`` (no temporaries of the block's size)."""
    norms = _norms(block)
    np.divide(block, np.where(norms > 0, norms, 1).astype(block.dtype)[:, None], out=out)
    return out


def _merge(
    best_scores: np.ndarray, best_rows: np.ndarray, scores: np.ndarray, offset: int, k: int, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fold one (queries x rows) score block into each query's sorted top k (``mask``: a scratch array of
    the block's shape)."""
    nq, n = scores.shape
    kth = best_scores[:, -1]
    if np.isneginf(kth).any() or n <= k:  # the first block: partition instead of testing every entry
        take = min(k, n)
        cols = np.argpartition(-scores, take - 1, axis=1)[:, :take] if n > take else np.tile(np.arange(n), (nq, 1))
        qi = np.repeat(np.arange(nq), take)
        cols = cols.ravel()
    else:
        # strictly better: a tie keeps the earlier row
        qi, cols = np.nonzero(np.greater(scores, kth[:, None], out=mask))
        if qi.size == 0:
            return best_scores, best_rows
    candidate_scores = scores[qi, cols]
    all_q = np.concatenate([np.repeat(np.arange(nq), k), qi])
    all_scores = np.concatenate([best_scores.ravel(), candidate_scores])
    all_rows = np.concatenate([best_rows.ravel(), cols.astype(np.int64) + offset])
    # Empty places (row -1, -inf) sort last; among equal scores the earlier row wins.
    order = np.lexsort((np.where(all_rows < 0, np.iinfo(np.int64).max, all_rows), -all_scores, all_q))
    grouped_q = all_q[order]
    counts = np.bincount(grouped_q, minlength=nq)
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = order[rank < k]
    return all_scores[keep].reshape(nq, k), all_rows[keep].reshape(nq, k)


def recall_at_k(found: Sequence[Sequence[str]], truth: TopK, k: int) -> np.ndarray:
    """Per query: the share of the true top ``k`` that ``found`` returned (places the data could not
    fill, when it has fewer than ``k`` rows, are not counted)."""
    recalls = np.empty(len(truth.ids), dtype=np.float64)
    # One set per query: the lists are k long, so this loop is over queries, not rows.
    for i, (got, expected) in enumerate(zip(found, truth.ids, strict=True)):
        wanted = {e for e in expected[:k] if e}
        recalls[i] = len(wanted.intersection(got[:k])) / len(wanted) if wanted else 1.0
    return recalls
