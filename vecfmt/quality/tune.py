"""``vecfmt tune TARGET``: sweep a store's search-time knob (pgvector HNSW ``ef_search``, IVFFlat ``probes``)
and measure what each value gives: recall@k against the exact ground truth, and latency per search.

Queries are vectors sampled from the store's own data (one pass of its exporter, a reservoir of
``queries`` rows); the ground truth is exact (``groundtruth.exact_top_k``, a second pass, bounded memory).
Each query is left out of its own results: it is searched for k+1 neighbours, and its own id is dropped
from both the store's answer and the truth, so a trivially found self-match does not inflate recall.
Every query is searched once untimed first (warm caches), then timed once per value, the values taking
turns within each query.

The recommendation is the smallest value whose mean recall@k meets ``target_recall``. Optionally
(``rebuild``) indexes with other build parameters are compared on a private copy of the data (pgvector:
a temporary table in a session of its own; the store's table and indexes are only read).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vecfmt.errors import VecfmtError
from vecfmt.progress import RowProgress
from vecfmt.quality.groundtruth import SUPPORTED, TopK, exact_top_k, recall_at_k
from vecfmt.schema import ID, vectors_numpy
from vecfmt.stores.base import Exporter, KnobInfo, StoreURI, open_exporter

MAX_K = 1000
MAX_QUERIES = 100_000
CURRENT = "current index"


class TuneError(VecfmtError):
    """Bad tune arguments, or a store with nothing to tune."""


@dataclass
class TuneRow:
    index: str  # CURRENT, or the trial's build parameters ("m=16 ef_construction=64")
    knob: str
    value: int
    recall: float  # mean recall@k over the queries
    recall_min: float  # the worst query's
    p50_ms: float
    p95_ms: float


@dataclass
class TuneReport:
    target: str  # the store URI, secrets redacted
    namespace: str
    metric: str
    k: int
    queries: int
    target_recall: float
    knob: str
    setting: str  # the store's name for the knob (hnsw.ef_search)
    trades: str
    default: int
    rows: list[TuneRow]
    recommended: int | None  # smallest value of the store's current index meeting target_recall
    trials: dict[str, int | None] = field(default_factory=dict)  # rebuild label -> its smallest such value
    plot: str | None = None
    notes: list[str] = field(default_factory=list)

    HEADERS: ClassVar[tuple[str, ...]] = ("index", "setting", "value", "recall@k", "worst query", "p50 ms", "p95 ms")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["message"] = self.message
        return out

    def table(self) -> list[list[str]]:
        """One list of cells per row, in ``HEADERS``' order, the recommended values marked with ``*``."""
        best = {CURRENT: self.recommended, **self.trials}
        return [[r.index, r.knob, f"{r.value}{' *' if best.get(r.index) == r.value else ''}", f"{r.recall:.3f}",
                 f"{r.recall_min:.2f}", f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}"] for r in self.rows]  # fmt: skip

    @property
    def message(self) -> str:
        return _verdict(self.rows, CURRENT, self.recommended, self)


def tune(
    target: str,
    *,
    k: int = 10,
    queries: int = 100,
    target_recall: float = 0.95,
    knob: str | None = None,
    values: Sequence[int] | None = None,
    namespace: str | None = None,
    rebuild: Sequence[tuple[int, int]] | None = None,
    plot: str | None = None,
    progress: bool | None = None,
    seed: int = 0,
    batch_size: int = 10_000,
) -> TuneReport:
    """Sweep ``knob`` (default: the store's first) of ``target``'s search over ``values`` (default: the
    store's candidates) with ``queries`` query vectors sampled from its data (``seed``), measure recall@``k``
    against the exact ground truth and latency, and recommend the smallest value reaching ``target_recall``.
    ``rebuild``: (m, ef_construction) pairs built on a private copy and swept likewise (pgvector).
    ``plot``: a local path for a recall-vs-latency PNG. ``progress``: None shows it on a terminal only."""
    _check_arguments(k, queries, target_recall, values, rebuild, plot)
    label = str(StoreURI.parse(target))
    exporter = open_exporter(target)
    with ExitStack() as closing:
        closing.callback(exporter.close)
        knobs = _knobs(exporter, label)
        if knob is None:
            knob = next(iter(knobs))
        if knob not in knobs:
            raise TuneError(f"{label} has no search-time knob {knob!r} (it has: {', '.join(knobs)})")
        info = knobs[knob]
        desc = exporter.describe()
        if not desc.vectors:
            raise TuneError(f"{label} has no dense vectors to search")
        spec = desc.vectors[0]
        if spec.metric not in SUPPORTED:
            raise TuneError(f"{label}: exact ground truth supports {', '.join(SUPPORTED)}, not {spec.metric}")
        ns = _namespace(desc.namespaces, namespace, label)
        notes: list[str] = []
        sweep = _values(info, values, k, notes)

        def chunks(what: str) -> Iterator[tuple[pa.Array, np.ndarray]]:
            with RowProgress(f"tune: {what}", desc.namespaces.get(ns), progress) as bar:
                for part in exporter.slices(ns):
                    for chunk in exporter.batches(part, batch_size=batch_size):
                        batch = chunk.batch
                        bar.advance(batch.num_rows)
                        yield batch.column(ID), vectors_numpy(batch.column(spec.column))

        trial: Any = None
        if rebuild:
            make_trial: Callable[[str], Any] | None = getattr(exporter, "index_trial", None)
            if make_trial is None:
                raise TuneError(f"{label}: this store cannot build trial indexes (rebuild)")
            trial = closing.enter_context(make_trial(ns))
            if callable(getattr(trial, "check", None)):
                for m, ef_construction in rebuild:  # refused now, not after the sweep
                    trial.check(m=m, ef_construction=ef_construction)

        rows_seen, query_ids, query_vectors = _sample(chunks("sampling queries"), queries, seed)
        if rows_seen <= k:
            raise TuneError(f"{label}: namespace {ns!r} has {rows_seen} rows; tuning recall@{k} needs more "
                            f"than {k}")  # fmt: skip
        if rows_seen < queries:
            notes.append(f"the namespace has only {rows_seen} rows: every one is a query")
        truth = _leave_one_out(exact_top_k(chunks("exact ground truth"), query_vectors, k + 1, spec.metric),
                               query_ids, k)  # fmt: skip

        rows = _sweep(exporter, label, CURRENT, knob, sweep, query_ids, query_vectors, truth, k, ns, progress, notes)
        recommended = _smallest(rows, target_recall)
        trials: dict[str, int | None] = {}
        for m, ef_construction in rebuild or ():
            trial.build(m=m, ef_construction=ef_construction)
            trial_knobs = trial.search_knobs()
            trial_knob = knob if knob in trial_knobs else next(iter(trial_knobs))
            trial_values = sweep if trial_knob == knob else _values(trial_knobs[trial_knob], None, k, [])
            name = f"m={m} ef_construction={ef_construction}"
            found = _sweep(trial, label, name, trial_knob, trial_values, query_ids, query_vectors, truth, k, ns,
                           progress, notes)  # fmt: skip
            trials[name] = _smallest(found, target_recall)
            rows += found
        if rebuild:
            notes.append("trial indexes are built on a copy in the session's temporary buffers; compare their "
                         "latencies with each other rather than with the current index")  # fmt: skip
        report = TuneReport(target=label, namespace=ns, metric=spec.metric, k=k, queries=len(query_ids),
                            target_recall=target_recall, knob=knob, setting=info.setting, trades=info.trades,
                            default=info.default, rows=rows, recommended=recommended, trials=trials,
                            notes=notes)  # fmt: skip
        if plot is not None:
            save_plot(report, plot)
            report.plot = plot
        return report


# --- steps ---------------------------------------------------------------------------------------------


def _check_arguments(k: int, queries: int, target_recall: float, values: Sequence[int] | None,
                     rebuild: Sequence[tuple[int, int]] | None, plot: str | None) -> None:  # fmt: skip
    def whole(x: object) -> bool:
        return isinstance(x, int | np.integer) and not isinstance(x, bool)

    if not whole(k) or not 1 <= k <= MAX_K:
        raise TuneError(f"k must be a whole number between 1 and {MAX_K}, not {k!r}")
    if not whole(queries) or not 1 <= queries <= MAX_QUERIES:
        raise TuneError(f"queries must be a whole number between 1 and {MAX_QUERIES:,}, not {queries!r}")
    if isinstance(target_recall, bool) or not isinstance(target_recall, int | float) or not 0 < target_recall <= 1:
        raise TuneError(f"the target recall must be above 0 and at most 1, not {target_recall!r}")
    if values is not None and (len(values) == 0 or not all(whole(v) for v in values)):
        raise TuneError(f"values must be whole numbers, at least one, not {list(values)!r}")
    for pair in rebuild or ():
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(whole(x) for x in pair)):
            raise TuneError(f"each rebuild is a pair of whole numbers (m, ef_construction), not {pair!r}")
    if plot is not None:
        folder = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(folder):
            raise TuneError(f"cannot write the plot {plot}: folder {folder} does not exist")


