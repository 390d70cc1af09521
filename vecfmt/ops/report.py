"""``vecfmt report DUMP -o report.html``: one self-contained HTML page for a person deciding whether a
backup or a migration is sound (``inspect`` stays the quick text view).

One streaming pass over the dump (every file's size and SHA-256 checked as it is read) gathers, per
namespace and dense vector column: the norm of every vector (4 bytes a row, for the histogram),
a 64-bit digest of every vector's float32 bits (8 bytes a row, for duplicates), zero, near-zero and
non-finite vectors; and two uniform samples (bottom-k: every row draws a random key, the smallest keys
stay): the primary vectors of ``sample`` rows across the dump for a 2-D PCA map, and the metadata of up
to ``sample`` rows per namespace for key fill rates and types. A second pass, only over a namespace
with duplicates, reads ids to name a few of them. Memory at 1,000,000 x 768: 12 MB a column for norms
and digests, the samples, and the files the reader holds in flight.

Plots are drawn by matplotlib (Agg, no display) into inline PNGs; the page loads nothing: its
Content-Security-Policy allows only inline styles and ``data:`` images."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt import __version__
from vecfmt.errors import VecfmtError
from vecfmt.manifest import Manifest, VectorSpec
from vecfmt.ops.inspect import METADATA_SAMPLE_ROWS, _KeyStats
from vecfmt.progress import RowProgress
from vecfmt.reader import Dump
from vecfmt.schema import ID, METADATA, vector_digests, vectors_numpy

DEFAULT_SAMPLE = 10_000  # rows in the PCA map, and metadata rows per namespace (at most METADATA_SAMPLE_ROWS)
NEAR_ZERO_NORM = 1e-6  # a vector whose L2 norm is below this is near zero (cosine of it is meaningless)
HISTOGRAM_BINS = 50
LEGEND_NAMESPACES = 10  # namespaces drawn apart in the plots; the rest are drawn as one "other"
DUPLICATE_GROUPS_SHOWN = 5
IDS_PER_GROUP_SHOWN = 5
SEED = 0  # the samples are the same from one run to the next
ROWS_PER_STEP = 4_096  # rows whose norms and digests are computed at once (bounds their temporaries)


class ReportError(VecfmtError):
    """A report that cannot be made: matplotlib missing, a verify JSON that is not ``vecfmt verify``'s."""


# --- what one pass gathers ------------------------------------------------------------------------


@dataclass
class VectorStats:
    """One dense vector column of one namespace."""

    column: str
    vectors: int = 0  # non-null vectors
    nulls: int = 0  # rows without this (named) vector
    non_finite: int = 0
    zero: int = 0  # every component 0 (or -0)
    near_zero: int = 0  # norm below NEAR_ZERO_NORM, zero ones included
    duplicate_rows: int = 0  # rows whose vector has the same bits as an earlier row's
    duplicated_vectors: int = 0  # distinct vectors that occur more than once
    duplicate_examples: list[list[str]] = field(default_factory=list)  # ids per duplicated vector, the largest
    norms: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))  # finite norms, in row order
    _norm_parts: list[np.ndarray] = field(default_factory=list)
    _digest_parts: list[np.ndarray] = field(default_factory=list)  # one per row; null rows marked by _valid_parts
    _valid_parts: list[np.ndarray] = field(default_factory=list)
    _example_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # positions in the namespace
    _example_digests: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))  # of those rows

    def add(self, column: pa.Array) -> None:
        # in slices of rows: the float64 norms and the 64-bit digests make temporaries 2-4 times the
        # vectors' size, which for a whole 64 MiB file would cost more memory than the reader itself
        for start in range(0, len(column), ROWS_PER_STEP):
            self._add(column.slice(start, ROWS_PER_STEP))

    def _add(self, column: pa.Array) -> None:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        matrix = vectors_numpy(column)[valid] if column.null_count else vectors_numpy(column)
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
        finite = np.isfinite(norms)
        self.vectors += len(matrix)
        self.nulls += len(column) - len(matrix)
        self.non_finite += int(len(norms) - finite.sum())
        self.zero += int(np.count_nonzero(norms == 0))
        self.near_zero += int(np.count_nonzero(norms < NEAR_ZERO_NORM))
        self._norm_parts.append(norms[finite].astype(np.float32))
        self._digest_parts.append(vector_digests(vectors_numpy(column)))  # null rows too: masked by ``valid``
        self._valid_parts.append(valid)

    def finish(self) -> np.ndarray:
        """Counts the duplicates once the namespace is read; returns the row positions (in the namespace)
        of the most repeated vectors, whose ids ``name_examples`` is then given (none: no duplicates)."""
        self.norms = np.concatenate(self._norm_parts) if self._norm_parts else np.empty(0, np.float32)
        digests = np.concatenate(self._digest_parts) if self._digest_parts else np.empty(0, np.uint64)
        valid = np.concatenate(self._valid_parts) if self._valid_parts else np.empty(0, bool)
        self._norm_parts, self._digest_parts, self._valid_parts = [], [], []
        distinct, counts = np.unique(digests[valid], return_counts=True)
        self.duplicate_rows = int(valid.sum()) - len(distinct)
        repeated = counts > 1
        self.duplicated_vectors = int(repeated.sum())
        largest = np.argsort(-counts[repeated], kind="stable")[:DUPLICATE_GROUPS_SHOWN]
        shown = distinct[repeated][largest]
        self._example_rows = np.flatnonzero(valid & np.isin(digests, shown))
        self._example_digests = digests[self._example_rows]
        return self._example_rows

    def name_examples(self, ids: np.ndarray) -> None:
        """``ids``: the ids of the rows ``finish`` returned, in the same order."""
        # a loop over at most DUPLICATE_GROUPS_SHOWN groups, in the order of their first row
        for digest in dict.fromkeys(self._example_digests.tolist()):
            group = ids[self._example_digests == digest]
            more = [f"... {len(group)} rows in all"] if len(group) > IDS_PER_GROUP_SHOWN else []
            self.duplicate_examples.append([str(i) for i in group[:IDS_PER_GROUP_SHOWN]] + more)