def _knobs(exporter: Exporter, label: str) -> dict[str, KnobInfo]:
    if not callable(getattr(exporter, "search", None)):
        raise TuneError(f"{label}: this store cannot search, so there is nothing to tune")
    search_knobs = getattr(exporter, "search_knobs", None)
    if not callable(search_knobs):
        raise TuneError(f"{label}: this store has no search-time knob to tune")
    knobs: dict[str, KnobInfo] = search_knobs()
    if not knobs:
        raise TuneError(f"{label} has no search-time knob to tune: its vector column has no index that takes one "
                        "(for its metric), so its searches are exact")  # fmt: skip
    return knobs


def _namespace(namespaces: dict[str, int | None], wanted: str | None, label: str) -> str:
    if wanted is not None:
        if wanted not in namespaces:
            raise TuneError(f"{label} has no namespace {wanted!r}")
        return wanted
    if "" in namespaces or len(namespaces) == 1:
        return "" if "" in namespaces else next(iter(namespaces))
    names = ", ".join(repr(n) for n in list(namespaces)[:5])
    raise TuneError(f"{label} has several namespaces ({names}{', ...' if len(namespaces) > 5 else ''}); "
                    "pick one to tune on")  # fmt: skip


def _values(info: KnobInfo, values: Sequence[int] | None, k: int, notes: list[str]) -> list[int]:
    if values is None:
        chosen = [v for v in info.values if not info.below_k_truncates or v > k]
        if len(chosen) < len(info.values):
            notes.append(f"{info.setting} values up to k={k} left out: a search for k+1 neighbours returns at most "
                         f"{info.setting} rows")  # fmt: skip
        return chosen or [info.high]
    for v in values:
        if not info.low <= v <= info.high:
            raise TuneError(f"{info.setting} must be between {info.low} and {info.high}, not {v}")
    return sorted({int(v) for v in values})


def _sample(chunks: Iterator[tuple[pa.Array, np.ndarray]], n: int, seed: int) -> tuple[int, pa.Array, np.ndarray]:
    """How many rows the stream has, and ``n`` of them drawn uniformly (each row gets a random key; the
    ``n`` smallest keys stay): at most ``n`` + one batch of vectors in memory."""
    rng = np.random.default_rng(seed)
    seen = 0
    keys = np.empty(0)
    ids: pa.Array = pa.array([], pa.string())
    vectors: np.ndarray | None = None
    for batch_ids, matrix in chunks:
        seen += len(matrix)
        keys = np.concatenate([keys, rng.random(len(matrix))])
        ids = pa.concat_arrays([ids, batch_ids.cast(pa.string())])
        vectors = matrix.copy() if vectors is None else np.concatenate([vectors, matrix])
        if len(keys) > n:
            keep = np.sort(np.argpartition(keys, n - 1)[:n])
            keys, ids, vectors = keys[keep], ids.take(pa.array(keep)), vectors[keep]
    if vectors is None:
        return 0, ids, np.empty((0, 0), np.float32)
    return seen, ids, np.ascontiguousarray(vectors, np.float32)


def _drop_own(found: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``found`` ((q, k+1) ids), the row without its first ``own`` id (or without its last
    place when it does not hold it): (q, k), and the place dropped in each row."""
    places = found.shape[1]
    match = found == own[:, None]
    drop = np.where(match.any(axis=1), match.argmax(axis=1), places - 1)
    return found[np.arange(places)[None, :] != drop[:, None]].reshape(len(found), places - 1), drop


def _leave_one_out(truth: TopK, query_ids: pa.Array, k: int) -> TopK:
    ids = np.asarray(truth.ids, dtype=object)
    own = np.asarray(query_ids.to_pylist(), dtype=object)
    kept, drop = _drop_own(ids, own)
    keep = np.arange(k + 1)[None, :] != drop[:, None]
    return TopK(ids=kept.tolist(), scores=truth.scores[keep].reshape(len(ids), k))


def _sweep(searcher: Any, label: str, index: str, knob: str, values: list[int], query_ids: pa.Array,
           vectors: np.ndarray, truth: TopK, k: int, namespace: str, progress: bool | None,
           notes: list[str]) -> list[TuneRow]:  # fmt: skip
    """Every query at every value, timed one search at a time. The values take turns within each query
    (in an order rotated from query to query), so that a machine that gets busier or quieter during the
    sweep slows every value alike instead of whichever ran at the time."""
    uses_index = getattr(searcher, "uses_index", None)
    if callable(uses_index):
        # A value at which the store would not read the index (PostgreSQL may price a large ef_search above
        # reading a namespace through another index and sorting it exactly) measures no index: left out.
        served = [v for v in values if uses_index(vectors[0], k + 1, namespace=namespace, **{knob: v})]
        which = "" if index == CURRENT else f" (trial {index})"
        if not served:
            raise TuneError(f"{label}{which}: searches of namespace {namespace!r} do not read the index {knob} "
                            "tunes at any value tried (the planner chose another plan, such as reading a small "
                            "namespace through another index and sorting it exactly): nothing to tune "
                            "there")  # fmt: skip
        if len(served) < len(values):
            left_out = ", ".join(str(v) for v in values if v not in served)
            notes.append(f"{index}: {knob} {left_out} left out: at those values searches of namespace {namespace!r} "
                         "do not read the index (the planner chose another plan)")  # fmt: skip
            values = served
    own = np.asarray(query_ids.to_pylist(), dtype=object)
    seconds = np.empty((len(values), len(vectors)))
    found = np.full((len(values), len(vectors), k + 1), "", dtype=object)
    with RowProgress(f"tune: {index}, {knob}", (len(values) + 1) * len(vectors), progress) as bar:
        for vector in vectors:  # warm-up, untimed, at the largest value: the index's pages in memory
            searcher.search(vector, k + 1, namespace=namespace, **{knob: max(values)})
            bar.advance(1)
        # One search per query and value is the measurement itself (latency per search), not a row loop.
        for i, vector in enumerate(vectors):
            for turn in range(len(values)):
                j = (i + turn) % len(values)
                started = time.perf_counter()
                hits = searcher.search(vector, k + 1, namespace=namespace, **{knob: values[j]})
                seconds[j, i] = time.perf_counter() - started
                found[j, i, : len(hits)] = [hit[0] for hit in hits]
                bar.advance(1)
    rows = []
    for j, value in enumerate(values):
        kept, _ = _drop_own(found[j], own)
        recalls = recall_at_k([[x for x in row if x] for row in kept.tolist()], truth, k)
        rows.append(TuneRow(index=index, knob=knob, value=value, recall=float(recalls.mean()),
                            recall_min=float(recalls.min()), p50_ms=float(np.percentile(seconds[j], 50) * 1000),
                            p95_ms=float(np.percentile(seconds[j], 95) * 1000)))  # fmt: skip
    return rows


def _smallest(rows: list[TuneRow], target_recall: float) -> int | None:
    meeting = [r.value for r in rows if r.recall >= target_recall]
    return min(meeting) if meeting else None


def _verdict(rows: list[TuneRow], index: str, value: int | None, report: TuneReport) -> str:
    mine = [r for r in rows if r.index == index]
    if value is not None:
        row = next(r for r in mine if r.value == value)
        text = (f"{report.setting} = {value} is the smallest value with recall@{report.k} >= {report.target_recall} "
                f"({row.recall:.3f}, p50 {row.p50_ms:.2f} ms)")  # fmt: skip
    else:
        best = max(mine, key=lambda r: r.recall)
        text = (f"no value of {report.setting} reaches recall@{report.k} {report.target_recall}: the best is "
                f"{best.recall:.3f} at {best.value}; try larger values or rebuild the index with larger m / "
                "ef_construction")  # fmt: skip
    for name, trial in report.trials.items():
        text += f"; {name}: " + (f"{report.setting} = {trial}" if trial is not None else "none reaches it")
    return text


def save_plot(report: TuneReport, path: str) -> None:
    """Recall@k against p50 latency, one line per index, each point labelled with its value, and the
    target recall as a dashed line: a PNG drawn with matplotlib's Agg renderer (no display needed)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TuneError("the plot needs matplotlib: pip install matplotlib") from None
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index in dict.fromkeys(r.index for r in report.rows):
        rows = sorted((r for r in report.rows if r.index == index), key=lambda r: r.value)
        axes.plot([r.p50_ms for r in rows], [r.recall for r in rows], marker="o", label=index)
        for r in rows:
            axes.annotate(str(r.value), (r.p50_ms, r.recall), textcoords="offset points", xytext=(4, -10), fontsize=8)
    axes.axhline(report.target_recall, linestyle="--", color="grey", label=f"target {report.target_recall}")
    axes.set_xlabel("p50 latency per search (ms)")
    axes.set_ylabel(f"recall@{report.k}")
    axes.set_title(f"{report.setting}: recall vs latency ({report.queries} queries, {report.metric})", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise TuneError(f"cannot write the plot {path}: {exc.strerror or exc}") from None