@dataclass
class NamespaceStats:
    name: str
    path: str
    rows_manifest: int
    rows_read: int = 0
    files: int = 0
    bytes: int = 0
    vectors: dict[str, VectorStats] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # inspect's key stats, on a uniform sample
    metadata_null_rows: int = 0  # in the sample


class _BottomK:
    """A uniform sample of ``size`` rows of a stream of unknown length: every row draws a random key and
    the rows with the ``size`` smallest keys stay (verify's _Sample does the same for ids and digests).
    Rows are taken (copied) out of their batch, so no file's buffers stay alive."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng = size, rng
        self.keys: list[np.ndarray] = []
        self.tables: list[pa.Table] = []
        self.held = 0
        self.bound = np.inf  # keys at or above it cannot enter the sample any more

    def offer(self, table: pa.Table) -> None:
        keys = self.rng.random(table.num_rows)
        chosen = np.flatnonzero(keys < self.bound)
        if not len(chosen):
            return
        self.keys.append(keys[chosen])
        self.tables.append(table.take(pa.array(chosen)))
        self.held += len(chosen)
        if self.held > 2 * self.size:
            self._trim()

    def _trim(self) -> None:
        if not self.tables:
            return
        keys = np.concatenate(self.keys)
        table = pa.concat_tables(self.tables)
        if len(keys) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[:self.size])
            keys, table = keys[keep], table.take(pa.array(keep))
        if len(keys) == self.size:
            self.bound = float(keys.max())
        self.keys, self.tables, self.held = [keys], [table.combine_chunks()], len(keys)

    def rows(self) -> pa.Table | None:
        self._trim()
        return self.tables[0] if self.tables else None


@dataclass
class DumpStats:
    dump: Dump
    namespaces: list[NamespaceStats]
    sample: int
    metadata_sample: int
    map_vectors: np.ndarray  # (n, dim) float32: the PCA sample of the primary vectors
    map_namespaces: np.ndarray  # (n,) int: index into ``namespaces``


def gather(dump: Dump, *, sample: int = DEFAULT_SAMPLE, progress: bool | None = None) -> DumpStats:
    """The one streaming pass (plus, only where there are duplicates, a pass over their namespace's ids)."""
    m = dump.manifest
    rng = np.random.default_rng(SEED)
    metadata_sample = min(sample, METADATA_SAMPLE_ROWS)
    primary = m.primary
    columns = [ID, METADATA, *(v.column for v in m.vectors)]
    map_sample = _BottomK(sample, rng)
    namespaces = []
    with RowProgress("report", m.total_rows or None, progress) as bar:
        for index, ns in enumerate(m.namespaces):
            files = m.files_of(ns.name)
            stats = NamespaceStats(ns.name, ns.path, ns.rows, files=len(files), bytes=sum(f.bytes for f in files))
            stats.vectors = {v.column: VectorStats(v.column) for v in m.vectors}
            metadata = _BottomK(metadata_sample, rng)
            for batch in dump.batches(ns.name, columns=columns):
                stats.rows_read += batch.num_rows
                for column, vector_stats in stats.vectors.items():
                    vector_stats.add(batch.column(column))
                table = pa.Table.from_batches([batch])
                metadata.offer(table.select([METADATA]))
                if primary is not None:
                    map_sample.offer(table.select([primary.column]).append_column(
                        "namespace", pa.array(np.full(batch.num_rows, index, np.int32))))
                bar.advance(batch.num_rows)
            _metadata_stats(stats, metadata.rows())
            _name_duplicates(dump, stats)
            namespaces.append(stats)
    picked = map_sample.rows()
    if picked is None or primary is None:
        vectors, owners = np.empty((0, primary.dimension if primary else 0), np.float32), np.empty(0, np.int32)
    else:
        column = picked.column(primary.column).combine_chunks()
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        vectors = vectors_numpy(column)[valid]
        owners = picked.column("namespace").to_numpy()[valid]
    return DumpStats(dump, namespaces, sample, metadata_sample, vectors, owners)


def _metadata_stats(stats: NamespaceStats, sampled: pa.Table | None) -> None:
    keys = _KeyStats()
    if sampled is not None:
        column = sampled.column(METADATA).combine_chunks()
        stats.metadata_null_rows = column.null_count
        keys.add(column)
    stats.metadata = keys.result()


def _name_duplicates(dump: Dump, stats: NamespaceStats) -> None:
    wanted = {column: rows for column, s in stats.vectors.items() if len(rows := s.finish())}
    if not wanted:
        return
    every = np.unique(np.concatenate(list(wanted.values())))
    found = np.empty(len(every), dtype=object)
    offset = 0
    # Only the id column: every file's SHA-256 was checked by the first pass, and this one only names the
    # rows it found (a column read instead of reading and hashing every file again; row counts and
    # schemas are still checked)
    for batch in dump.batches(stats.name, columns=[ID], verify=False):
        lo, hi = np.searchsorted(every, [offset, offset + batch.num_rows])
        if hi > lo:
            found[lo:hi] = batch.column(0).take(pa.array(every[lo:hi] - offset)).to_numpy(zero_copy_only=False)
        offset += batch.num_rows
    for column, rows in wanted.items():
        stats.vectors[column].name_examples(found[np.searchsorted(every, rows)])


# --- verify's JSON --------------------------------------------------------------------------------

_VERIFY_KEYS = ("source", "target", "passed", "problems", "namespaces", "search")
_SEARCH_FIGURES = ("k", "queries", "overlap", "identical", "recall_source", "recall_target", "worst_overlap",
                   "worst_recall_target")
# Per-query figures (older verify JSON lacks them): the list's key, its mean's and its worst query's keys,
# and its name in the plot
_PER_QUERY = {"overlap_per_query": ("overlap", "worst_overlap", "overlap@{k}"),
              "recall_target_per_query": ("recall_target", "worst_recall_target", "recall@{k} of the target")}
_NAMESPACE_COUNTS = ("rows_source", "rows_target", "missing", "extra", "duplicates_target", "compared",
                     "vectors_differ", "metadata_differ", "documents_differ")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_verify_json(verify_json: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The object ``vecfmt verify --json`` printed (a path to it, or the dict itself), checked to be one."""
    where = "the verify report" if isinstance(verify_json, dict) else str(verify_json)
    if isinstance(verify_json, dict):
        data: Any = verify_json
    else:
        text = Path(verify_json).read_text(encoding="utf-8")  # a missing file is an OSError: one line too
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReportError(f"{where} is not JSON ({exc}): give the output of `vecfmt verify --json`") from None
    if not isinstance(data, dict):
        raise ReportError(f"{where} is not the output of `vecfmt verify --json` (not a JSON object)")
    missing = [key for key in _VERIFY_KEYS if key not in data]
    search = data.get("search")
    if not missing and search is not None:
        wanted = (*_SEARCH_FIGURES, "metric")
        missing = [f"search.{key}" for key in wanted if not isinstance(search, dict) or key not in search]
    namespaces = data.get("namespaces")
    what = None
    if missing:
        what = f"it has no {missing[0]!r}"
    elif not isinstance(data["passed"], bool) or not isinstance(data["problems"], list):
        what = "its 'passed' or 'problems' is not what verify writes"
    elif not isinstance(namespaces, dict) or not all(
            isinstance(ns, dict) and all(_number(ns.get(key, 0)) for key in _NAMESPACE_COUNTS)
            for ns in namespaces.values()):
        what = "its 'namespaces' are not what verify writes"
    elif search is not None and not (all(_number(search[key]) for key in _SEARCH_FIGURES)
                                     and isinstance(search["metric"], str)):
        what = "its search figures are not numbers"
    elif not all(value is None or _number(value) for value in
                 (data.get("sample"), data.get("min_recall"), data.get("min_overlap"))):
        what = "its 'sample', 'min_recall' or 'min_overlap' is not a number"
    elif search is not None:
        what = _per_query_problem(search)
    if what:
        raise ReportError(f"{where} is not the output of `vecfmt verify --json`: {what}")
    return data


def _per_query_problem(search: dict[str, Any]) -> str | None:
    """What is wrong with the per-query lists a verify JSON holds (each is optional), or None."""
    for key in _PER_QUERY:
        values = search.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not all(_number(v) and 0 <= v <= 1 for v in values):
            return f"its 'search.{key}' is not a list of figures between 0 and 1"
        if len(values) != search["queries"]:
            return f"its 'search.{key}' has {len(values):,} figures for {search['queries']:,} queries"
    return None


# --- the page -------------------------------------------------------------------------------------


def build_report(
    dump_uri: str,
    *,
    verify_json: str | Path | dict[str, Any] | None = None,
    sample: int = DEFAULT_SAMPLE,
    progress: bool | None = None,
) -> str:
    """The report of the dump at ``dump_uri`` as one self-contained HTML page; with ``verify_json``
    (the output of ``vecfmt verify --json``, or its path) the migration's figures too."""
    return _build(dump_uri, verify_json, sample, progress)[0]


def _build(dump_uri: str, verify_json: str | Path | dict[str, Any] | None, sample: int,
           progress: bool | None) -> tuple[str, DumpStats]:
    if sample < 1:
        raise ReportError(f"sample must be at least 1 row, not {sample}")
    verified = None if verify_json is None else load_verify_json(verify_json)  # bad input fails before the pass
    figure = _matplotlib()
    stats = gather(Dump.open(dump_uri), sample=sample, progress=progress)
    return _page(stats, verified, figure), stats


@dataclass
class ReportSummary:
    path: str
    rows: int
    bytes: int  # of the page


def write_report(
    dump_uri: str,
    output: str | Path,
    *,
    verify_json: str | Path | dict[str, Any] | None = None,
    sample: int = DEFAULT_SAMPLE,
    progress: bool | None = None,
) -> ReportSummary:
    """``build_report`` written to the local file ``output``."""
    page, stats = _build(dump_uri, verify_json, sample, progress)
    data = page.encode("utf-8")
    Path(output).write_bytes(data)
    return ReportSummary(str(output), sum(ns.rows_read for ns in stats.namespaces), len(data))


def _matplotlib() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError("the report needs matplotlib: pip install 'vecfmt[quality]'") from None

    def figure(width: float, height: float) -> Any:
        fig = Figure(figsize=(width, height), dpi=100)
        FigureCanvasAgg(fig)
        return fig

    return figure


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _plain(text: str) -> str:
    """Text (user data included) for a matplotlib label: a ``$`` would start mathtext (and fail on a stray one)."""
    return text.replace("$", r"\$")


def _label(namespace: str) -> str:
    return _plain(repr(namespace) if namespace else "(default)")


def _ns(name: str) -> str:
    return repr(name) if name else "'' (default)"


def _n(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.4g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, css: str = "") -> str:
    """Every cell escaped: ids, namespace names and metadata keys are user data."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{_esc(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _png(fig: Any, alt: str, *, element_id: str | None = None) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    named = f' id="{_esc(element_id)}"' if element_id else ""
    return f'<figure{named}><img alt="{_esc(alt)}" src="data:image/png;base64,{data}"></figure>'


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f5f5f5} td{font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.mono td{font-family:monospace;font-size:12px}
.ok{color:#1a7f37} .warn{color:#9a6700} .bad{color:#cf222e;font-weight:bold} .note{color:#555}
figure{margin:8px 0} img{max-width:100%} code{font-size:13px}
ul.findings li{margin:2px 0}
"""
# No network at view time, whatever the data holds: only inline styles and data: images may load.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _page(stats: DumpStats, verified: dict[str, Any] | None, figure: Any) -> str:
    dump, m = stats.dump, stats.dump.manifest
    sections = [
        _overview(dump, m),
        _findings(stats, verified),
        _namespaces_section(stats, m),
        _norms_section(stats, m, figure),
        _duplicates_section(stats, m),
        _metadata_section(stats),
        _map_section(stats, m, figure),
        _verify_section(verified, figure) if verified is not None else "",
        _files_section(m),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>vecfmt report: {_esc(dump.uri)}</title><style>{_CSS}</style></head><body>"
            + "".join(sections) +
            f'<p class="note">Made by vecfmt {_esc(__version__)}.</p></body></html>\n')


def _overview(dump: Dump, m: Manifest) -> str:
    model = m.embedding_model
    source = m.source
    rows = [
        ("dump", dump.uri),
        ("format version", m.format_version),
        ("created", m.created_at),
        ("producer", " ".join(str(v) for v in m.producer.values()) if m.producer else "not recorded"),
        ("source", f"{source.kind} {source.name or ''}".strip() if source else "not recorded"),
        ("embedding model", (f"{model.name or 'unnamed'} ({model.provider or 'provider not recorded'})"
                             + (f", {model.dimension} dims" if model.dimension else "")) if model else "not recorded"),
        ("rows", f"{m.total_rows:,} in {len(m.namespaces):,} namespaces"),
        ("files", f"{len(m.files):,}, {sum(f.bytes for f in m.files):,} bytes"),
        ("sparse vectors", "yes (not analysed here)" if m.sparse_values else "no"),
        ("documents", "yes" if m.document else "no"),
    ]
    vectors = _table(["vector", "column", "dimensions", "metric", "type"],
                     [(v.name, v.column, v.dimension, v.metric, v.dtype) for v in m.vectors])
    return (f"<h1>vecfmt report</h1><p class=\"note\">{_esc(dump.uri)}</p>"
            + _table(["", ""], rows) + "<h2>Vectors</h2>" + vectors)


def _findings(stats: DumpStats, verified: dict[str, Any] | None) -> str:
    m = stats.dump.manifest
    items = [("ok", f"Every one of the {len(m.files):,} files matched the size and SHA-256 the manifest records "
                    f"while this report read it, and the {sum(n.rows_read for n in stats.namespaces):,} rows read "
                    "match the manifest's counts.")]
    for ns in stats.namespaces:
        for column, v in ns.vectors.items():
            where = f"namespace {_ns(ns.name)}, column {column!r}"
            if v.non_finite:
                items.append(("bad", f"{where}: {v.non_finite:,} vectors hold NaN or infinity (run vecfmt validate)."))
            if v.duplicate_rows:
                items.append(("warn", f"{where}: {v.duplicate_rows:,} rows repeat an earlier row's vector exactly "
                                      f"({v.duplicated_vectors:,} distinct vectors occur more than once)."))
            if v.near_zero:
                items.append(("warn", f"{where}: {v.near_zero:,} near-zero vectors (norm below {NEAR_ZERO_NORM:g}), "
                                      f"{v.zero:,} of them all zeros."))
    if len(items) == 1:
        items.append(("ok", "No duplicate, near-zero or non-finite vectors."))
    if verified is not None:
        if verified["passed"]:
            items.append(("ok", f"vecfmt verify passed: {verified['source']} -> {verified['target']}."))
        else:
            items.append(("bad", f"vecfmt verify failed: {verified['source']} -> {verified['target']}: "
                                 f"{len(verified['problems'])} problems (listed below)."))
    body = "".join(f'<li class="{css}">{_esc(text)}</li>' for css, text in items)
    return f'<h2>Findings</h2><ul class="findings">{body}</ul>'


def _namespaces_section(stats: DumpStats, m: Manifest) -> str:
    rows = []
    for ns in stats.namespaces:
        for column, v in ns.vectors.items():
            norms = v.norms.astype(np.float64)
            low, mean, high = (f"{f(norms):.6g}" if len(norms) else "-" for f in (np.min, np.mean, np.max))
            rows.append((_ns(ns.name), ns.path, _n(ns.rows_manifest), _n(ns.files), _n(ns.bytes), column,
                         _n(v.vectors), _n(v.nulls), low, mean, high, _n(v.near_zero), _n(v.duplicate_rows),
                         _n(v.non_finite)))
    return "<h2>Namespaces</h2>" + _table(
        ["namespace", "folder", "rows", "files", "bytes", "vector column", "vectors", "null", "norm min", "norm mean",
         "norm max", "near-zero", "duplicate rows", "NaN/inf"], rows)


def _groups(stats: DumpStats) -> tuple[list[str], np.ndarray]:
    """Plot labels: the first LEGEND_NAMESPACES namespaces by name, the rest as one "other"; and the label
    index of each namespace."""
    labels = [_label(ns.name) for ns in stats.namespaces[:LEGEND_NAMESPACES]]
    index = np.minimum(np.arange(len(stats.namespaces)), LEGEND_NAMESPACES)
    if len(stats.namespaces) > LEGEND_NAMESPACES:
        labels.append(f"{len(stats.namespaces) - LEGEND_NAMESPACES} other namespaces")
    return labels, index


def _norms_section(stats: DumpStats, m: Manifest, figure: Any) -> str:
    labels, index = _groups(stats)
    parts = ["<h2>Vector norms</h2><p>The L2 norm of every vector (all rows, not a sample), stacked by namespace. "
             "Normalised embeddings sit in one bar at 1; a second mode or a long tail often means vectors from "
             "another model or a broken batch.</p>"]
    for spec in m.vectors:
        norms = [ns.vectors[spec.column].norms.astype(np.float64) for ns in stats.namespaces]
        per_label = [np.concatenate([n for n, i in zip(norms, index, strict=True) if i == label])
                     for label in range(len(labels))]
        total = sum(len(p) for p in per_label)
        if not total:
            parts.append(f"<p>{_esc(spec.column)}: no finite vectors.</p>")
            continue
        fig = figure(8, 3.6)
        axes = fig.add_subplot()
        axes.hist(per_label, bins=HISTOGRAM_BINS, range=_norm_range(np.concatenate(per_label)), stacked=True,
                  label=labels)
        axes.set_xlabel("L2 norm")
        axes.set_ylabel("vectors")
        axes.set_title(_plain(f"norms of {spec.column!r} ({total:,} vectors, {spec.dimension} dims)"), fontsize=10)
        if len(labels) > 1:
            axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
        parts.append(_png(fig, f"histogram of the norms of {spec.column}"))
    return "".join(parts)


def _norm_range(norms: np.ndarray) -> tuple[float, float]:
    """The histogram's x range: the norms' own, widened to at least 0.2% of their size, so that normalised
    vectors (norms 1 +- 1e-7) show as one bar at 1 instead of float32 rounding spread across the axis."""
    low, high = float(norms.min()), float(norms.max())
    half = max((high - low) / 2, 1e-3 * max(abs(high), 1e-12))
    middle = (low + high) / 2
    return middle - half * 1.02, middle + half * 1.02


def _duplicates_section(stats: DumpStats, m: Manifest) -> str:
    parts = ["<h2>Duplicate and near-zero vectors</h2>",
             "<p>Duplicates are found among all rows of a namespace (not a sample): each vector's float32 bits are "
             "hashed to 64 bits with NumPy (read as 64-bit words, each mixed as in MurmurHash3's finaliser and "
             "multiplied by an odd random weight for its position, summed modulo 2<sup>64</sup>) and "
             "the hashes compared with <code>np.unique</code>. Equal hashes mean bit-identical vectors up to a "
             "collision chance of about n<sup>2</sup>/2<sup>65</sup> (3&times;10<sup>-8</sup> for a million "
             "rows); 0.0 and -0.0 count as different. Rows without a (named) vector are left out. A near-zero "
             f"vector has an L2 norm below {NEAR_ZERO_NORM:g}: search by cosine cannot rank it.</p>"]
    rows = [(_ns(ns.name), column, _n(v.vectors), _n(v.duplicate_rows), _n(v.duplicated_vectors), _n(v.zero),
             _n(v.near_zero)) for ns in stats.namespaces for column, v in ns.vectors.items()]
    parts.append(_table(["namespace", "vector column", "vectors", "duplicate rows", "distinct vectors repeated",
                         "all-zero", "near-zero"], rows))
    examples = [(_ns(ns.name), column, ", ".join(group)) for ns in stats.namespaces
                for column, v in ns.vectors.items() for group in v.duplicate_examples]
    if examples:
        parts.append(f"<p>The ids of the (at most {DUPLICATE_GROUPS_SHOWN}) most repeated vectors per "
                     "namespace and column:</p>")
        parts.append(_table(["namespace", "vector column", "ids of rows with the same vector"], examples, css="mono"))
    return "".join(parts)


def _metadata_section(stats: DumpStats) -> str:
    parts = [f"<h2>Metadata keys</h2><p>Top-level keys of each row's metadata, from a uniform random sample of "
             f"up to {stats.metadata_sample:,} rows per namespace (seed {SEED}): the JSON types seen and the share "
             "of sampled rows where the key holds a value other than null.</p>"]
    for ns in stats.namespaces:
        sampled = ns.metadata["sampled_rows"]
        keys = ns.metadata["keys"]
        parts.append(f"<h3>namespace {_esc(_ns(ns.name))}: {sampled:,} rows sampled, "
                     f"{ns.metadata_null_rows:,} without metadata</h3>")
        if keys:
            rows = [(key, ", ".join(info["types"]), f"{info['fill_rate']:.1%}") for key, info in keys.items()]
            parts.append(_table(["key", "JSON types", "fill rate"], rows))
        else:
            parts.append("<p>No metadata keys in the sample.</p>")
    return "".join(parts)


def pca_2d(vectors: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The sample projected on its first two principal components (NumPy SVD, in float64, of the centred
    rows, scaled to unit length first for cosine, which ignores length), and the share of the variance
    each explains."""
    x = vectors[np.isfinite(vectors).all(axis=1)].astype(np.float64)  # the one copy: the rest is in place
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        np.divide(x, norms, out=x, where=norms > 0)
    if len(x):
        x -= x.mean(axis=0)
    coords = np.zeros((len(x), 2))
    explained = np.zeros(2)
    if len(x) and x.shape[1]:
        if len(x) >= x.shape[1]:
            # The SVD of the (dim, dim) Gram matrix has the same axes, and the squares of the sample's
            # singular values: 6.6x faster than the SVD of a 10,000 x 768 sample, side by side
            _, variance, components = np.linalg.svd(x.T @ x, hermitian=True)
        else:
            _, singular, components = np.linalg.svd(x, full_matrices=False)
            variance = singular ** 2
        used = min(2, len(components))
        coords[:, :used] = x @ components[:used].T
        if variance.sum() > 0:
            explained[:used] = variance[:used] / variance.sum()
    return coords, explained


def _map_section(stats: DumpStats, m: Manifest, figure: Any) -> str:
    spec: VectorSpec | None = m.primary
    head = "<h2>2-D map of a sample</h2>"
    if spec is None or not len(stats.map_vectors):
        return head + "<p>No dense vectors to map.</p>"
    finite = np.isfinite(stats.map_vectors).all(axis=1)
    coords, explained = pca_2d(stats.map_vectors, spec.metric)
    owners = stats.map_namespaces[finite]
    labels, index = _groups(stats)
    fig = figure(8, 6)
    axes = fig.add_subplot()
    size = 4 if len(coords) > 2_000 else 10
    for label, name in enumerate(labels):
        chosen = index[owners] == label
        if chosen.any():
            axes.scatter(coords[chosen, 0], coords[chosen, 1], s=size, alpha=0.6, linewidths=0, label=name)
    axes.set_xlabel(f"PC1 ({explained[0]:.1%} of the variance)")
    axes.set_ylabel(f"PC2 ({explained[1]:.1%} of the variance)")
    axes.set_title(_plain(f"{len(coords):,} vectors of {spec.column!r}"), fontsize=10)
    if len(labels) > 1:
        axes.legend(fontsize=8, markerscale=3)
    axes.grid(alpha=0.3)
    cosine = spec.metric == "cosine"
    scaled = " (each scaled to unit length first, as the cosine metric ignores length)" if cosine else ""
    return (head + f"<p>{len(coords):,} rows drawn uniformly at random from the whole dump (at most "
            f"{stats.sample:,}, seed {SEED}), vectors of column {_esc(repr(spec.column))}{scaled}, projected on "
            f"their first two principal components (NumPy SVD of the centred sample, through its Gram matrix "
            f"when it has more rows than dimensions). Together they explain "
            f"{explained.sum():.1%} of the sample's variance. Clusters by namespace or a far-off group are worth a "
            "look; near-identical points are expected for duplicates.</p>" + _png(fig, "PCA map of a sample"))


def _verify_section(verified: dict[str, Any], figure: Any) -> str:
    state = '<span class="ok">passed</span>' if verified["passed"] else '<span class="bad">failed</span>'
    compared = "all" if verified.get("sample") is None else f"a sample of {verified['sample']:,}"
    parts = [f"<h2>Migration check (vecfmt verify)</h2><p>{_esc(verified['source'])} &rarr; "
             f"{_esc(verified['target'])}: {state}; rows compared exactly per namespace: {_esc(compared)}.</p>"]
    if verified["problems"]:
        parts.append('<ul class="findings">' + "".join(f'<li class="bad">{_esc(p)}</li>' for p in verified["problems"])
                     + "</ul>")
    rows = []
    for name, ns in verified["namespaces"].items():
        rows.append((_ns(name), *(_n(ns.get(key, 0)) for key in (
            "rows_source", "rows_target", "missing", "extra", "duplicates_target", "compared", "vectors_differ",
            "metadata_differ", "documents_differ")), "yes" if ns.get("complete") else "no"))
    parts.append(_table(["namespace", "rows in source", "rows in target", "missing", "extra", "duplicated in target",
                         "compared exactly", "vectors differ", "metadata differs", "documents differ", "complete"],
                        rows))
    search = verified["search"]
    if search is None:
        parts.append("<p>Search quality was not measured (verify ran without queries).</p>")
        return "".join(parts)
    k = search["k"]
    per_query = {key: np.asarray(search[key], np.float64) for key in _PER_QUERY if search.get(key)}
    labels = {"overlap": f"overlap@{k} (share of the source's top {k} the target also returned)",
              "recall_target": f"recall@{k} of the target against the exact answer"}
    figures: list[tuple[str, ...]] = []
    for key, (mean_key, worst_key, _) in _PER_QUERY.items():
        values = per_query.get(key)
        spread: tuple[str, ...] = ("-", "-", "-") if values is None else (
            f"{np.percentile(values, 10):.4f}", f"{np.median(values):.4f}",
            f"{int(np.count_nonzero(values == 1.0)):,} ({np.mean(values == 1.0):.1%})")
        figures.append((labels[mean_key], f"{search[mean_key]:.4f}", f"{search[worst_key]:.4f}", *spread))
    figures.append((f"recall@{k} of the source against the exact answer", f"{search['recall_source']:.4f}", "-",
                    "-", "-", "-"))
    figures.append((f"queries with identical top-{k} sets", f"{search['identical']:.1%}", "-", "-", "-", "-"))
    headers = ["figure", "mean over the queries", "worst query", "10th percentile", "median", "queries at 1.0"]
    if not per_query:  # an older verify's JSON: only the aggregates
        headers, figures = headers[:3], [row[:3] for row in figures]
    parts.append(_table(headers, figures))
    parts.append(f"<p>{search['queries']:,} queries, k = {k}, metric {_esc(search['metric'])}"
                 + (f"; min recall asked: {verified['min_recall']:g}" if verified.get("min_recall") is not None
                    else "")
                 + (f"; min overlap asked: {verified['min_overlap']:g}" if verified.get("min_overlap") is not None
                    else "")
                 + ".</p>")
    if per_query:
        parts.append(_distribution(search, per_query, figure))
    else:
        parts.append('<p class="note">No distribution was recorded: this verify JSON holds the mean and the worst '
                     "query of each figure but not each query's (an older vecfmt wrote it), so the figure "
                     "below shows the range between the worst query and the mean. Run <code>vecfmt verify "
                     "--json</code> again for the histogram of the queries.</p>")
        parts.append(_aggregate_bars(search, figure))
    return "".join(parts)


def _distribution(search: dict[str, Any], per_query: dict[str, np.ndarray], figure: Any) -> str:
    """A histogram per figure of verify's per-query values, the mean and the worst query marked. Each
    query's figure is a count of ids over k, so the bins are centred on the multiples of 1/k."""
    k = search["k"]
    steps = max(1, min(int(k), HISTOGRAM_BINS))  # k comes from a file: never a division by zero
    edges = (np.arange(steps + 2) - 0.5) / steps
    fig = figure(8, 3.2)
    panels = fig.subplots(1, len(per_query), squeeze=False)[0]
    for axes, (key, values) in zip(panels, per_query.items(), strict=True):
        mean_key, worst_key, name = _PER_QUERY[key]
        name = name.format(k=k)
        axes.hist(values, bins=edges, color="#4c72b0", edgecolor="white")
        axes.axvline(search[mean_key], color="#222", linewidth=1.5, label=f"mean {search[mean_key]:.3f}")
        axes.axvline(search[worst_key], color="#c44e52", linestyle="--", linewidth=1.5,
                     label=f"worst {search[worst_key]:.3f}")
        axes.set_xlim(edges[0], edges[-1])
        axes.set_xlabel(f"one query's figure (share of the top {k})")
        axes.set_ylabel("queries")
        axes.set_title(f"{name}, {len(values):,} queries", fontsize=10)
        axes.legend(fontsize=8, loc="upper left")
        axes.grid(alpha=0.3, axis="y")
    intro = (f"<p>Each query's figure, as verify measured it: how many queries found all of the top {k}, and how "
             "far the others fell. A few queries far below the mean may point at one region of the data (or one "
             "namespace) that the target searches badly; a mean lowered evenly across the queries is more like "
             "an approximate index's usual loss.</p>")
    return intro + _png(fig, "verify search quality: distribution over the queries", element_id="verify-distribution")


def _aggregate_bars(search: dict[str, Any], figure: Any) -> str:
    """The mean of each search figure as a bar, the worst query marked: all an older verify JSON holds."""
    k = search["k"]
    fig = figure(8, 3.2)
    axes = fig.add_subplot()
    names = [f"overlap@{k}", f"recall@{k} target", f"recall@{k} source", "identical top-k"]
    means = [search["overlap"], search["recall_target"], search["recall_source"], search["identical"]]
    worst = [search["worst_overlap"], search["worst_recall_target"], np.nan, np.nan]
    positions = np.arange(len(names))
    axes.barh(positions, means, color="#4c72b0", label="mean")
    axes.scatter(worst, positions, color="#c44e52", marker="|", s=400, linewidths=3, label="worst query", zorder=3)
    for y, value in zip(positions, means, strict=True):
        inside = value > 0.15  # a short bar has no room for its label: it goes to the right, in black
        axes.annotate(f"{value:.3f}", (value, y), xytext=(-36 if inside else 4, -4), textcoords="offset points",
                      color="white" if inside else "black", fontsize=9)
    axes.set_yticks(positions, names)
    axes.set_xlim(0, 1.02)
    axes.invert_yaxis()
    axes.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    axes.grid(alpha=0.3, axis="x")
    return _png(fig, "verify search quality: mean and worst query")


def _files_section(m: Manifest) -> str:
    rows = [(f.path, _ns(f.namespace), _n(f.rows), _n(f.bytes), f.sha256) for f in m.files]
    return ("<h2>Files</h2><p>As the manifest lists them; each was checked against its size and SHA-256 while "
            "this report read it.</p>" + _table(["path", "namespace", "rows", "bytes", "SHA-256"], rows, css="mono"))
